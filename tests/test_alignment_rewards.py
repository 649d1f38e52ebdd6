"""Reward presets: their formulas and weights (with stand-in scorers of known output), missing weights."""

from __future__ import annotations

import pytest
import torch

from engine.alignment.rewards import (
    ConsistencyReward,
    PaperReward,
    ReleasedReward,
    RewardModelSources,
    RewardSettings,
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


# ------------------------------------------------------------------ terms left out by an explicit choice
def test_l1_consistency_and_no_hps_give_the_reduced_formula_and_log_only_active_terms():
    clip = MeanScorer(1.0)
    reward = PaperReward(clip, None, ConsistencyReward(), hps_weight=0.0)
    decoded, rendered = _images(0.6), _images(0.2)
    out = reward(decoded, rendered, "a red chair")
    q_decoded, q_rendered, consistency = 0.6 - 1, 0.2 - 1, -abs(0.6 - 0.2)
    expected = q_decoded / 16 + q_rendered / 16 + 0.05 * consistency
    assert float(out.reward.detach()) == pytest.approx(expected, abs=1e-6)
    assert list(out.terms) == reward.term_names()
    assert set(out.terms) == {
        "q_decoded", "q_rendered", "decoded_clip", "rendered_clip", "consistency", "consistency_l1", "reward"
    }  # fmt: skip
    assert out.terms["consistency_l1"] == pytest.approx(0.4, abs=1e-6)
    described = reward.describe()
    assert described["consistency"] == "l1" and described["lpips_weight"] == 0.0 and described["hps_weight"] == 0.0
    assert described["scorers"] == {"clip": "MeanScorer"} and described["terms"] == list(out.terms)
    assert "LPIPS left out" in reward.summary() and "HPSv2.1 left out" in reward.summary()
    out.reward.backward()
    n = decoded[0].numel()
    assert torch.allclose(decoded.grad, torch.full_like(decoded, (1 / 16 - 0.05) / (2 * n)), atol=1e-9)

    with_lpips = PaperReward(MeanScorer(1.0), MeanScorer(0.5), ConsistencyReward(ConstantLPIPS(0.2)), hps_weight=2.0)
    out = with_lpips(decoded, rendered, "x")
    q = lambda v: (v - 1) + 2.0 * (0.5 * v - 1)  # noqa: E731
    expected = (q(0.6) + q(0.2)) / 16 + 0.05 * (-0.4 - 0.25 * 0.2)
    assert float(out.reward.detach()) == pytest.approx(expected, abs=1e-6)
    assert out.terms["consistency_lpips"] == pytest.approx(0.2) and list(out.terms) == with_lpips.term_names()
    assert with_lpips.describe()["consistency"] == "l1+lpips"
    with pytest.raises(ValueError, match="no HPSv2.1 scorer"):
        PaperReward(MeanScorer(1.0), None, ConsistencyReward(), hps_weight=1.0)


def test_released_reward_without_pickscore_is_the_clip_loss_alone():
    reward = ReleasedReward(None, MeanScorer(0.5), pickscore_weight=0.0)
    out = reward(_images(0.5, 1), _images(0.25, 13), "a cat")
    loss = lambda v: 0.25 * (1 - 0.5 * v)  # noqa: E731
    assert float(out.reward.detach()) == pytest.approx(-(loss(0.25) + loss(0.5)), abs=1e-6)
    assert list(out.terms) == reward.term_names() and not any("pickscore" in k for k in out.terms)
    assert reward.describe()["pickscore_weight"] == 0.0 and "PickScore left out" in reward.summary()
    with pytest.raises(ValueError, match="no PickScore scorer"):
        ReleasedReward(None, MeanScorer(0.5))


def test_reward_settings_defaults_other_presets_options_and_resuming():
    assert RewardSettings().resolve() == RewardSettings("paper", "l1+lpips", 1.0, None)
    assert RewardSettings("released").resolve() == RewardSettings("released", None, None, 0.25)
    assert RewardSettings("paper", "l1", 0).resolve() == RewardSettings("paper", "l1", 0.0, None)
    for bad, message in (
        (RewardSettings("released", consistency="l1"), "--consistency belongs to the paper preset"),
        (RewardSettings("released", hps_weight=0), "--hps-weight belongs to the paper preset"),
        (RewardSettings("paper", pickscore_weight=0), "--pickscore-weight belongs to the released preset"),
        (RewardSettings("paper", "lpips"), "unknown consistency 'lpips'"),
        (RewardSettings("paper", hps_weight=-1), "--hps-weight must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            bad.resolve()

    run = RewardSettings.of_run(PaperReward(MeanScorer(1.0), None, ConsistencyReward(), hps_weight=0).describe())
    assert run == RewardSettings("paper", "l1", 0.0, None)
    assert RewardSettings.of_run("paper") == RewardSettings("paper", "l1+lpips", 1.0, None)  # a run from before
    assert RewardSettings.of_run(None) is None
    kept, taken = RewardSettings().for_resume(run)
    assert kept == run and taken == ["preset", "consistency", "hps_weight"]
    assert RewardSettings("paper", "l1", 0.0).for_resume(run) == (run, [])
    with pytest.raises(ValueError, match=r"started with consistency 'l1'.*'l1\+lpips' \(--consistency\)"):
        RewardSettings(consistency="l1+lpips").for_resume(run)
    with pytest.raises(ValueError, match=r"hps weight 0.0.*--hps-weight"):
        RewardSettings(hps_weight=1.0).for_resume(run)


def test_build_reward_loads_only_the_active_terms_and_names_the_way_out(tmp_path, monkeypatch):
    from engine.alignment.scorers import RewardWeightsMissing
    from engine.testing.tiny import build_tiny_clip_scorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    caption = build_tiny_clip_scorer(name="caption-scorer").save_pretrained(tmp_path / "caption_scorer")
    with pytest.raises(RewardWeightsMissing, match=r"--lpips-backbone, --lpips-lin\), or .*--consistency l1"):
        build_reward("paper", RewardModelSources(dfn_clip=str(caption)), hps_weight=0)
    with pytest.raises(RewardWeightsMissing, match=r"xswu/HPSv2.*--hps-weight 0"):
        build_reward("paper", RewardModelSources(dfn_clip=str(caption)), consistency="l1")

    reward = build_reward("paper", RewardModelSources(dfn_clip=str(caption)), consistency="l1", hps_weight=0)
    assert isinstance(reward, PaperReward) and reward.hps is None and reward.consistency.lpips is None
    assert reward.describe()["scorers"] == {"clip": "caption-scorer"}
    out = reward(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), "a red cube on a grey floor")
    assert set(out.terms) == set(reward.term_names()) and "consistency_l1" in out.terms
    assert not {"consistency_lpips", "decoded_hps", "rendered_hps"} & set(out.terms)

    released = build_reward("released", RewardModelSources(dfn_clip=str(caption)), pickscore_weight=0)
    assert isinstance(released, ReleasedReward) and released.pickscore is None

    lpips_files = dict(lpips_backbone=tmp_path / "vgg16.pth", lpips_lin=tmp_path / "vgg.pth")
    for sources, settings, message in (
        (RewardModelSources(dfn_clip=str(caption), **lpips_files), {"consistency": "l1"}, "drop them, or use"),
        (RewardModelSources(dfn_clip=str(caption), hps=str(caption)), {"hps_weight": 0}, "--hps-weight 0 leaves"),
        (RewardModelSources(pickscore=str(caption)), {"consistency": "l1"}, "--pickscore belongs to the released"),
    ):
        with pytest.raises(ValueError, match=message):
            build_reward("paper", sources, **settings)
    with pytest.raises(ValueError, match="--pickscore-weight 0 leaves PickScore out"):
        build_reward("released", RewardModelSources(pickscore=str(caption)), pickscore_weight=0)
    with pytest.raises(ValueError, match="--hps belongs to the paper preset"):
        build_reward("released", RewardModelSources(hps=str(caption)))
