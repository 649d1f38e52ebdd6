"""Image-text quality scorers for reward finetuning: DFN-CLIP, HPSv2.1 and PickScore.

All three are CLIP ViT-H/14 models; they run here on transformers' ``CLIPModel`` (open_clip and
torchvision are not needed): PickScore ships in transformers' format, DFN-CLIP and HPSv2.1 ship as
open_clip state dicts, which :func:`openclip_to_transformers` converts on load.

A scorer maps images (N, 3, H, W) in [0, 1] and N prompts to N scores, differentiably in the images
(its own weights are frozen). Preprocessing runs in torch so the gradient reaches the pixels:

=============  ==========================================  =====  ===========================  =========
name           default source                               size   resize                       score
=============  ==========================================  =====  ===========================  =========
``dfn-clip``   ``apple/DFN5B-CLIP-ViT-H-14-378`` (open_clip)  378   straight to 378²             cosine
``hpsv2.1``    ``xswu/HPSv2`` ``HPS_v2.1_compressed.pt``     224   shorter side + centre crop   cosine
``pickscore``  ``yuvalkirstain/PickScore_v1`` (transformers) 224   shorter side + centre crop   100·cos
=============  ==========================================  =====  ===========================  =========

(bicubic, antialiased; CLIP's mean/std). PickScore's score is ``logit_scale.exp()`` times the cosine,
as its authors compute it (about 20 for real images). The text side uses the CLIP BPE tokenizer of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (what all three were trained with); text features are
computed without gradients and cached per prompt.

Weights are read with safetensors or ``torch.load(weights_only=True)``; a scorer whose files cannot
be found raises :class:`RewardWeightsMissing` naming them, never a silent zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
TEXT_CACHE_SIZE = 256


class RewardWeightsMissing(FileNotFoundError):
    """The weights (or tokenizer) of a reward model cannot be found; the message says where to get them."""


@dataclass(frozen=True)
class ScorerSpec:
    """Facts about one named scorer (``image_size``: the released model's; the loaded config decides)."""

    source: str  # default hub id
    files: tuple[str, ...]  # the weights file(s) looked for in a folder
    fmt: str  # "open_clip" or "transformers"
    image_size: int
    crop: bool
    output: str  # "cosine" or "pickscore"
    label: str


SCORERS = {
    "dfn-clip": ScorerSpec(
        "apple/DFN5B-CLIP-ViT-H-14-378",
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        "open_clip",
        378,
        False,
        "cosine",
        "DFN-CLIP",
    ),
    "hpsv2.1": ScorerSpec("xswu/HPSv2", ("HPS_v2.1_compressed.pt",), "open_clip", 224, True, "cosine", "HPSv2.1"),
    "pickscore": ScorerSpec(
        "yuvalkirstain/PickScore_v1",
        ("model.safetensors", "pytorch_model.bin"),
        "transformers",
        224,
        True,
        "pickscore",
        "PickScore",
    ),
}


# ------------------------------------------------------------------------------------------ scorers
class QualityScorer(nn.Module):
    """``scorer(images (N, 3, H, W) in [0, 1], prompts) -> (N,)`` float32 scores; frozen weights."""

    name = "scorer"

    def check_inputs(self, images: Tensor, prompts: Sequence[str]) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{self.name}: images must be (N, 3, H, W) in [0, 1], got {getattr(images, 'shape', images)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"{self.name}: images must be floating point in [0, 1], got {images.dtype}")
        if isinstance(prompts, str) or len(prompts) != images.shape[0]:
            raise ValueError(f"{self.name}: need one prompt per image ({images.shape[0]}), got {prompts!r:.80}")


def _features(output) -> Tensor:
    """transformers returns the projected features as a tensor or (5.x) as ``pooler_output``."""
    return output if isinstance(output, Tensor) else output.pooler_output


class CLIPScorer(QualityScorer):
    """A CLIP-family scorer on transformers' ``CLIPModel``.

    Args:
        model: the CLIP model (frozen here).
        tokenizer: its CLIP tokenizer.
        name: label used in messages and logs.
        image_size: the model's input size.
        crop: resize the shorter side to ``image_size`` then centre-crop (else resize to the square).
        mean, std: input normalisation.
        output: "cosine" (cosine similarity) or "pickscore" (``logit_scale.exp()`` × cosine).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        name: str,
        image_size: int,
        crop: bool,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        output: str = "cosine",
    ):
        super().__init__()
        if output not in ("cosine", "pickscore"):
            raise ValueError(f"output must be 'cosine' or 'pickscore', got {output!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = int(image_size)
        self.crop = bool(crop)
        self.output = output
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, Tensor] = {}

    def train(self, mode: bool = True):  # the scorer always stays in eval mode
        return super().train(False)

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize (and crop), clamp to [0, 1], normalise; differentiable."""
        size = self.image_size
        height, width = images.shape[-2:]
        if self.crop:
            scale = size / min(height, width)
            new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
            x = F.interpolate(images.float(), size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            x = x[..., top : top + size, left : left + size]
        else:
            x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 1) - self.mean) / self.std

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> Tensor:
        """(N, D) unit-length text features (cached per prompt)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            device = self.mean.device
            tokens = self.tokenizer(list(missing), padding=True, truncation=True, max_length=77, return_tensors="pt")
            features = _features(
                self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
                )
            ).float()
            features = features / features.norm(dim=-1, keepdim=True)
            for prompt, feature in zip(missing, features):
                self._text_cache[prompt] = feature
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
        return torch.stack([self._text_cache[p] for p in prompts])

    def image_features(self, images: Tensor) -> Tensor:
        """(N, D) unit-length image features, with gradient to ``images``."""
        dtype = next(self.model.parameters()).dtype
        features = _features(self.model.get_image_features(pixel_values=self.preprocess(images).to(dtype))).float()
        return features / features.norm(dim=-1, keepdim=True)

    def forward(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        self.check_inputs(images, prompts)
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        if self.output == "pickscore":
            return self.model.logit_scale.exp().float() * cosine
        return cosine


# ------------------------------------------------------------------------------------------ open_clip
_BLOCK_MAP = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_DROPPED = ("attn_mask", "logit_bias")


def _unwrap(state_dict: dict) -> dict[str, Tensor]:
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _convert_block(prefix_out: str, rest: str, value: Tensor, out: dict[str, Tensor]) -> bool:
    """One transformer-block tensor ``rest`` (after ``resblocks.<i>.``); False if unknown."""
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = "weight" if rest.endswith("weight") else "bias"
        for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
            out[f"{prefix_out}self_attn.{name}.{kind}"] = chunk.clone()
        return True
    for old, new in _BLOCK_MAP.items():
        if rest.startswith(old + "."):
            out[prefix_out + new + rest[len(old) :]] = value
            return True
    return False


def _layer_count(state: dict, prefix: str) -> int:
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def openclip_to_transformers(state_dict: dict, open_clip_config: Optional[dict] = None):
    """Converts an open_clip ViT CLIP state dict to transformers ``CLIPModel`` form.

    Args:
        state_dict: open_clip keys (a ``module.`` prefix and a ``state_dict`` wrapper are accepted).
        open_clip_config: the ``open_clip_config.json`` content (or its ``model_cfg``); None infers the
            architecture from the shapes (heads: width / 80 for a 1280-wide vision tower as ViT-H/14,
            else width / 64; GELU).
    Returns:
        (CLIPConfig, state dict for ``CLIPModel``).
    Raises:
        ValueError: a key this conversion does not know (named).
    """
    from transformers import CLIPConfig

    state = _unwrap(state_dict)
    out: dict[str, Tensor] = {}
    unknown = []
    fixed = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "logit_scale": "logit_scale",
    }
    norms = {
        "visual.ln_pre.": "vision_model.pre_layrnorm.",
        "visual.ln_post.": "vision_model.post_layernorm.",
        "ln_final.": "text_model.final_layer_norm.",
    }
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key in fixed:
            out[fixed[key]] = value.reshape(()) if key == "logit_scale" else value
        elif key == "visual.positional_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif any(key.startswith(p) for p in norms):
            prefix = next(p for p in norms if key.startswith(p))
            out[norms[prefix] + key[len(prefix) :]] = value
        elif key.startswith("visual.transformer.resblocks."):
            index, rest = key[len("visual.transformer.resblocks.") :].split(".", 1)
            if not _convert_block(f"vision_model.encoder.layers.{index}.", rest, value, out):
                unknown.append(key)
        elif key.startswith("transformer.resblocks."):
            index, rest = key[len("transformer.resblocks.") :].split(".", 1)
            if not _convert_block(f"text_model.encoder.layers.{index}.", rest, value, out):
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"open_clip state dict has keys this conversion does not know: {unknown[:5]} ({len(unknown)})")
    for needed in ("visual.conv1.weight", "visual.proj", "token_embedding.weight", "text_projection"):
        if needed not in state:
            raise ValueError(f"open_clip state dict lacks {needed!r}: not a CLIP ViT checkpoint")

    cfg = (open_clip_config or {}).get("model_cfg", open_clip_config or {})
    vision_cfg, text_cfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    vision_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["token_embedding.weight"].shape[1]
    head_width = vision_cfg.get("head_width", 80 if vision_width == 1280 and open_clip_config is None else 64)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    vocab = state["token_embedding.weight"].shape[0]
    vision_mlp = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    text_mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    eos = vocab - 1  # CLIP BPE: <|endoftext|> is the last id (49407); it also pads
    config = CLIPConfig(
        projection_dim=state["visual.proj"].shape[1],
        logit_scale_init_value=float(state.get("logit_scale", torch.tensor(2.6592))),
        text_config=dict(
            vocab_size=vocab,
            hidden_size=text_width,
            intermediate_size=text_mlp,
            num_hidden_layers=text_cfg.get("layers", _layer_count(state, "transformer.resblocks.")),
            num_attention_heads=text_cfg.get("heads", text_width // 64),
            max_position_embeddings=state["positional_embedding"].shape[0],
            hidden_act=act,
            layer_norm_eps=1e-5,
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos - 1,
            projection_dim=state["text_projection"].shape[1],
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=vision_mlp,
            num_hidden_layers=vision_cfg.get("layers", _layer_count(state, "visual.transformer.resblocks.")),
            num_attention_heads=vision_width // head_width,
            image_size=vision_cfg.get("image_size", grid * patch),
            patch_size=patch,
            hidden_act=act,
            layer_norm_eps=1e-5,
            projection_dim=state["visual.proj"].shape[1],
        ),
    )
    return config, out


# ------------------------------------------------------------------------------------------ loading
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _resolve(source: str, patterns: list[str], what: str) -> Path:
    """A local file/folder, or a hub id fetched through the Hugging Face cache (download if allowed)."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise RewardWeightsMissing(
            f"{what}: {source} does not exist (give a local folder/file or a hub id 'owner/name')"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if _offline():
            raise RewardWeightsMissing(
                f"{what}: {text} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
                f"({', '.join(patterns)}) or pass a local path"
            ) from None
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as error:
        raise RewardWeightsMissing(f"{what}: cannot download {text} from the Hugging Face hub: {error}") from error


def _weights_file(location: Path, files: Sequence[str], what: str, source: str) -> Path:
    if location.is_file():
        return location
    for name in files:
        if (location / name).is_file():
            return location / name
    raise RewardWeightsMissing(
        f"{what} weights not found: looked for {' or '.join(files)} in {location} (from {source})"
    )


def load_tokenizer(source: Optional[str] = None):
    """The CLIP BPE tokenizer from a folder or hub id (default: the LAION ViT-H/14 one)."""
    from transformers import CLIPTokenizer

    source = source or DEFAULT_TOKENIZER
    files = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
    folder = _resolve(source, files, "CLIP tokenizer")
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not has_bpe and not (folder / "tokenizer.json").is_file():
        raise RewardWeightsMissing(
            f"CLIP tokenizer not found: {folder} has neither tokenizer.json nor vocab.json + merges.txt (from {source})"
        )
    return CLIPTokenizer.from_pretrained(str(folder))


def load_scorer(
    name: str,
    source: Optional[Union[str, Path]] = None,
    *,
    tokenizer=None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CLIPScorer:
    """Loads the scorer ``name`` (one of ``SCORERS``) from ``source`` (default: its hub id).

    ``tokenizer``: a tokenizer object, or a folder / hub id of one (default: the LAION ViT-H/14 one).

    Raises:
        ValueError: unknown scorer name, or weights that do not fit the architecture.
        RewardWeightsMissing: weights or tokenizer not found (the message names the file and source).
    """
    from transformers import CLIPConfig, CLIPModel

    from engine.models.loading import CheckpointError, read_state_dict

    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    spec = SCORERS[name]
    source = str(source or spec.source)
    patterns = [*spec.files, "open_clip_config.json", "config.json"]
    location = _resolve(source, patterns, f"{spec.label} weights")
    weights = _weights_file(location, spec.files, spec.label, source)
    try:
        state = read_state_dict(weights) if weights.suffix != ".pt" else _read_wrapped(weights)
    except CheckpointError as error:
        raise ValueError(f"{spec.label}: {error}") from error
    if spec.fmt == "open_clip":
        config_file = weights.parent / "open_clip_config.json"
        open_clip_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
        if open_clip_config is None and name == "hpsv2.1":
            open_clip_config = {"model_cfg": {"quick_gelu": False, "vision_cfg": {"head_width": 80}}}
        config, state = openclip_to_transformers(state, open_clip_config)
    else:
        config_file = weights.parent / "config.json"
        if not config_file.is_file():
            raise RewardWeightsMissing(f"{spec.label}: config.json not found next to {weights} (from {source})")
        config = CLIPConfig.from_pretrained(str(weights.parent))
    model = CLIPModel(config)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing = sorted(set(own) - set(state) - {k for k in own if k.endswith("position_ids")})
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{spec.label} weights in {weights} do not fit a CLIP model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {sorted(wrong)[:3]}"
        )
    model.load_state_dict(state, strict=False)
    if not isinstance(tokenizer, (type(None), str, Path)):
        tok = tokenizer
    else:
        tok = load_tokenizer(None if tokenizer is None else str(tokenizer))
    scorer = CLIPScorer(
        model.to(dtype), tok, name=name, image_size=config.vision_config.image_size, crop=spec.crop, output=spec.output
    )
    return scorer.to(device)


def _read_wrapped(path: Path) -> dict[str, Tensor]:
    """A ``.pt`` that may wrap its state dict (HPSv2.1: ``{'state_dict': ...}``), read with weights_only."""
    from engine.models.loading import CheckpointError

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read {path} as a torch state dict: {error}") from error
    data = _unwrap(data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return data


# ------------------------------------------------------------------------------------------ tiny
def build_tiny_tokenizer(folder: Union[str, Path]):
    """A small real ``CLIPTokenizer`` (byte-level BPE over a few words) written into ``folder``."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = (
        "a the of on in with and red blue green yellow white black grey cat dog house tree car chair table room "
        "garden street scene camera orbit sphere cube cone torus cylinder floor small large near"
    ).split()
    # CLIP's byte-level alphabet for printable ASCII is the characters themselves
    letters = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyz0123456789,.'-"))
    vocab: dict[str, int] = {}
    for char in letters:
        vocab[char] = len(vocab)
    for char in letters:
        vocab[char + "</w>"] = len(vocab)
    merges = []
    for word in words:  # greedy left-to-right merges building each whole word
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
                vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_clip_config(vocab_size: int, image_size: int = 32, hidden: int = 32, act: str = "gelu"):
    """A tiny CLIP configuration (2 layers, 2 heads, patch 8) for tests."""
    from transformers import CLIPConfig

    eos = vocab_size - 1
    return CLIPConfig(
        projection_dim=16,
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act=act,
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos - 1,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
            hidden_act=act,
        ),
    )


def build_tiny_clip_scorer(
    folder: Union[str, Path],
    name: str = "tiny-clip",
    output: str = "cosine",
    seed: int = 0,
    image_size: int = 32,
    crop: bool = False,
) -> CLIPScorer:
    """A randomly initialised tiny real ``CLIPModel`` + tiny tokenizer (written into ``folder``) as a scorer."""
    from transformers import CLIPModel

    tokenizer = build_tiny_tokenizer(Path(folder) / "tokenizer")
    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(len(tokenizer), image_size))
    return CLIPScorer(model, tokenizer, name=name, image_size=image_size, crop=crop, output=output)
