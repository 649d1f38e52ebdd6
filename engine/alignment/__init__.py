"""Direct reward finetuning of the video model (VIST3A method §5).

Modules: ``lora`` (LoRA on the Wan transformer, EMA, adapter folders), ``rollout`` (truncated
differentiable sampler rollouts), ``scorers`` (image-text quality scorers: DFN-CLIP, HPSv2.1,
PickScore), ``lpips`` (the LPIPS distance), ``rewards`` (the consistency reward and the presets),
``train`` (the trainer) and ``cli`` (``python -m engine align train``).
"""
