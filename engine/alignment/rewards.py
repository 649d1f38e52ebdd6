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

Terms that can be left out, each only by an explicit setting (``RewardSettings``), never because a
model is missing: the paper preset's LPIPS part of C (``consistency="l1"``: C = −L1) and its HPSv2.1
term (``hps_weight=0``: Q = CLIP − 1; in general Q = (CLIP − 1) + hps_weight·(HPS − 1)), and the
released preset's PickScore term (``pickscore_weight=0``). A reward module lists the terms it logs
(``term_names``) and describes itself (``describe``: preset, settings, scorers, terms) for the run's
config. Scores of several images are averaged per term. Every scorer of an active term is required: a
preset whose weights are missing fails to build (``RewardWeightsMissing``, naming the files and the
setting that leaves the term out), it never scores zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from engine.alignment.scorers import QualityScorer

PRESETS = ("paper", "released")
CONSISTENCY_CHOICES = ("l1+lpips", "l1")  # the paper preset's consistency term: with LPIPS, or L1 alone
# each setting of RewardSettings and the ``engine align train`` option that gives it
SETTING_OPTIONS = {
    "preset": "--preset",
    "consistency": "--consistency",
    "hps_weight": "--hps-weight",
    "pickscore_weight": "--pickscore-weight",
}


@dataclass
class RewardOutput:
    """The reward (scalar tensor with graph) and its terms as floats for the log."""

    reward: Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3, H, W) images in [0, 1], got {getattr(images, 'shape', images)}")


def _scorer_name(scorer: nn.Module) -> str:
    return str(getattr(scorer, "name", type(scorer).__name__))


class ConsistencyReward(nn.Module):
    """C = −L1(decoded, rendered) − lpips_weight · LPIPS(decoded, rendered), per image pair (N,).

    Args:
        lpips: an LPIPS module (``engine.alignment.lpips.LPIPS``); None leaves LPIPS out: C = −L1
            (``kind`` "l1", the paper preset's ``--consistency l1``).
        lpips_weight: LPIPS's weight (the paper's 0.25); must be > 0 with an LPIPS module.
    """

    def __init__(self, lpips: Optional[nn.Module] = None, lpips_weight: float = 0.25):
        super().__init__()
        if lpips is not None and not lpips_weight > 0:
            raise ValueError(
                f"lpips_weight must be > 0 with an LPIPS module (lpips=None leaves it out), got {lpips_weight}"
            )
        self.lpips = lpips
        self.lpips_weight = float(lpips_weight) if lpips is not None else 0.0

    @property
    def kind(self) -> str:
        """ "l1+lpips" or "l1" (``CONSISTENCY_CHOICES``)."""
        return "l1" if self.lpips is None else "l1+lpips"

    def parts(self, decoded: Tensor, rendered: Tensor) -> dict[str, Tensor]:
        """The distances per image pair: ``l1`` (N,) and, with LPIPS, ``lpips`` (N,)."""
        _check_images("decoded", decoded)
        _check_images("rendered", rendered)
        if decoded.shape != rendered.shape:
            raise ValueError(f"decoded {tuple(decoded.shape)} and rendered {tuple(rendered.shape)} differ in shape")
        parts = {"l1": (decoded - rendered).abs().flatten(1).mean(1)}
        if self.lpips is not None:
            parts["lpips"] = self.lpips(decoded, rendered).float()
        return parts

    def combine(self, parts: dict[str, Tensor]) -> Tensor:
        """C from :meth:`parts`."""
        consistency = -parts["l1"]
        if "lpips" in parts:
            consistency = consistency - self.lpips_weight * parts["lpips"]
        return consistency

    def forward(self, decoded: Tensor, rendered: Tensor) -> Tensor:
        return self.combine(self.parts(decoded, rendered))


class SceneReward(nn.Module):
    """Interface: which views to use, and the reward of decoded frames and renders of those views."""

    name = "reward"

    def select_views(self, num_views: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
        """(views to render, decoded frames to score) for a video of ``num_views`` frames."""
        raise NotImplementedError

    def forward(self, decoded: Tensor, rendered: Tensor, prompt: str) -> RewardOutput:
        raise NotImplementedError

    def term_names(self) -> Optional[list[str]]:
        """The names of the terms ``forward`` logs, in order (None: not declared)."""
        return None

    def describe(self) -> dict:
        """What this reward is, for the run's config: at least ``preset``; the presets add their
        settings (``RewardSettings`` fields), weights, scorers and ``terms``."""
        return {"preset": self.name, "terms": self.term_names()}

    def summary(self) -> str:
        """One line for the log: the formula with the active terms."""
        return f"{self.name} reward"


class PaperReward(SceneReward):
    """The paper's reward (see the module docstring); ``views`` views drawn per rollout (default 2).

    Args:
        clip: the CLIP scorer (DFN-CLIP, or what stands in for it: the default model's caption scorer).
        hps: the HPSv2.1 scorer; None leaves the HPSv2.1 term out (needs ``hps_weight`` 0).
        consistency: the consistency term (``ConsistencyReward``); None only with ``consistency_weight`` 0.
        hps_weight: weight of the HPSv2.1 term in Q = (CLIP − 1) + hps_weight·(HPS − 1) (paper: 1).
    """

    name = "paper"

    def __init__(
        self,
        clip: QualityScorer,
        hps: Optional[QualityScorer],
        consistency: Optional[ConsistencyReward],
        views: int = 2,
        quality_weight: float = 1.0 / 16.0,
        consistency_weight: float = 0.05,
        hps_weight: Optional[float] = None,
    ):
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if consistency is None and consistency_weight:
            raise ValueError("the paper reward has a consistency term: give a ConsistencyReward")
        hps_weight = (1.0 if hps is not None else 0.0) if hps_weight is None else float(hps_weight)
        if hps_weight < 0:
            raise ValueError(f"hps_weight must be >= 0, got {hps_weight}")
        if hps is None and hps_weight:
            raise ValueError(f"hps_weight is {hps_weight} but no HPSv2.1 scorer was given (hps_weight 0 leaves it out)")
        self.clip = clip
        self.hps = hps if hps_weight else None
        self.hps_weight = hps_weight
        self.consistency = consistency if consistency_weight else None
        self.views = views
        self.quality_weight = float(quality_weight)
        self.consistency_weight = float(consistency_weight)

    def select_views(self, num_views: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
        chosen = sorted(torch.randperm(num_views, generator=generator)[: self.views].tolist())
        return chosen, chosen

    def quality(self, images: Tensor, prompt: str) -> tuple[Tensor, dict[str, float]]:
        """Q = (CLIP − 1) + hps_weight·(HPSv2.1 − 1) (the paper's CLIP + HPSv2.1 − 2), averaged over the images."""
        prompts = [prompt] * images.shape[0]
        clip = self.clip(images, prompts).mean()
        quality, terms = clip - 1.0, {"clip": float(clip.detach())}
        if self.hps is not None:
            hps = self.hps(images, prompts).mean()
            quality = quality + self.hps_weight * (hps - 1.0)
            terms["hps"] = float(hps.detach())
        return quality, terms

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
        if self.consistency is not None:
            parts = self.consistency.parts(decoded, rendered)
            consistency = self.consistency.combine(parts).mean()
            reward = reward + self.consistency_weight * consistency
            terms["consistency"] = float(consistency.detach())
            terms.update({f"consistency_{k}": float(v.detach().mean()) for k, v in parts.items()})
        terms["reward"] = float(reward.detach())
        return RewardOutput(reward=reward, terms=terms)

    def term_names(self) -> list[str]:
        quality = ["clip", "hps"] if self.hps is not None else ["clip"]
        names = ["q_decoded", "q_rendered", *(f"decoded_{k}" for k in quality), *(f"rendered_{k}" for k in quality)]
        if self.consistency is not None:
            names += ["consistency", "consistency_l1"] + (
                ["consistency_lpips"] if self.consistency.lpips is not None else []
            )
        return names + ["reward"]

    def describe(self) -> dict:
        consistency = self.consistency.kind if self.consistency is not None else "none"
        scorers = {"clip": _scorer_name(self.clip)}
        if self.hps is not None:
            scorers["hps"] = _scorer_name(self.hps)
        return {
            "preset": "paper",
            "consistency": consistency,
            "hps_weight": self.hps_weight,
            "pickscore_weight": None,
            "quality_weight": self.quality_weight,
            "consistency_weight": self.consistency_weight if self.consistency is not None else 0.0,
            "lpips_weight": self.consistency.lpips_weight if self.consistency is not None else 0.0,
            "views": self.views,
            "scorers": scorers,
            "terms": self.term_names(),
        }

    def summary(self) -> str:
        q = f"(clip - 1) + {self.hps_weight:g}*(hps - 1)" if self.hps is not None else "clip - 1 (HPSv2.1 left out)"
        if self.consistency is None:
            c, tail = "", "no consistency term"
        else:
            c = f" + {self.consistency_weight:g}*C"
            if self.consistency.lpips is not None:
                tail = f"C = -L1 - {self.consistency.lpips_weight:g}*LPIPS"
            else:
                tail = "C = -L1 (LPIPS left out: consistency l1)"
        scorers = ", ".join(f"{slot}: {name}" for slot, name in self.describe()["scorers"].items())
        return (
            f"paper reward on {self.views} views: r = {self.quality_weight:g}*(Q(frames) + Q(renders)){c}; "
            f"Q = {q}; {tail}; scorers {scorers}"
        )


class ReleasedReward(SceneReward):
    """The released code's reward (see the module docstring); ``pickscore`` None (with
    ``pickscore_weight`` 0) leaves the PickScore term out."""

    name = "released"

    def __init__(
        self,
        pickscore: Optional[QualityScorer],
        clip: QualityScorer,
        pickscore_weight: float = 0.25,
        clip_weight: float = 0.25,
        decoded_frames: int = 1,
    ):
        super().__init__()
        if pickscore_weight < 0 or clip_weight < 0:
            raise ValueError(f"weights must be >= 0, got pickscore {pickscore_weight}, clip {clip_weight}")
        if pickscore is None and pickscore_weight:
            raise ValueError(
                f"pickscore_weight is {pickscore_weight} but no PickScore scorer was given "
                "(pickscore_weight 0 leaves it out)"
            )
        self.pickscore = pickscore if pickscore_weight else None
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
        clip = self.clip(images, prompts)
        loss = self.clip_weight * (1.0 - clip).mean()
        terms = {"clip": float(clip.detach().mean())}
        if self.pickscore is not None:
            pick = self.pickscore(images, prompts) / 100.0
            loss = loss + self.pickscore_weight * (1.0 - pick).abs().mean()
            terms = {"pickscore": float(pick.detach().mean() * 100.0), **terms}
        return loss, terms

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

    def term_names(self) -> list[str]:
        quality = ["pickscore", "clip"] if self.pickscore is not None else ["clip"]
        names = ["loss_rendered", "loss_decoded", *(f"rendered_{k}" for k in quality)]
        return names + [f"decoded_{k}" for k in quality] + ["reward"]

    def describe(self) -> dict:
        scorers = {"clip": _scorer_name(self.clip)}
        if self.pickscore is not None:
            scorers["pickscore"] = _scorer_name(self.pickscore)
        return {
            "preset": "released",
            "consistency": "none",
            "hps_weight": None,
            "pickscore_weight": self.pickscore_weight,
            "clip_weight": self.clip_weight,
            "decoded_frames": self.decoded_frames,
            "scorers": scorers,
            "terms": self.term_names(),
        }

    def summary(self) -> str:
        pick = (
            f"{self.pickscore_weight:g}*|1 - pickscore/100| + "
            if self.pickscore is not None
            else "(PickScore left out) "
        )
        scorers = ", ".join(f"{slot}: {name}" for slot, name in self.describe()["scorers"].items())
        return (
            f"released reward: r = -(loss(renders) + loss({self.decoded_frames} frame)); "
            f"loss = {pick}{self.clip_weight:g}*(1 - clip); no consistency term; scorers {scorers}"
        )


@dataclass(frozen=True)
class RewardSettings:
    """The choices that shape a preset's reward (None: the preset's default, see :meth:`resolve`).

    ``consistency`` (paper): "l1+lpips" (default, the paper's C) or "l1" (C = −L1, LPIPS left out).
    ``hps_weight`` (paper): the HPSv2.1 term's weight (default 1; 0 leaves HPSv2.1 out).
    ``pickscore_weight`` (released): the PickScore loss's weight (default 0.25; 0 leaves PickScore out).
    """

    preset: Optional[str] = None
    consistency: Optional[str] = None
    hps_weight: Optional[float] = None
    pickscore_weight: Optional[float] = None

    def resolve(self) -> RewardSettings:
        """Every setting filled in for the preset (default ``paper``).

        Raises:
            ValueError: an unknown preset or consistency choice, a negative weight, or a setting of the
                other preset (named with its ``engine align train`` option).
        """
        preset = self.preset or "paper"
        if preset not in PRESETS:
            raise ValueError(f"unknown reward preset {preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("hps_weight", "pickscore_weight"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 0:
                raise ValueError(f"{SETTING_OPTIONS[name]} must be >= 0 (0 leaves the term out), got {value}")
        if preset == "paper":
            if self.pickscore_weight is not None:
                raise ValueError("--pickscore-weight belongs to the released preset: the paper reward has no PickScore")
            consistency = self.consistency or "l1+lpips"
            if consistency not in CONSISTENCY_CHOICES:
                raise ValueError(f"unknown consistency {consistency!r}; choose one of {', '.join(CONSISTENCY_CHOICES)}")
            hps = 1.0 if self.hps_weight is None else float(self.hps_weight)
            return RewardSettings("paper", consistency, hps, None)
        if self.consistency is not None:
            raise ValueError("--consistency belongs to the paper preset: the released reward has no consistency term")
        if self.hps_weight is not None:
            raise ValueError("--hps-weight belongs to the paper preset: the released reward has no HPSv2.1")
        pick = 0.25 if self.pickscore_weight is None else float(self.pickscore_weight)
        return RewardSettings("released", None, None, pick)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_run(cls, record: Union[str, dict, None]) -> Optional[RewardSettings]:
        """The resolved settings a run's ``align_config.json`` ``reward`` entry records (a preset name in
        runs written before the settings existed, which used the preset's defaults); None: no record."""
        if record is None:
            return None
        if isinstance(record, str):
            return cls(preset=record).resolve()
        if not isinstance(record, dict) or record.get("preset") not in PRESETS:
            return None
        values = {name: record.get(name) for name in SETTING_OPTIONS}
        if values["consistency"] == "none":
            values["consistency"] = None
        return cls(**values).resolve()

    def for_resume(self, run: RewardSettings) -> tuple[RewardSettings, list[str]]:
        """These settings completed by ``run``'s (the settings a run was started with, resolved): a
        setting not given (None) takes the run's value. Returns the settings and the names taken.

        Raises:
            ValueError: a given setting differs from the run's (named with its option and both values).
        """
        values, taken = {}, []
        for name, option in SETTING_OPTIONS.items():
            given, recorded = getattr(self, name), getattr(run, name)
            if given is None:
                values[name] = recorded
                taken += [name] if recorded is not None else []
            elif recorded is None or (given != recorded if isinstance(given, str) else float(given) != float(recorded)):
                shown = "not used" if recorded is None else repr(recorded)
                raise ValueError(
                    f"this run was started with {name.replace('_', ' ')} {shown}, the command line gives {given!r} "
                    f"({option}): resume with the run's own reward settings (leave {option} out or give the same "
                    "value), or start a new run in another --out"
                )
            else:
                values[name] = given
        return RewardSettings(**values).resolve(), taken


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


def check_sources(settings: RewardSettings, sources: RewardModelSources) -> None:
    """Checks, before anything is loaded, that ``sources`` fit the (resolved) ``settings``.

    Raises:
        ValueError: a model given for a term the settings leave out (a contradiction, never ignored).
        RewardWeightsMissing: the paper's L1+LPIPS consistency without both LPIPS files (the message names
            the files and ``--consistency l1``, which leaves LPIPS out).
    """
    from engine.alignment.scorers import RewardWeightsMissing

    lpips_given = sources.lpips_backbone is not None or sources.lpips_lin is not None
    if settings.preset == "released":
        if sources.hps is not None:
            raise ValueError("--hps belongs to the paper preset: the released reward has no HPSv2.1")
        if lpips_given:
            raise ValueError("LPIPS files belong to the paper preset: the released reward has no consistency term")
        if sources.pickscore is not None and not settings.pickscore_weight:
            raise ValueError("--pickscore-weight 0 leaves PickScore out, but --pickscore gives its weights: drop one")
        return
    if sources.pickscore is not None:
        raise ValueError("--pickscore belongs to the released preset: the paper reward has no PickScore")
    if sources.hps is not None and not settings.hps_weight:
        raise ValueError("--hps-weight 0 leaves HPSv2.1 out, but --hps gives its weights: drop one")
    if lpips_given and settings.consistency == "l1":
        raise ValueError(
            "--consistency l1 leaves LPIPS out, but LPIPS files were given (--lpips-backbone/--lpips-lin): drop "
            "them, or use --consistency l1+lpips"
        )
    if settings.consistency == "l1+lpips" and (sources.lpips_backbone is None or sources.lpips_lin is None):
        raise RewardWeightsMissing(
            "the paper reward's consistency term C = -L1 - 0.25*LPIPS needs LPIPS weights: pass the torchvision "
            f"{sources.lpips_net} backbone file and the LPIPS v0.1 linear-layer file (--lpips-backbone, "
            "--lpips-lin), or choose L1 alone as the consistency term with --consistency l1 "
            "(see README, 'Reward finetuning')"
        )


def build_reward(
    preset: Optional[str] = None,
    sources: Optional[RewardModelSources] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    views: int = 2,
    consistency: Optional[str] = None,
    hps_weight: Optional[float] = None,
    pickscore_weight: Optional[float] = None,
) -> SceneReward:
    """Loads the scorers of ``preset`` (``paper`` or ``released``) and builds its reward module.

    ``consistency``, ``hps_weight``, ``pickscore_weight``: see :class:`RewardSettings` (None: the
    preset's default). Only the models of active terms are loaded.

    Raises:
        ValueError: unknown preset or setting, a setting of the other preset, or a model given for a
            term the settings leave out.
        RewardWeightsMissing: a scorer's or LPIPS's weights cannot be found (the message names them and
            the setting that leaves the term out).
    """
    from engine.alignment.lpips import LPIPS
    from engine.alignment.scorers import RewardWeightsMissing, load_scorer

    settings = RewardSettings(preset, consistency, hps_weight, pickscore_weight).resolve()
    sources = sources or RewardModelSources()
    check_sources(settings, sources)
    tokenizer = sources.tokenizer

    def scorer(name: str, source: Optional[str], leave_out: str = "") -> QualityScorer:
        try:
            return load_scorer(name, source, tokenizer=tokenizer, device=device, dtype=dtype)
        except RewardWeightsMissing as error:
            if not leave_out:
                raise
            raise RewardWeightsMissing(f"{error}; or {leave_out}") from error

    if settings.preset == "released":
        pick = None
        if settings.pickscore_weight:
            pick = scorer("pickscore", sources.pickscore, "leave PickScore out with --pickscore-weight 0")
        return ReleasedReward(pick, scorer("dfn-clip", sources.dfn_clip), pickscore_weight=settings.pickscore_weight)
    lpips = None
    if settings.consistency == "l1+lpips":
        lpips = LPIPS.from_files(sources.lpips_backbone, sources.lpips_lin, net=sources.lpips_net).to(device)
    clip = scorer("dfn-clip", sources.dfn_clip)
    hps = None
    if settings.hps_weight:
        hps = scorer("hpsv2.1", sources.hps, "leave HPSv2.1 out of Q with --hps-weight 0")
    return PaperReward(clip, hps, ConsistencyReward(lpips), views=views, hps_weight=settings.hps_weight)
