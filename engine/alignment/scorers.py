"""Image-text quality scorers for reward finetuning: DFN-CLIP, HPSv2.1 and PickScore.

All three are CLIP ViT-H/14 models; they run here on transformers' ``CLIPModel`` (open_clip and
torchvision are not needed): PickScore ships in transformers' format, DFN-CLIP and HPSv2.1 ship as
open_clip state dicts, which :func:`openclip_to_transformers` converts on load.

A scorer maps images (N, 3, H, W) in [0, 1] and N prompts to N scores, differentiably in the images
(its own weights are frozen). Preprocessing runs in torch (bicubic, antialiased resize; clamp; CLIP's
mean/std) so the gradient reaches the pixels. The scorers (``SCORERS``):

* ``dfn-clip``: ``apple/DFN5B-CLIP-ViT-H-14-378`` (open_clip ``open_clip_pytorch_model.bin`` +
  ``open_clip_config.json``, QuickGELU), 378 px, resized straight to the square, cosine score;
* ``hpsv2.1``: ``xswu/HPSv2`` ``HPS_v2.1_compressed.pt`` (open_clip ViT-H/14 state dict under
  ``state_dict``, GELU), 224 px, shorter side resized then centre-cropped, cosine score;
* ``pickscore``: ``yuvalkirstain/PickScore_v1`` (transformers ``config.json`` + weights), 224 px,
  shorter side + centre crop, score ``logit_scale.exp()`` × cosine as its authors compute it (about
  20 for real images).

The text side uses the CLIP BPE tokenizer of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (what all
three were trained with); text features are computed without gradients and cached per prompt.

Sources are local folders or files, or hub ids looked up in the Hugging Face cache and downloaded
only when missing there and ``HF_HUB_OFFLINE`` is not set. Weights are read with safetensors or
``torch.load(weights_only=True)`` (no remote code). A scorer whose files cannot be found raises
:class:`RewardWeightsMissing` naming them and where to get them, never a silent zero.
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
CAPTION_SCORER_FILE = "caption_scorer.json"  # marks a folder of the default model's caption scorer
CAPTION_SCORER_KIND = "vist3a-caption-scorer"


class RewardWeightsMissing(FileNotFoundError):
    """The weights (or tokenizer) of a reward model cannot be found; the message says where to get them."""


@dataclass(frozen=True)
class ScorerSpec:
    """Facts about one named scorer (``image_size``: the released model's; the loaded config decides)."""

    source: str  # default hub id
    files: tuple[str, ...]  # the weights file(s) looked for in a folder, in order of preference
    fmt: str  # "open_clip" or "transformers"
    image_size: int
    crop: bool
    output: str  # "cosine" or "pickscore"
    label: str
    quick_gelu: bool = False  # open_clip activation, used when no open_clip_config.json comes with the weights
    option: str = ""  # the ``engine align train`` option that points at local weights


SCORERS = {
    "dfn-clip": ScorerSpec(
        source="apple/DFN5B-CLIP-ViT-H-14-378",
        files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        fmt="open_clip",
        image_size=378,
        crop=False,
        output="cosine",
        label="DFN-CLIP",
        quick_gelu=True,
        option="--dfn-clip",
    ),
    "hpsv2.1": ScorerSpec(
        source="xswu/HPSv2",
        files=("HPS_v2.1_compressed.pt",),
        fmt="open_clip",
        image_size=224,
        crop=True,
        output="cosine",
        label="HPSv2.1",
        quick_gelu=False,
        option="--hps",
    ),
    "pickscore": ScorerSpec(
        source="yuvalkirstain/PickScore_v1",
        files=("model.safetensors", "pytorch_model.bin"),
        fmt="transformers",
        image_size=224,
        crop=True,
        output="pickscore",
        label="PickScore",
        option="--pickscore",
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
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{self.name}: prompts must be strings, got {[type(p).__name__ for p in prompts]}")


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
        self.eval()

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], *, device="cpu", dtype: torch.dtype = torch.float32):
        """The scorer saved in ``folder`` by :meth:`save_pretrained` (the default model's caption scorer).

        The folder holds transformers' ``config.json`` + ``model.safetensors``, the tokenizer files and
        ``caption_scorer.json`` (kind, input size, crop, output). Weights must fit the config exactly.

        Raises:
            ValueError: ``folder`` is not such a folder, or its weights do not fit its config.
        """
        from safetensors.torch import load_file
        from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

        folder = Path(folder)
        meta_file = folder / CAPTION_SCORER_FILE
        if not meta_file.is_file():
            raise ValueError(f"{folder} is not a caption-scorer folder ({CAPTION_SCORER_FILE} is missing)")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("kind") != CAPTION_SCORER_KIND:
            raise ValueError(f"{meta_file}: kind must be {CAPTION_SCORER_KIND!r}, got {meta.get('kind')!r}")
        model = CLIPModel(CLIPConfig.from_pretrained(str(folder)))
        state = load_file(str(folder / "model.safetensors"))
        own = {k for k in model.state_dict() if not k.endswith("position_ids")}
        got = {k for k in state if not k.endswith("position_ids")}
        if own != got:
            raise ValueError(
                f"{folder}/model.safetensors does not fit its config: missing {sorted(own - got)[:3]}, "
                f"unexpected {sorted(got - own)[:3]}"
            )
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        scorer = cls(
            model.to(dtype),
            tokenizer,
            name="caption-scorer",
            image_size=int(meta["image_size"]),
            crop=bool(meta.get("crop", False)),
            output=meta.get("output", "cosine"),
        )
        return scorer.to(device)

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Writes the scorer folder read by :meth:`from_pretrained` (fp16 weights), atomically."""
        from safetensors.torch import save_file

        from engine.io.atomic import atomic_directory

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: v.detach().half().contiguous()
            for k, v in self.model.state_dict().items()
            if not k.endswith("position_ids")
        }
        with atomic_directory(directory, replace=True) as tmp:
            self.model.config.save_pretrained(str(tmp))
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.tokenizer.save_pretrained(str(tmp))
            meta = {
                "kind": CAPTION_SCORER_KIND,
                "image_size": self.image_size,
                "crop": self.crop,
                "output": self.output,
            }
            (tmp / CAPTION_SCORER_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return directory

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
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.mean.device)

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


def _square(size):
    """open_clip sizes may be ``[s, s]``; a square one becomes ``s`` (anything else is left as it is)."""
    if isinstance(size, (list, tuple)) and len(set(size)) == 1:
        return size[0]
    return size


def _layer_count(state: dict, prefix: str) -> int:
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


# open_clip key -> (transformers key, transposed); projections are stored transposed in open_clip
_RENAMED = {
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "visual.proj": ("visual_projection.weight", True),
    "text_projection": ("text_projection.weight", True),
}
_NORMS = {
    "visual.ln_pre.": "vision_model.pre_layrnorm.",
    "visual.ln_post.": "vision_model.post_layernorm.",
    "ln_final.": "text_model.final_layer_norm.",
}
_BLOCKS = {
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "transformer.resblocks.": "text_model.encoder.layers.",
}


def _convert_key(key: str, value: Tensor, out: dict[str, Tensor]) -> bool:
    """Adds the transformers form of one open_clip tensor to ``out``; False if the key is unknown."""
    if key == "logit_scale":
        out["logit_scale"] = value.reshape(())
        return True
    if key in _RENAMED:
        name, transposed = _RENAMED[key]
        out[name] = value.t().contiguous() if transposed else value
        return True
    prefix = next((p for p in _NORMS if key.startswith(p)), None)
    if prefix is not None:
        out[_NORMS[prefix] + key[len(prefix) :]] = value
        return True
    prefix = next((p for p in _BLOCKS if key.startswith(p)), None)
    if prefix is not None:
        index, rest = key[len(prefix) :].split(".", 1)
        return _convert_block(f"{_BLOCKS[prefix]}{index}.", rest, value, out)
    return False


def _openclip_keys_to_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The key mapping of :func:`openclip_to_transformers` (unknown keys raise ValueError, named)."""
    out: dict[str, Tensor] = {}
    unknown = [key for key, value in state.items() if key not in _DROPPED and not _convert_key(key, value, out)]
    if unknown:
        raise ValueError(f"open_clip state dict has keys this conversion does not know: {unknown[:5]} ({len(unknown)})")
    return out


def openclip_to_transformers(state_dict: dict, open_clip_config: Optional[dict] = None):
    """Converts an open_clip ViT CLIP state dict to transformers ``CLIPModel`` form.

    Args:
        state_dict: open_clip keys (a ``module.`` prefix and a ``state_dict`` wrapper are accepted).
        open_clip_config: the ``open_clip_config.json`` content (or its ``model_cfg``). Widths, patch
            and image size, vocabulary and context length always come from the tensor shapes (a config
            that contradicts them is an error); layers and heads come from the config when it gives them,
            else from the keys and ``width // head_width`` (vision head width: the config's
            ``head_width``, else 80 for a 1280-wide tower as in ViT-H/14, else 64; text: 64). The
            activation is QuickGELU when ``quick_gelu`` is true, else GELU.
    Returns:
        (CLIPConfig, state dict for ``CLIPModel``). The text config's ``eos_token_id`` and
        ``pad_token_id`` are the last vocabulary id (CLIP's ``<|endoftext|>``, 49407), so pooling takes
        the first end-of-text token as open_clip does.
    Raises:
        ValueError: a key this conversion does not know (named), a missing essential key, or a config
            that contradicts the shapes.
    """
    from transformers import CLIPConfig

    state = _unwrap(state_dict)
    out = _openclip_keys_to_transformers(state)
    needed_keys = (
        "visual.conv1.weight",
        "visual.positional_embedding",
        "visual.proj",
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "token_embedding.weight",
        "positional_embedding",
        "text_projection",
        "transformer.resblocks.0.mlp.c_fc.weight",
    )
    for needed in needed_keys:
        if needed not in state:
            raise ValueError(f"open_clip state dict lacks {needed!r}: not a CLIP ViT checkpoint")

    cfg = (open_clip_config or {}).get("model_cfg", open_clip_config or {})
    vision_cfg, text_cfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    vision_width, _, _, patch = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vocab, text_width = state["token_embedding.weight"].shape
    embed_dim = state["visual.proj"].shape[1]
    shapes = {
        "embed_dim": (cfg.get("embed_dim"), embed_dim),
        "vision_cfg.width": (vision_cfg.get("width"), vision_width),
        "vision_cfg.patch_size": (vision_cfg.get("patch_size"), patch),
        "vision_cfg.image_size": (_square(vision_cfg.get("image_size")), grid * patch),
        "text_cfg.width": (text_cfg.get("width"), text_width),
        "text_cfg.vocab_size": (text_cfg.get("vocab_size"), vocab),
        "text_cfg.context_length": (text_cfg.get("context_length"), state["positional_embedding"].shape[0]),
    }
    differ = [
        f"{k}={given} but the weights say {found}" for k, (given, found) in shapes.items() if given not in (None, found)
    ]
    if differ:
        raise ValueError(f"open_clip config does not match the state dict: {'; '.join(differ)}")
    head_width = vision_cfg.get("head_width") or (80 if vision_width == 1280 else 64)
    vision_heads = max(1, vision_width // head_width)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    eos = vocab - 1  # CLIP BPE: <|endoftext|> is the last id (49407 of 49408); pooling takes its first position
    config = CLIPConfig(
        projection_dim=embed_dim,
        logit_scale_init_value=float(state.get("logit_scale", torch.tensor(2.6592))),
        text_config=dict(
            vocab_size=vocab,
            hidden_size=text_width,
            intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=text_cfg.get("layers", _layer_count(state, "transformer.resblocks.")),
            num_attention_heads=text_cfg.get("heads", max(1, text_width // 64)),
            max_position_embeddings=state["positional_embedding"].shape[0],
            hidden_act=act,
            layer_norm_eps=1e-5,
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos - 1,
            projection_dim=embed_dim,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=vision_cfg.get("layers", _layer_count(state, "visual.transformer.resblocks.")),
            num_attention_heads=vision_heads,
            image_size=grid * patch,
            patch_size=patch,
            hidden_act=act,
            layer_norm_eps=1e-5,
            projection_dim=embed_dim,
        ),
    )
    return config, out


# ------------------------------------------------------------------------------------------ loading
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _resolve(source: str, patterns: Sequence[str], wanted: Sequence[str], what: str, hint: str) -> Path:
    """A local file/folder, or the snapshot of a hub id holding one of ``wanted`` (cache first).

    A hub id is looked up in the Hugging Face cache (``local_files_only``); when the cached snapshot
    lacks all of ``wanted``, it is downloaded unless ``HF_HUB_OFFLINE`` is set. Any failure raises
    :class:`RewardWeightsMissing` naming ``wanted`` and ending with ``hint``.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    looked_for = " or ".join(wanted)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise RewardWeightsMissing(
            f"{what} not found: {source} does not exist (neither a local folder/file nor a hub id 'owner/name'); {hint}"
        )
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(text, allow_patterns=list(patterns), local_files_only=True))
        if any((cached / name).is_file() for name in wanted):
            return cached
    except Exception:  # not cached (LocalEntryNotFoundError), or an unusable cache entry
        pass
    if _offline():
        raise RewardWeightsMissing(
            f"{what} not found: looked for {looked_for} of the hub repo {text} in the Hugging Face cache, "
            f"and HF_HUB_OFFLINE is set (no download); {hint}"
        )
    try:
        return Path(snapshot_download(text, allow_patterns=list(patterns)))
    except Exception as error:
        raise RewardWeightsMissing(
            f"{what} not found: cannot download {looked_for} from the hub repo {text} ({error}); {hint}"
        ) from error


def _scorer_hint(spec: ScorerSpec) -> str:
    option = f" ({spec.option} for 'engine align train')" if spec.option else ""
    return f"download {spec.files[-1]} from the hub repo {spec.source} or pass a local folder or file{option}"


def _weights_file(location: Path, spec: ScorerSpec, source: str) -> Path:
    if location.is_file():
        return location
    for name in spec.files:
        if (location / name).is_file():
            return location / name
    raise RewardWeightsMissing(
        f"{spec.label} weights not found: looked for {' or '.join(spec.files)} in {location} (from {source}); "
        f"{_scorer_hint(spec)}"
    )


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def load_tokenizer(source: Optional[Union[str, Path]] = None):
    """The CLIP BPE tokenizer from a folder or hub id (default: the LAION ViT-H/14 one).

    Raises:
        RewardWeightsMissing: no ``tokenizer.json`` nor ``vocab.json`` + ``merges.txt`` found.
    """
    from transformers import CLIPTokenizer

    source = str(source or DEFAULT_TOKENIZER)
    hint = (
        f"download the tokenizer files ({', '.join(TOKENIZER_FILES[:3])}) of the hub repo {DEFAULT_TOKENIZER} or "
        "pass a local folder holding them (--clip-tokenizer for 'engine align train')"
    )
    folder = _resolve(source, TOKENIZER_FILES, ("tokenizer.json", "vocab.json"), "CLIP tokenizer", hint)
    if folder.is_file():
        folder = folder.parent
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not has_bpe and not (folder / "tokenizer.json").is_file():
        raise RewardWeightsMissing(
            f"CLIP tokenizer not found: looked for tokenizer.json or vocab.json + merges.txt in {folder} "
            f"(from {source}); {hint}"
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

    A converter of foreign formats (the hub's open_clip / transformers weights of DFN-CLIP, HPS v2.1,
    PickScore): the ``CLIPScorer`` it returns follows the contract (``save_pretrained`` /
    ``CLIPScorer.from_pretrained``, which also reads the default model's caption scorer).

    Args:
        name: "dfn-clip", "hpsv2.1" or "pickscore".
        source: a folder of the default model's caption scorer (``caption_scorer.json``, see
            ``engine.teachers.caption``: loaded as it is, with its own tokenizer, for any ``name``), a folder holding the weights file (and ``open_clip_config.json`` / ``config.json``), the
            weights file itself, or a hub id (Hugging Face cache first, then a download unless
            ``HF_HUB_OFFLINE`` is set). open_clip weights without ``open_clip_config.json`` next to them
            get the scorer's known architecture facts (activation) and shape inference.
        tokenizer: a tokenizer object, or a folder / hub id of one (default: the LAION ViT-H/14 one).
        device, dtype: where and in which precision the model runs (scores are float32).

    Raises:
        ValueError: unknown scorer name, or weights that do not fit the architecture.
        RewardWeightsMissing: weights or tokenizer not found (the message names the file and source).
    """
    from transformers import CLIPConfig, CLIPModel

    from engine.models.checkpoint import CheckpointError, read_state_dict

    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    if source is not None and (Path(str(source)).expanduser() / CAPTION_SCORER_FILE).is_file():
        # the default model's caption scorer (engine.teachers.caption) stands in for any CLIP-family scorer
        return CLIPScorer.from_pretrained(Path(str(source)).expanduser(), device=device, dtype=dtype)
    spec = SCORERS[name]
    source = str(source or spec.source)
    patterns = [*spec.files, "open_clip_config.json", "config.json"]
    location = _resolve(source, patterns, spec.files, f"{spec.label} weights", _scorer_hint(spec))
    weights = _weights_file(location, spec, source)
    if spec.fmt == "transformers" and not (weights.parent / "config.json").is_file():
        raise RewardWeightsMissing(
            f"{spec.label} config not found: looked for config.json next to {weights} (from {source}); "
            f"{_scorer_hint(spec)}"
        )
    try:
        state = read_state_dict(weights)
    except CheckpointError as error:
        raise ValueError(f"{spec.label}: {error}") from error
    if spec.fmt == "open_clip":
        config_file = weights.parent / "open_clip_config.json"
        if config_file.is_file():
            open_clip_config = json.loads(config_file.read_text(encoding="utf-8"))
        else:
            open_clip_config = {"model_cfg": {"quick_gelu": spec.quick_gelu}}
        try:
            config, state = openclip_to_transformers(state, open_clip_config)
        except ValueError as error:
            raise ValueError(f"{spec.label} weights in {weights}: {error}") from error
    else:
        config = CLIPConfig.from_pretrained(str(weights.parent))
    model = CLIPModel(config)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{spec.label} weights in {weights} do not fit a CLIP model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state, strict=False)
    tok = tokenizer if not isinstance(tokenizer, (type(None), str, Path)) else load_tokenizer(tokenizer)
    scorer = CLIPScorer(
        model.to(dtype), tok, name=name, image_size=config.vision_config.image_size, crop=spec.crop, output=spec.output
    )
    return scorer.to(device)
