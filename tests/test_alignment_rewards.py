"""Reward presets: their formulas and weights (with stand-in scorers of known output), missing weights."""

from __future__ import annotations

import pytest
import torch

from engine.alignment.rewards import (
    ConsistencyReward,
    PaperReward,
    ReleasedReward,
    RewardModelSources,
    build_reward,
)


class MeanScorer(torch.nn.Module):
    """A stand-in quality scorer: ``gain`` times each image's mean plus ``offset`` (differentiable)."""

    def __init__(self, gain: float, offset: float = 0.0):
        super().__init__()
        self.gain, self.offset = gain, offset
        self.calls: list[tuple[int, list[str]]] = []

    def forward(self, images, prompts):
        self.calls.append((images.shape[0], list(prompts)))
        return self.gain * images.flatten(1).mean(1) + self.offset


class ConstantLPIPS(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, a, b):
        return torch.full((a.shape[0],), self.value) + 0 * (a - b).flatten(1).sum(1)


def _images(value: float, n: int = 2) -> torch.Tensor:
    return torch.full((n, 3, 8, 8), value, requires_grad=True)


def test_paper_reward_is_the_papers_formula():
    clip, hps = MeanScorer(1.0), MeanScorer(0.5, 0.1)
    reward = PaperReward(clip, hps, ConsistencyReward(ConstantLPIPS(0.2)))
    decoded, rendered = _images(0.6), _images(0.2)
    out = reward(decoded, rendered, "a red chair")
    q_decoded = 0.6 + (0.5 * 0.6 + 0.1) - 2
    q_rendered = 0.2 + (0.5 * 0.2 + 0.1) - 2
    consistency = -abs(0.6 - 0.2) - 0.25 * 0.2
    expected = q_decoded / 16 + q_rendered / 16 + 0.05 * consistency
    assert float(out.reward.detach()) == pytest.approx(expected, abs=1e-6)
    assert out.terms["consistency"] == pytest.approx(consistency, abs=1e-6)
    assert out.terms["q_decoded"] == pytest.approx(q_decoded, abs=1e-6)
    assert all(prompts == ["a red chair"] * 2 for _, prompts in clip.calls + hps.calls)
    out.reward.backward()
    # d r / d decoded pixel: (1 + 0.5)/16 per image mean, minus 0.05 times the L1 slope
    n = decoded[0].numel()
    assert torch.allclose(decoded.grad, torch.full_like(decoded, (1.5 / 16 - 0.05) / (2 * n)), atol=1e-9)
    assert torch.allclose(rendered.grad, torch.full_like(rendered, (1.5 / 16 + 0.05) / (2 * n)), atol=1e-9)


def test_paper_reward_uses_two_shared_views():
    reward = PaperReward(MeanScorer(1.0), MeanScorer(1.0), ConsistencyReward(ConstantLPIPS(0.0)))
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        rendered, decoded = reward.select_views(13, generator)
        assert rendered == decoded and len(set(rendered)) == 2 and all(0 <= v < 13 for v in rendered)
        seen.update(rendered)
    assert len(seen) == 13


def test_released_reward_is_the_released_losses():
    pick, clip = MeanScorer(40.0, 2.0), MeanScorer(0.5)
    reward = ReleasedReward(pick, clip)
    decoded, rendered = _images(0.5, 1), _images(0.25, 13)
    out = reward(decoded, rendered, "a cat")

    def loss(value):
        return 0.25 * abs(1 - (40 * value + 2) / 100) + 0.25 * (1 - 0.5 * value)

    assert float(out.reward.detach()) == pytest.approx(-(loss(0.25) + loss(0.5)), abs=1e-6)
    assert out.terms["rendered_pickscore"] == pytest.approx(40 * 0.25 + 2, abs=1e-5)
    assert "consistency" not in out.terms
    views, frames = reward.select_views(13, torch.Generator().manual_seed(0))
    assert views == list(range(13)) and len(frames) == 1


def test_consistency_is_minus_l1_minus_quarter_lpips():
    consistency = ConsistencyReward(ConstantLPIPS(0.4))
    a, b = torch.zeros(3, 3, 4, 4), torch.full((3, 3, 4, 4), 0.3)
    assert torch.allclose(consistency(a, b), torch.full((3,), -0.3 - 0.1))
    with pytest.raises(ValueError, match="differ in shape"):
        consistency(a, b[:2])


def test_bad_images_are_named():
    reward = PaperReward(MeanScorer(1.0), MeanScorer(1.0), ConsistencyReward(ConstantLPIPS(0.0)))
    with pytest.raises(ValueError, match="rendered"):
        reward(_images(0.5), torch.zeros(2, 8, 8), "x")


def test_unknown_preset_and_missing_weights_are_clear_errors(tmp_path, monkeypatch):
    from engine.alignment.scorers import RewardWeightsMissing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown reward preset 'best'"):
        build_reward("best")
    missing = tmp_path / "no-such-dfn"
    with pytest.raises(RewardWeightsMissing, match="LPIPS"):
        build_reward("paper", RewardModelSources(dfn_clip=str(missing), hps=str(missing)))
    lpips_files = RewardModelSources(
        dfn_clip=str(missing),
        hps=str(missing),
        lpips_backbone=tmp_path / "vgg16.pth",
        lpips_lin=tmp_path / "vgg.pth",
    )
    with pytest.raises(RewardWeightsMissing, match="vgg16.pth"):
        build_reward("paper", lpips_files)
    with pytest.raises(RewardWeightsMissing, match="no-such-pick"):
        build_reward("released", RewardModelSources(pickscore=str(tmp_path / "no-such-pick")))
