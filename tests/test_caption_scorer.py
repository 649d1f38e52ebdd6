"""The default model's caption scorer: world tokenizer, contrastive training, export, and loading it
through the reward scorers' ``load_scorer`` like DFN-CLIP."""

from pathlib import Path

import pytest
import torch

from engine.alignment.scorers import CLIPScorer, load_scorer
from engine.teachers.caption import (
    CaptionTrainConfig,
    CaptionTrainer,
    build_world_tokenizer,
    caption_words,
    retrieval_accuracy,
)

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 230), "yellow": (240, 220, 40)}


def _toy_data(views: int = 2, size: int = 32):
    """Frames of one flat colour each (with a little noise) captioned with that colour."""
    generator = torch.Generator().manual_seed(0)
    frames, captions = [], []
    for name, rgb in COLOURS.items():
        for floor in ("grey", "brown"):
            base = torch.tensor(rgb, dtype=torch.float32).view(1, 1, 1, 3).expand(views, size, size, 3)
            noise = torch.randint(-10, 10, (views, size, size, 3), generator=generator)
            frames.append((base + noise).clamp(0, 255).to(torch.uint8))
            captions.append(f"a {name} cube on a {floor} floor")
    return torch.stack(frames), captions


def test_world_tokenizer_spells_caption_words_whole(tmp_path):
    captions = ["a red cube to the left of a blue sphere on a grey floor under a sunset sky"]
    tokenizer = build_world_tokenizer(tmp_path, caption_words(captions))
    ids = tokenizer(captions[0])["input_ids"]
    assert len(ids) == len(captions[0].split()) + 2  # one token per word + start/end
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == captions[0]
    assert len(tokenizer("a zebra")["input_ids"]) > 4  # unknown words are spelled by letters, not dropped


def test_training_exports_a_scorer_that_load_scorer_accepts(tmp_path):
    frames, captions = _toy_data()
    config = CaptionTrainConfig(
        data_dir=str(tmp_path),
        steps=40,
        batch_size=8,
        lr=2e-3,
        warmup_steps=2,
        hidden=32,
        layers=1,
        image_size=32,
        eval_every=40,
        save_every=20,
        retrieval_pool=8,
    )
    out = tmp_path / "run"
    out.mkdir()
    trainer = CaptionTrainer(config, out, data=(frames, captions), heldout=(frames, captions))
    trainer.train(progress=False)
    import json

    losses = [json.loads(line)["loss"] for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert (out / "loss_curve.png").is_file()
    evaluation = json.loads((out / "eval_log.jsonl").read_text().splitlines()[-1])
    assert evaluation["top1"] >= 0.5  # colours are learnable: chance is 1/8

    folder = trainer.export(tmp_path / "caption_scorer")
    scorer = load_scorer("dfn-clip", str(folder))  # the DFN-CLIP slot of 'align train'
    assert isinstance(scorer, CLIPScorer)
    images = (frames[:, 0].permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    scores = scorer(images, captions)
    assert scores.shape == (len(captions),) and bool(((scores >= -1) & (scores <= 1)).all())
    scores.sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    # matching captions score higher than swapped ones on average
    swapped = captions[2:] + captions[:2]
    assert float(scorer(images.detach(), captions).mean()) > float(scorer(images.detach(), swapped).mean())

    resumed = CaptionTrainer(config, out, data=(frames, captions), heldout=(frames, captions))
    assert resumed.resume() and resumed.step == 40


def test_load_caption_scorer_names_a_wrong_folder(tmp_path):
    with pytest.raises(ValueError, match="caption_scorer.json"):
        CLIPScorer.from_pretrained(tmp_path)


def test_retrieval_accuracy_counts_pools():
    class Exact:
        def image_features(self, images):
            return torch.nn.functional.one_hot(torch.arange(len(images)), len(images)).float()

        def text_features(self, texts):
            return torch.nn.functional.one_hot(torch.arange(len(texts)), len(texts)).float()

    frames = torch.zeros(10, 4, 4, 3, dtype=torch.uint8)
    result = retrieval_accuracy(Exact(), frames, [f"c{i}" for i in range(10)], pool=4)
    assert result == {"top1": 1.0, "pools": 2, "chance": 0.25}
    with pytest.raises(ValueError, match="at least 32"):
        retrieval_accuracy(Exact(), frames, [f"c{i}" for i in range(10)], pool=32)


def test_committed_caption_scorer_retrieves_held_out_captions():
    folder = ROOT / "models" / "default" / "caption_scorer"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("the caption scorer is not trained yet")
    from engine.teachers.caption import _seeds, render_caption_sample

    scorer = CLIPScorer.from_pretrained(folder)
    samples = [render_caption_sample(seed, views=1) for seed in _seeds("heldout", 32)]
    frames = torch.stack([f[0] for f, _ in samples])
    result = retrieval_accuracy(scorer, frames, [c for _, c in samples])
    assert result["top1"] >= 0.6, result  # chance is 1/32; the benchmark prints the full figure
