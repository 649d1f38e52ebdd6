"""The default model's caption scorer: a small CLIP-style dual encoder trained on the procedural world.

The paper's quality reward uses CLIP-family scorers (DFN-CLIP, HPSv2.1, PickScore) that cannot be
downloaded here; this is their stand-in for the default model. It is a transformers ``CLIPModel`` (ViT
image tower on 64 x 64 frames, patch 8; text transformer) with a byte-level BPE ``CLIPTokenizer`` whose
vocabulary is the world's caption words (anything else is spelled by letters), trained contrastively
(CLIP's symmetric InfoNCE with a learned temperature) on frames near each scene's reference view (the
view its caption's relations refer to) and their captions.

Scorer folder (``export_caption_scorer``): transformers ``config.json`` + ``model.safetensors`` (fp16),
the tokenizer files, and ``caption_scorer.json`` (input size, crop, output). ``CLIPScorer.from_pretrained`` reads it back; ``load_scorer`` in
``engine.alignment.scorers`` recognises such a folder under any scorer name, so
``align train --dfn-clip models/default/caption_scorer`` uses it in DFN-CLIP's place; it returns a
``CLIPScorer`` (cosine score) like the others.

Data: ``build_caption_cache`` renders frames 0..V-1 of each scene's 25-view orbit at 64 x 64 (the
first frames of the 13-frame clip's path at twice its angular density) into shards; training scenes
come from the world's training split, held-out scenes from its held-out split (seeds disjoint, colour-shape
pairs never drawn for training). Held-out metric: image -> caption top-1 among ``retrieval_pool``
(32) held-out scenes, using each scene's reference view.

Data-parallel (``teacher caption train`` under torchrun / accelerate launch, :mod:`engine.training.distributed`):
every process draws the whole global batch (scenes, views, jitter), encodes its share through DDP and
all-gathers the features (with their gradients), so the contrastive loss has the negatives of the
whole batch and equals a single process's; rank 0 writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.alignment.scorers import CAPTION_SCORER_FILE, CAPTION_SCORER_KIND, CLIP_MEAN, CLIP_STD, CLIPScorer
from engine.io.atomic import atomic_directory, atomic_write
from engine.strict_config import dataclass_from_json_file
from engine.training.checkpoints import latest_checkpoint, prune_checkpoints, restore_rng, rng_state, truncate_log
from engine.training.distributed import DistributedContext, Forward

log = logging.getLogger(__name__)

SCORER_FILE = CAPTION_SCORER_FILE
SCORER_KIND = CAPTION_SCORER_KIND
TRAIN_SEED = 1402
HELDOUT_SEED = 1498
SHARD_SIZE = 250
LOG_FILE = "loss_log.jsonl"
EVAL_FILE = "eval_log.jsonl"
CONFIG_FILE = "train_config.json"


# ------------------------------------------------------------------------------------------ data
def _seeds(split: str, count: int) -> list[int]:
    from engine.data import SyntheticClipDataset

    base = TRAIN_SEED if split == "train" else HELDOUT_SEED
    dataset = SyntheticClipDataset(count, seed=base, split=split)
    return [dataset.item_seed(i) for i in range(count)]


def render_caption_sample(seed: int, views: int = 3, size: int = 64) -> tuple[Tensor, str]:
    """(views, size, size, 3) uint8 frames near the reference view, and the caption."""
    from engine.data import render_clip, synthetic_scene_and_cameras
    from engine.scene import Cameras

    scene, cameras = synthetic_scene_and_cameras(seed, 25, size, size, "orbit")
    first = Cameras(cameras.camera_to_world[:views], cameras.intrinsics[:views], width=size, height=size)
    clip = render_clip(scene, first)
    return (clip.frames * 255).round().to(torch.uint8), clip.caption


def build_caption_cache(folder, split: str, count: int, views: int = 3, size: int = 64, progress: bool = True) -> None:
    """Renders ``count`` scenes of ``split`` into ``folder/<split>/shard_<k>.pt`` (finished shards kept)."""
    from tqdm import tqdm

    folder = Path(folder) / split
    folder.mkdir(parents=True, exist_ok=True)
    seeds = _seeds(split, count)
    bar = tqdm(total=count, desc=f"rendering {split} frames", disable=not progress)
    for index, start in enumerate(range(0, count, SHARD_SIZE)):
        path = folder / f"shard_{index:04d}.pt"
        chunk = seeds[start : start + SHARD_SIZE]
        if path.is_file() and torch.load(path, weights_only=True)["seeds"] == chunk:
            bar.update(len(chunk))
            continue
        frames, captions = [], []
        for seed in chunk:
            f, c = render_caption_sample(seed, views, size)
            frames.append(f)
            captions.append(c)
            bar.update(1)
        with atomic_write(path, "wb") as f:
            torch.save({"seeds": chunk, "frames": torch.stack(frames), "captions": captions}, f)
    bar.close()


def load_caption_cache(folder, split: str, count: Optional[int] = None) -> tuple[Tensor, list[str]]:
    """(N, V, H, W, 3) uint8 frames and N captions of the cached ``split``."""
    frames, captions = [], []
    for path in sorted((Path(folder) / split).glob("shard_*.pt")):
        data = torch.load(path, weights_only=True)
        frames.append(data["frames"])
        captions.extend(data["captions"])
    if not frames:
        raise FileNotFoundError(f"no cached {split} frames in {folder}; run 'teacher caption data'")
    out = torch.cat(frames)
    if count is not None:
        out, captions = out[:count], captions[:count]
    return out, captions


# ------------------------------------------------------------------------------------------ model
def caption_words(captions: list[str]) -> list[str]:
    """The distinct lower-case words of ``captions``, sorted."""
    return sorted({w for c in captions for w in re.findall(r"[a-z]+", c.lower())})


def build_world_tokenizer(folder: Union[str, Path], words: list[str]):
    """A byte-level BPE ``CLIPTokenizer`` spelling ``words`` whole (anything else by letters), saved in
    ``folder`` (``vocab.json``, ``merges.txt`` and the tokenizer config)."""
    from transformers import CLIPTokenizer

    letters = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789,.'-") | set("".join(words)))
    vocab = {char: i for i, char in enumerate(letters)}
    for char in letters:
        vocab[char + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    seen = set()
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def caption_clip_config(vocab_size: int, image_size: int = 64, hidden: int = 128, layers: int = 3):
    """The scorer's ``CLIPConfig``: both towers ``hidden`` wide with ``layers`` layers of 4 heads."""
    from transformers import CLIPConfig

    eos = vocab_size - 1
    return CLIPConfig(
        projection_dim=hidden,
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos - 1,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=8,
            hidden_act="gelu",
        ),
    )


def make_scorer(model, tokenizer, image_size: int):
    return CLIPScorer(model, tokenizer, name="caption-scorer", image_size=image_size, crop=False, output="cosine")


def export_caption_scorer(model, tokenizer_dir: Path, directory: Path, image_size: int) -> Path:
    """Writes the scorer folder (fp16 weights) atomically (``CLIPScorer.save_pretrained``)."""
    from transformers import CLIPTokenizer

    return make_scorer(model, CLIPTokenizer.from_pretrained(str(tokenizer_dir)), image_size).save_pretrained(directory)


# ------------------------------------------------------------------------------------------ training
@dataclass
class CaptionTrainConfig:
    data_dir: str
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    hidden: int = 128
    layers: int = 3
    image_size: int = 64
    eval_every: int = 250
    save_every: int = 250
    retrieval_pool: int = 32
    heldout_scenes: int = 128
    seed: int = 0


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class CaptionTrainer:
    """Contrastive training of the caption scorer; run folder like the teachers' (resumable).
    ``context``: this process's place in a data-parallel run (default: a single process); ValueError if
    the batch cannot be split evenly over its processes."""

    def __init__(
        self, config: CaptionTrainConfig, out_dir: Path, data=None, heldout=None, context: DistributedContext = None
    ):
        from transformers import CLIPModel, CLIPTokenizer

        self.config = config
        self.context = context or DistributedContext()
        self.context.per_rank(config.batch_size)
        self.out_dir = Path(out_dir)
        self.frames, self.captions = data if data is not None else load_caption_cache(config.data_dir, "train")
        self.heldout_frames, self.heldout_captions = (
            heldout if heldout is not None else load_caption_cache(config.data_dir, "heldout", config.heldout_scenes)
        )
        self.tokenizer_dir = self.out_dir / "tokenizer"
        built = not (self.tokenizer_dir / "vocab.json").is_file()
        self.context.barrier()  # every process has looked before rank 0 writes the tokenizer
        if built and self.context.is_main:
            self.tokenizer = build_world_tokenizer(self.tokenizer_dir, caption_words(self.captions))
        self.context.barrier()
        if not (built and self.context.is_main):
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.tokenizer_dir))
        torch.manual_seed(config.seed)
        self.model = CLIPModel(
            caption_clip_config(len(self.tokenizer), config.image_size, config.hidden, config.layers)
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.ddp = self.context.wrap(Forward(self.model))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _warmup_cosine(s, config.warmup_steps, config.steps)
        )
        self.step = 0
        self._tokens: dict[str, tuple[Tensor, Tensor]] = {}

    def scorer(self):
        return make_scorer(self.model, self.tokenizer, self.config.image_size)

    def _encode_text(self, captions: list[str]) -> Tensor:
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        out = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)

    def _encode_images(
        self, frames_uint8: Tensor, augment: bool, rows: Optional[range] = None, batch: Optional[int] = None
    ) -> Tensor:
        """Normalised image features of (N, H, W, 3) uint8 frames. ``augment``: brightness / contrast
        jitter, drawn for a whole batch of ``batch`` images of which the frames are the ``rows``
        (default: the frames are the whole batch)."""
        x = frames_uint8.permute(0, 3, 1, 2).float() / 255.0
        if augment:  # brightness / contrast jitter (colour names must survive: no hue changes)
            n = x.shape[0] if rows is None else batch
            rows = slice(None) if rows is None else slice(rows.start, rows.stop)
            gain = 1 + 0.15 * (2 * torch.rand(n, 1, 1, 1, generator=self.generator) - 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            contrast = 1 + 0.15 * (2 * torch.rand(n, 1, 1, 1, generator=self.generator) - 1)
            x = ((x - mean) * contrast[rows] + mean) * gain[rows]
        if x.shape[-1] != self.config.image_size:
            x = F.interpolate(
                x, size=(self.config.image_size,) * 2, mode="bicubic", antialias=True, align_corners=False
            )
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        out = self.model.get_image_features(pixel_values=(x.clamp(0, 1) - mean) / std)
        out = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)

    def train_step(self) -> dict:
        start = time.perf_counter()
        self.model.train()
        n, views = self.frames.shape[:2]
        index = torch.randperm(n, generator=self.generator)[: self.config.batch_size]
        view = torch.randint(views, (len(index),), generator=self.generator)
        captions = [self.captions[i] for i in index.tolist()]
        if self.context.is_distributed:
            # this process encodes its rows of the global batch; the features of all rows are gathered
            # with their gradients (each process then computes the same, whole-batch loss)
            from torch.distributed.nn.functional import all_gather

            local = self.context.local_indices(len(index))
            images = self.frames[index[local.start : local.stop], view[local.start : local.stop]]

            def encode():
                return (
                    self._encode_images(images, augment=True, rows=local, batch=len(index)),
                    self._encode_text(captions[local.start : local.stop]),
                )

            image_features, text_features = (torch.cat(all_gather(f)) for f in self.ddp(encode))
        else:
            images = self.frames[index, view]
            image_features = self._encode_images(images, augment=True)
            text_features = self._encode_text(captions)
        scale = self.model.logit_scale.exp().clamp(max=100)
        logits = scale * image_features @ text_features.T
        # identical captions in a batch are positives of each other
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        targets = same / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        accuracy = float((logits.argmax(1) == torch.arange(len(index))).float().mean())
        return {
            "step": self.step,
            "loss": float(loss.detach()),
            "batch_top1": accuracy,
            "logit_scale": float(scale.detach()),
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out image -> caption top-1 among pools of ``retrieval_pool`` scenes (reference views)."""
        try:
            return retrieval_accuracy(
                self.scorer(), self.heldout_frames[:, 0], self.heldout_captions, self.config.retrieval_pool
            )
        finally:  # the scorer froze the (shared) model for scoring
            self.model.requires_grad_(True)
            self.model.train()

    def train(self, max_minutes: Optional[float] = None, progress: bool = True) -> None:
        from tqdm import tqdm

        began = time.perf_counter()
        main = self.context.is_main  # rank 0 evaluates and writes; the others train on
        progress = progress and main
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, desc="caption scorer")
        while self.step < self.config.steps:
            record = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3g}", top1=f"{record['batch_top1']:.2f}")
            if main:
                with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            done = self.step == self.config.steps
            if main and (self.step % self.config.eval_every == 0 or done):
                metrics = self.evaluate()
                with open(self.out_dir / EVAL_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": self.step, **metrics}) + "\n")
                log.info("step %d held-out: %s", self.step, json.dumps(metrics))
            if main and (self.step % self.config.save_every == 0 or done):
                self.save_checkpoint()
                plot_caption_run(self.out_dir)
            # rank 0's clock decides, so that all processes stop after the same step
            if max_minutes is not None and self.context.broadcast((time.perf_counter() - began) / 60 > max_minutes):
                if main:
                    self.save_checkpoint()
                break
        bar.close()

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        directory = self.out_dir / "checkpoints" / f"step_{self.step:08d}"
        directory.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.generator),
        }
        tensors = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_directory(directory, replace=True) as tmp:
            save_file(tensors, str(tmp / "model.safetensors"))
            torch.save(state, tmp / "state.pt")
        prune_checkpoints(directory.parent, 2)
        return directory

    def resume(self) -> bool:
        from safetensors.torch import load_file

        found = latest_checkpoint(self.out_dir)
        if found is None:
            return False
        self.model.load_state_dict(load_file(str(found / "model.safetensors")))
        state = torch.load(found / "state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        restore_rng(state["rng"], self.generator)
        if self.context.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.step)
            truncate_log(self.out_dir / EVAL_FILE, self.step)
        return True

    def export(self, directory: Path) -> Path:
        return export_caption_scorer(self.model, self.tokenizer_dir, directory, self.config.image_size)


@torch.no_grad()
def retrieval_accuracy(scorer, frames_uint8: Tensor, captions: list[str], pool: int = 32) -> dict:
    """Image -> caption top-1 within consecutive pools of ``pool`` scenes (frames (N, H, W, 3) uint8).

    Every image is scored against its pool's captions with ``scorer`` (the same cosine the reward uses);
    returns top-1 accuracy, the number of pools and the chance level 1/pool.
    """
    images = frames_uint8.permute(0, 3, 1, 2).float() / 255.0
    correct, total = 0, 0
    for start in range(0, len(captions) - pool + 1, pool):
        block = images[start : start + pool]
        texts = captions[start : start + pool]
        image_features = scorer.image_features(block)
        text_features = scorer.text_features(texts)
        best = (image_features @ text_features.T).argmax(1)
        # a caption that appears twice in a pool counts as correct for either image
        correct += sum(texts[int(b)] == texts[i] for i, b in enumerate(best))
        total += len(texts)
    if total == 0:
        raise ValueError(f"need at least {pool} held-out scenes for a retrieval pool, got {len(captions)}")
    return {"top1": correct / total, "pools": total // pool, "chance": 1 / pool}


def plot_caption_run(out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def read(name):
        path = Path(out_dir) / name
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

    records, evals = read(LOG_FILE), read(EVAL_FILE)
    if not records:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    window = max(1, len(records) // 50)
    losses = [r["loss"] for r in records]
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    axes[0].plot([r["step"] for r in records], smooth)
    axes[0].set_title("contrastive loss (moving average)")
    axes[0].set_xlabel("step")
    if evals:
        axes[1].plot([e["step"] for e in evals], [e["top1"] for e in evals], marker="o")
    axes[1].set_title("held-out image->caption top-1 (32 captions)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    with atomic_write(Path(out_dir) / "loss_curve.png", "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ CLI
def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("caption", help="the caption scorer: data, train, export, eval")
    actions = parser.add_subparsers(dest="caption_command", metavar="ACTION", required=True)

    data = actions.add_parser("data", help="render the cached frames and captions")
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("--train", type=int, default=4000)
    data.add_argument("--heldout", type=int, default=128)
    data.set_defaults(func=_run_data)

    train = actions.add_parser("train", help="train the scorer (resumable)")
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--warmup-steps", type=int, default=100)
    train.add_argument("--eval-every", type=int, default=250)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--max-minutes", type=float)
    train.add_argument("--resume", action="store_true")
    train.set_defaults(func=_run_train)

    export = actions.add_parser("export", help="write the scorer folder (fp16) from a run's newest checkpoint")
    export.add_argument("run", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=_run_export)

    evaluate = actions.add_parser("eval", help="held-out retrieval accuracy of a scorer folder")
    evaluate.add_argument("scorer", type=Path)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--scenes", type=int, default=128)
    evaluate.set_defaults(func=_run_eval)
    return parser


def _run_data(args) -> int:
    build_caption_cache(args.out, "heldout", args.heldout)
    build_caption_cache(args.out, "train", args.train)
    return 0


def _run_train(args) -> int:
    from engine.training.distributed import close_distributed, init_distributed

    context = init_distributed()
    try:
        return _train(args, context)
    finally:
        close_distributed()


def _train(args, context) -> int:
    """``teacher caption train`` in one process of a data-parallel run (or alone)."""
    torch.set_num_threads(args.threads)
    out = args.out
    if args.resume:
        config = dataclass_from_json_file(CaptionTrainConfig, out / CONFIG_FILE)
        config.steps = args.steps
    else:
        if out.exists() and any(out.iterdir()):
            log.error("%s already holds a run; pass --resume to continue it or choose another --out", out)
            return 2
        config = CaptionTrainConfig(
            data_dir=str(args.data),
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            eval_every=args.eval_every,
            seed=args.seed,
        )
    try:
        context.per_rank(config.batch_size)
    except ValueError as error:
        log.error("%s", error)
        return 2
    context.barrier()  # every process has read or checked the folder before rank 0 writes into it
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / CONFIG_FILE, "w") as f:
            f.write(json.dumps(asdict(config), indent=1))
    context.barrier()
    trainer = CaptionTrainer(config, out, context=context)
    if args.resume and trainer.resume():
        log.info("resumed %s at step %d", out, trainer.step)
    trainer.train(max_minutes=args.max_minutes)
    return 0


def _run_export(args) -> int:
    from safetensors.torch import load_file

    config = dataclass_from_json_file(CaptionTrainConfig, args.run / CONFIG_FILE)
    found = latest_checkpoint(args.run)
    if found is None:
        log.error("%s has no checkpoint to export", args.run)
        return 2
    trainer = CaptionTrainer(
        config, args.run, data=(torch.zeros(1, 1, 1, 1, 3, dtype=torch.uint8), ["a"]), heldout=([], [])
    )
    trainer.model.load_state_dict(load_file(str(found / "model.safetensors")))
    trainer.export(args.out)
    log.info("exported %s to %s", found, args.out)
    return 0


def _run_eval(args) -> int:
    scorer = CLIPScorer.from_pretrained(args.scorer)
    frames, captions = load_caption_cache(args.data, "heldout", args.scenes)
    print(json.dumps(retrieval_accuracy(scorer, frames[:, 0], captions), indent=1))
    return 0
