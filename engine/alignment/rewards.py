"""Rewards on a rollout's result: quality of the decoded frames and of the 3D renders, and consistency.

The final latent z0 is decoded two ways (method.md §5): (a) the video VAE's decoder gives frames, (b)
the stitched 3D decoder gives Gaussians and cameras, and the Gaussians are rendered (differentiable
rasterizer) at the decoder's own predicted cameras. A reward module receives both image sets, at the
3D network's resolution, and the prompt:

* ``PaperReward`` (preset ``paper``): r = Q(decoded)/16 + Q(rendered)/16 + 0.05·C on 2 sampled views,
  with Q(I, c) = CLIP(I, c) + HPSv2.1(I, c) − 2 (CLIP = DFN-CLIP; both cosine similarities, so each of
  the two terms is minus a ``1 − cos`` loss) and the consistency C = −L1(decoded, rendered) −
  0.25·LPIPS(decoded, rendered).
* ``ReleasedReward`` (preset ``released``, the released training code): minus the sum of the quality
  losses of all renders (mean) and of one decoded frame, each loss being
  0.25·|1 − PickScore/100| + 0.25·(1 − cos DFN-CLIP); no consistency term.

Scores of several images are averaged per term. Every scorer is required: a preset whose weights are
missing fails to build (``RewardWeightsMissing``), it never scores zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from engine.alignment.scorers import QualityScorer

PRESETS = ("paper", "released")


@dataclass
class RewardOutput:
    """The reward (scalar tensor with graph) and its terms as floats for the log."""

    reward: Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3, H, W) images in [0, 1], got {getattr(images, 'shape', images)}")


class ConsistencyReward(nn.Module):
    """C = −L1(decoded, rendered) − lpips_weight · LPIPS(decoded, rendered), per image pair (N,)."""

    def __init__(self, lpips: nn.Module, lpips_weight: float = 0.25):
        super().__init__()
        self.lpips = lpips
        self.lpips_weight = float(lpips_weight)

    def forward(self, decoded: Tensor, rendered: Tensor) -> Tensor:
        _check_images("decoded", decoded)
        _check_images("rendered", rendered)
        if decoded.shape != rendered.shape:
            raise ValueError(f"decoded {tuple(decoded.shape)} and rendered {tuple(rendered.shape)} differ in shape")
        l1 = (decoded - rendered).abs().flatten(1).mean(1)
        return -l1 - self.lpips_weight * self.lpips(decoded, rendered).float()


class SceneReward(nn.Module):
    """Interface: which views to use, and the reward of decoded frames and renders of those views."""

    name = "reward"

    def select_views(self, num_views: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
        """(views to render, decoded frames to score) for a video of ``num_views`` frames."""
        raise NotImplementedError

    def forward(self, decoded: Tensor, rendered: Tensor, prompt: str) -> RewardOutput:
        raise NotImplementedError


class PaperReward(SceneReward):
    """The paper's reward (see the module docstring); ``views`` views drawn per rollout (default 2)."""

    name = "paper"

    def __init__(
        self,
        clip: QualityScorer,
        hps: QualityScorer,
        consistency: Optional[ConsistencyReward],
        views: int = 2,
        quality_weight: float = 1.0 / 16.0,
        consistency_weight: float = 0.05,
    ):
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if consistency is None and consistency_weight:
            raise ValueError("the paper reward has a consistency term: give a ConsistencyReward (LPIPS weights)")
        self.clip = clip
        self.hps = hps
        self.consistency = consistency
        self.views = views
        self.quality_weight = float(quality_weight)
        self.consistency_weight = float(consistency_weight)

    def select_views(self, num_views: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
        chosen = sorted(torch.randperm(num_views, generator=generator)[: self.views].tolist())
        return chosen, chosen

    def quality(self, images: Tensor, prompt: str) -> tuple[Tensor, dict[str, float]]:
        """Q = CLIP + HPSv2.1 − 2, averaged over the images."""
        prompts = [prompt] * images.shape[0]
        clip = self.clip(images, prompts).mean()
        hps = self.hps(images, prompts).mean()
        return clip + hps - 2.0, {"clip": float(clip.detach()), "hps": float(hps.detach())}

    def forward(self, decoded: Tensor, rendered: Tensor, prompt: str) -> RewardOutput:
        _check_images("decoded", decoded)
        _check_images("rendered", rendered)
        q_decoded, decoded_terms = self.quality(decoded, prompt)
        q_rendered, rendered_terms = self.quality(rendered, prompt)
        reward = self.quality_weight * (q_decoded + q_rendered)
        terms = {
            "q_decoded": float(q_decoded.detach()),
            "q_rendered": float(q_rendered.detach()),
            **{f"decoded_{k}": v for k, v in decoded_terms.items()},
            **{f"rendered_{k}": v for k, v in rendered_terms.items()},
        }
        if self.consistency is not None and self.consistency_weight:
            consistency = self.consistency(decoded, rendered).mean()
            reward = reward + self.consistency_weight * consistency
            terms["consistency"] = float(consistency.detach())
        terms["reward"] = float(reward.detach())
        return RewardOutput(reward=reward, terms=terms)


class ReleasedReward(SceneReward):
    """The released code's reward (see the module docstring)."""

    name = "released"

    def __init__(
        self,
        pickscore: QualityScorer,
        clip: QualityScorer,
        pickscore_weight: float = 0.25,
        clip_weight: float = 0.25,
        decoded_frames: int = 1,
    ):
        super().__init__()
        self.pickscore = pickscore
        self.clip = clip
        self.pickscore_weight = float(pickscore_weight)
        self.clip_weight = float(clip_weight)
        self.decoded_frames = int(decoded_frames)

    def select_views(self, num_views: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
        decoded = torch.randint(num_views, (self.decoded_frames,), generator=generator).tolist()
        return list(range(num_views)), decoded

    def loss(self, images: Tensor, prompt: str) -> tuple[Tensor, dict[str, float]]:
        """0.25·|1 − PickScore/100| + 0.25·(1 − cos DFN-CLIP), averaged over the images."""
        prompts = [prompt] * images.shape[0]
        pick = self.pickscore(images, prompts) / 100.0
        clip = self.clip(images, prompts)
        loss = self.pickscore_weight * (1.0 - pick).abs().mean() + self.clip_weight * (1.0 - clip).mean()
        return loss, {"pickscore": float(pick.detach().mean() * 100.0), "clip": float(clip.detach().mean())}

    def forward(self, decoded: Tensor, rendered: Tensor, prompt: str) -> RewardOutput:
        _check_images("decoded", decoded)
        _check_images("rendered", rendered)
        loss_rendered, rendered_terms = self.loss(rendered, prompt)
        loss_decoded, decoded_terms = self.loss(decoded, prompt)
        reward = -(loss_rendered + loss_decoded)
        terms = {
            "loss_rendered": float(loss_rendered.detach()),
            "loss_decoded": float(loss_decoded.detach()),
            **{f"rendered_{k}": v for k, v in rendered_terms.items()},
            **{f"decoded_{k}": v for k, v in decoded_terms.items()},
            "reward": float(reward.detach()),
        }
        return RewardOutput(reward=reward, terms=terms)


@dataclass
class RewardModelSources:
    """Where the reward models come from (local folders/files or hub ids; None = the scorer's default)."""

    dfn_clip: Optional[str] = None
    hps: Optional[str] = None
    pickscore: Optional[str] = None
    tokenizer: Optional[str] = None
    lpips_backbone: Optional[Union[str, Path]] = None
    lpips_lin: Optional[Union[str, Path]] = None
    lpips_net: str = "vgg"


def build_reward(
    preset: str,
    sources: Optional[RewardModelSources] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    views: int = 2,
) -> SceneReward:
    """Loads the scorers of ``preset`` (``paper`` or ``released``) and builds its reward module.

    Raises:
        ValueError: unknown preset.
        RewardWeightsMissing: a scorer's or LPIPS's weights cannot be found (the message names them).
    """
    from engine.alignment.lpips import LPIPS
    from engine.alignment.scorers import RewardWeightsMissing, load_scorer

    if preset not in PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; choose one of {', '.join(PRESETS)}")
    sources = sources or RewardModelSources()
    tokenizer = sources.tokenizer

    def scorer(name: str, source: Optional[str]) -> QualityScorer:
        return load_scorer(name, source, tokenizer=tokenizer, device=device, dtype=dtype)

    if preset == "released":
        return ReleasedReward(scorer("pickscore", sources.pickscore), scorer("dfn-clip", sources.dfn_clip))
    if sources.lpips_backbone is None or sources.lpips_lin is None:
        raise RewardWeightsMissing(
            "the paper reward's consistency term needs LPIPS weights: pass the torchvision "
            f"{sources.lpips_net} backbone file and the LPIPS v0.1 linear-layer file "
            "(--lpips-backbone, --lpips-lin; see README, 'Reward finetuning')"
        )
    lpips = LPIPS.from_files(sources.lpips_backbone, sources.lpips_lin, net=sources.lpips_net).to(device)
    return PaperReward(
        scorer("dfn-clip", sources.dfn_clip),
        scorer("hpsv2.1", sources.hps),
        ConsistencyReward(lpips),
        views=views,
    )
