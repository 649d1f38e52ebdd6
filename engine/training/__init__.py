"""What the trainers share (stitched-decoder finetuning, reward finetuning, the default model's trainers).

- ``distributed``: data-parallel runs under torchrun / accelerate launch: ranks, data split, DDP, FSDP;
- ``checkpoints``: a training run's folder: JSONL log truncation on resume, ``checkpoints/step_<n>/``
  folders, RNG state.
"""
