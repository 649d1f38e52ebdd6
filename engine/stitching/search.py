"""Find the layer k* of a 3D network whose activations are most linearly predictable from a video latent.

For every candidate layer k the stitching conv S_k (a linear map from unfolded latent patches to the
layer's patch tokens) is fitted by least squares and scored by its mean squared error; k* = argmin MSE
(VIST3A, method.md §2). Unlike the released script, which keeps every feature of every layer in memory,
the fit here streams the clips once and keeps only sufficient statistics:

    shared by all layers:  n, Σx, XᵀX                       (D_in, D_in)
    per layer k:           Σy_k, Σ‖y_k‖², XᵀY_k             (D_in, D_k)

all in float64, so memory is O(D_in·(D_in + Σ_k D_k)) whatever the number of clips, and both the fit
and its exact MSE come from these moments alone (no second pass).

The fit is ridge least squares with an unpenalised bias: W solves the *centred* normal equations
``(XcᵀXc + λI) W = XcᵀYc`` (ridge λ on the diagonal of the summed, centred XᵀX; default 1e-4), and the
bias is the mean residual ``b = mean(y − Wᵀx)``. Centring makes the bias exactly the least-squares
intercept (with λ -> 0 this is the ordinary least-squares fit of an affine map).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.io.atomic import atomic_write
from engine.stitching.layer_spec import ConvSpec, StitchingLayer, format_spec, latent_patches, parse_spec
from engine.training.distributed import DistributedContext

log = logging.getLogger(__name__)

REPORT_JSON = "layer_search.json"
REPORT_PLOT = "layer_search_mse.png"
WEIGHTS_FILE = "stitching_layer.safetensors"


class LatentEncoder(Protocol):
    """What the search needs from a video VAE (``engine.stitching.vae.VideoVAEAdapter`` is one)."""

    def encode(self, frames: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """(B, T, 3, H, W) frames in [0, 1] -> (B, C, T_lat, h, w) latent; the search asks for the raw
        VAE latent (``normalized=False``), the space the stitched decoder reads."""
        ...


ActivationSource = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""``activations(frames (B, T, 3, H, W) in [0, 1]) -> one tensor per candidate layer``, each
(B, T', P_prefix + h'·w', D): per frame, the prefix tokens (cls / registers / camera) first, then the
patch tokens in row-major (row, col) order. The source resizes/normalises frames as its network needs."""


class NormalEquations:
    """Streaming moments for affine least-squares fits of several targets Y_k on one design X.

    Moments are kept of *shifted* data x − x₀, y_k − y₀ₖ (x₀, y₀ₖ: means of the first batch). The fit and
    its error only depend on centred moments, which the shift leaves unchanged, but it keeps the sums
    small and so avoids cancellation when features have a large common offset (as transformer tokens do).
    """

    def __init__(self, in_features: int, out_features: Sequence[int], dtype: torch.dtype = torch.float64, device=None):
        self.in_features = in_features
        self.out_features = list(out_features)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = 0
        self.x_shift: torch.Tensor | None = None
        self.y_shifts: list[torch.Tensor] | None = None
        self.xx = torch.zeros(in_features, in_features, dtype=dtype, device=self.device)
        self.x_sum = torch.zeros(in_features, dtype=dtype, device=self.device)
        self.xy = [torch.zeros(in_features, d, dtype=dtype, device=self.device) for d in self.out_features]
        self.y_sum = [torch.zeros(d, dtype=dtype, device=self.device) for d in self.out_features]
        self.yy = [torch.zeros((), dtype=dtype, device=self.device) for _ in self.out_features]

    def update(self, x: torch.Tensor, ys: Sequence[torch.Tensor]) -> None:
        """Add rows: x (n, D_in) and, for every target k, ys[k] (n, D_k)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be (n, {self.in_features}), got {tuple(x.shape)}")
        if len(ys) != len(self.out_features):
            raise ValueError(f"expected {len(self.out_features)} targets, got {len(ys)}")
        x = x.detach().to(device=self.device, dtype=self.dtype)
        if self.x_shift is None:
            self.x_shift = x.mean(0)
        x = x - self.x_shift
        self.xx.addmm_(x.T, x)
        self.x_sum += x.sum(0)
        first_batch = self.y_shifts is None
        if first_batch:
            self.y_shifts = []
        for k, y in enumerate(ys):
            if y.shape != (x.shape[0], self.out_features[k]):
                raise ValueError(f"target {k} must be ({x.shape[0]}, {self.out_features[k]}), got {tuple(y.shape)}")
            # one target at a time, so the float64 copy of only one layer's tokens is alive
            y = y.detach().to(device=self.device, dtype=self.dtype)
            if first_batch:
                self.y_shifts.append(y.mean(0))
            y = y - self.y_shifts[k]
            self.xy[k].addmm_(x.T, y)
            self.y_sum[k] += y.sum(0)
            self.yy[k] += y.square().sum()
        self.count += x.shape[0]

    def all_reduce(self, context: DistributedContext) -> None:
        """Makes every process hold the moments of all processes' rows (a data-parallel search).

        Each process's moments are first moved to rank 0's shifts (a shift by d adds d·Σxᵀ + Σx·dᵀ + n·d·dᵀ
        to XᵀX, and likewise for the other moments), then summed. Rank 0 reads its first batch first, so a
        search over the same clips gives the single-process moments up to summation order. Every process
        must hold rows.
        """
        if not context.is_distributed:
            return
        self._check_fitted()
        x_shift = context.broadcast(self.x_shift.cpu()).to(self.device)
        y_shifts = [shift.to(self.device) for shift in context.broadcast([s.cpu() for s in self.y_shifts])]
        n = self.count
        dx = self.x_shift - x_shift
        self.xx += torch.outer(dx, self.x_sum) + torch.outer(self.x_sum, dx) + n * torch.outer(dx, dx)
        for k, y_shift in enumerate(y_shifts):
            dy = self.y_shifts[k] - y_shift
            self.xy[k] += torch.outer(dx, self.y_sum[k]) + torch.outer(self.x_sum, dy) + n * torch.outer(dx, dy)
            self.yy[k] += 2 * dy @ self.y_sum[k] + n * dy.square().sum()
            self.y_sum[k] += n * dy
        self.x_sum += n * dx
        self.x_shift, self.y_shifts = x_shift, y_shifts
        for tensor in (self.xx, self.x_sum, *self.xy, *self.y_sum, *self.yy):
            context.all_reduce_sum_(tensor)
        count = torch.tensor([n], dtype=torch.float64, device=self.device)
        self.count = int(context.all_reduce_sum_(count).item())

    def _check_fitted(self) -> None:
        if self.count == 0:
            raise RuntimeError("no rows were accumulated")

    def solve(self, k: int, ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
        """Ridge fit of target k: W (D_in, D_k), b (D_k) minimising Σ‖y − Wᵀx − b‖² + ridge·‖W‖²."""
        self._check_fitted()
        n = self.count
        x_mean = self.x_sum / n
        y_mean = self.y_sum[k] / n
        centred_xx = self.xx - n * torch.outer(x_mean, x_mean)
        centred_xy = self.xy[k] - n * torch.outer(x_mean, y_mean)
        centred_xx.diagonal().add_(ridge)
        weight = torch.linalg.solve(centred_xx, centred_xy)
        # bias = mean residual, first in shifted coordinates, then moved back to the data's own
        shifted_bias = y_mean - weight.T @ x_mean
        bias = shifted_bias + self.y_shifts[k] - weight.T @ self.x_shift
        return weight, bias

    def sse(self, k: int, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """Σ over rows of ‖y_k − Wᵀx − b‖², exactly, from the moments (any W, b; not only the fit).

        With shifted data x_s = x − x₀, y_s = y − y₀ the residual is y_s − Wᵀx_s − b_s, b_s = b + Wᵀx₀ − y₀, so
        SSE = Σ‖y_s‖² − 2 tr(Wᵀ X_sᵀY_s) + tr(Wᵀ X_sᵀX_s W) − 2 b_sᵀΣy_s + 2 b_sᵀ Wᵀ Σx_s + n‖b_s‖².
        """
        self._check_fitted()
        weight = weight.to(device=self.device, dtype=self.dtype)
        bias = bias.to(device=self.device, dtype=self.dtype)
        shifted_bias = bias + weight.T @ self.x_shift - self.y_shifts[k]
        sse = (
            self.yy[k]
            - 2 * (weight * self.xy[k]).sum()
            + (weight * (self.xx @ weight)).sum()
            - 2 * shifted_bias @ self.y_sum[k]
            + 2 * shifted_bias @ (weight.T @ self.x_sum)
            + self.count * shifted_bias.square().sum()
        )
        return float(sse)

    def mse(self, k: int, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """Mean over rows and channels of the squared residual (rounding below 0 is clipped to 0)."""
        return max(self.sse(k, weight, bias), 0.0) / (self.count * self.out_features[k])

    def target_variance(self, k: int) -> float:
        """Mean per-channel variance of target k (the MSE of predicting its mean)."""
        self._check_fitted()
        centred = self.yy[k] - self.y_sum[k].square().sum() / self.count
        return max(float(centred), 0.0) / (self.count * self.out_features[k])


@dataclass
class LayerSearchResult:
    """Outcome of :func:`find_stitch_layer`.

    ``state_dict`` holds the chosen layer's stitching conv as {"weight": (out, C, *kernel), "bias": (out,)}
    in float64 (``StitchingLayer.load_state_dict`` casts); ``relative_mse`` = MSE / variance of the
    layer's tokens, a scale-free companion to the MSE (the selection uses the MSE, as the paper does).
    """

    layer_names: list[str]
    mse: list[float]
    relative_mse: list[float]
    best_index: int
    spec: ConvSpec
    in_channels: int
    state_dict: dict[str, torch.Tensor]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best_layer(self) -> str:
        return self.layer_names[self.best_index]

    def stitching_layer(self, dtype: torch.dtype = torch.float32) -> StitchingLayer:
        """A StitchingLayer carrying the fitted conv of the chosen layer."""
        layer = StitchingLayer(self.spec, self.in_channels, dtype=dtype)
        layer.load_state_dict(self.state_dict)
        return layer

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no weights); a relative MSE of constant tokens (zero variance) is null."""
        return {
            "best_layer": self.best_layer,
            "best_index": self.best_index,
            "spec": format_spec(self.spec),
            "in_channels": self.in_channels,
            "layers": [
                {"name": name, "mse": mse, "relative_mse": rel if math.isfinite(rel) else None}
                for name, mse, rel in zip(self.layer_names, self.mse, self.relative_mse)
            ],
            "settings": self.settings,
        }

    def write_report(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the JSON summary, a PNG plot of MSE per layer and the chosen conv (safetensors), atomically."""
        from safetensors.torch import save

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"json": out_dir / REPORT_JSON, "plot": out_dir / REPORT_PLOT, "weights": out_dir / WEIGHTS_FILE}
        with atomic_write(paths["json"], "w") as file:
            file.write(json.dumps(self.to_dict(), indent=2))
        with atomic_write(paths["plot"]) as file:
            self._save_plot(file)
        tensors = {name: value.detach().to(torch.float32).contiguous().cpu() for name, value in self.state_dict.items()}
        metadata = {"spec": format_spec(self.spec), "layer": self.best_layer, "in_channels": str(self.in_channels)}
        with atomic_write(paths["weights"]) as file:
            file.write(save(tensors, metadata=metadata))
        return paths

    def _save_plot(self, file) -> None:
        # Figure + Agg canvas directly: no pyplot, no global backend switch, safe in any process
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(max(6.0, 0.35 * len(self.layer_names) + 2), 4.0), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        positions = range(len(self.layer_names))
        axes.plot(positions, self.mse, marker="o", color="tab:blue", label="MSE")
        axes.plot([self.best_index], [self.mse[self.best_index]], marker="*", markersize=16, color="tab:red",
                  linestyle="none", label=f"k* = {self.best_layer}")  # fmt: skip
        axes.set_xticks(list(positions))
        axes.set_xticklabels(self.layer_names, rotation=60, ha="right", fontsize=8)
        axes.set_ylabel("MSE (latent -> tokens)")
        axes.set_title(f"Stitching layer search, {format_spec(self.spec)}")
        if min(self.mse) > 0:
            axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(file, format="png")


def _tokens_to_rows(tokens: torch.Tensor, prefix: int, grid: tuple[int, int, int], batch: int, name: str):
    """(B, T', prefix + h'·w', D) layer tokens -> (B·T'·h'·w', D) rows aligned with the latent patches."""
    frames, height, width = grid
    expected = (batch, frames, prefix + height * width)
    if tokens.ndim != 4 or tuple(tokens.shape[:3]) != expected:
        raise ValueError(
            f"activations of layer '{name}' must be (B, T', prefix + h'*w', D) = ({batch}, {frames}, "
            f"{prefix} + {height}*{width}, D) to match the stitching conv's output, got {tuple(tokens.shape)}"
        )
    return tokens[:, :, prefix:, :].reshape(-1, tokens.shape[-1])


def _frames_and_latent(item: Any, vae: LatentEncoder | None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(item, torch.Tensor):
        if vae is None:
            raise ValueError("clips yield frames only, so a vae is needed to encode them (or yield (frames, latent))")
        frames = item
        latent = vae.encode(frames, normalized=False)  # stitching reads the raw VAE latent
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        frames, latent = item
    else:
        raise TypeError(f"a clip must be a frames tensor or a (frames, latent) pair, got {type(item).__name__}")
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    if latent.ndim != 5 or latent.shape[0] != frames.shape[0]:
        raise ValueError(f"latent must be (B, C, T_lat, h, w) with B={frames.shape[0]}, got {tuple(latent.shape)}")
    return frames, latent


def _prefix_counts(num_prefix_tokens: int | Sequence[int], num_layers: int) -> list[int]:
    """One prefix-token count per layer (an int stands for all layers)."""
    if isinstance(num_prefix_tokens, int):
        return [num_prefix_tokens] * num_layers
    prefixes = list(num_prefix_tokens)
    if len(prefixes) != num_layers:
        raise ValueError(f"num_prefix_tokens has {len(prefixes)} entries for {num_layers} layers")
    return prefixes


def _check_token_widths(layer_names: Sequence[str], widths: Sequence[int], spec: ConvSpec) -> None:
    for name, width in zip(layer_names, widths):
        if width != spec.out_channels:
            raise ValueError(
                f"layer '{name}' has {width}-d tokens but spec {format_spec(spec)} outputs {spec.out_channels} channels"
            )


def _accumulate_moments(clips, activations, layer_names, prefixes, spec, vae, accumulate_device):
    """One pass over the clips: (normal equations or None if no clip came, clips seen, clip shape record)."""
    moments: NormalEquations | None = None
    num_clips = 0
    clip_shape: dict[str, Any] = {}
    for item in clips:
        frames, latent = _frames_and_latent(item, vae)
        batch, num_frames = frames.shape[:2]
        layer_tokens = list(activations(frames))
        if len(layer_tokens) != len(layer_names):
            raise ValueError(f"activations returned {len(layer_tokens)} layers, expected {len(layer_names)}")
        patches = latent_patches(latent, spec, num_frames)  # (B, T', h', w', D_in)
        grid = tuple(patches.shape[1:4])
        rows = patches.reshape(-1, patches.shape[-1])
        if moments is None:
            widths = [tokens.shape[-1] for tokens in layer_tokens]
            _check_token_widths(layer_names, widths, spec)
            device = accumulate_device if accumulate_device is not None else latent.device
            moments = NormalEquations(rows.shape[1], widths, device=device)
            clip_shape = {"frames": num_frames, "latent_shape": list(latent.shape[1:]), "token_grid": list(grid)}
        elif rows.shape[1] != moments.in_features:
            raise ValueError(f"latent channels changed between clips: {tuple(latent.shape)}")
        targets = [
            _tokens_to_rows(tokens, prefix, grid, batch, name)
            for tokens, prefix, name in zip(layer_tokens, prefixes, layer_names)
        ]
        moments.update(rows, targets)
        num_clips += batch
        if num_clips % 50 < batch:
            log.info("layer search: %d clips, %d rows", num_clips, moments.count)
    return moments, num_clips, clip_shape


def _sum_over_processes(moments: NormalEquations | None, num_clips: int, context: DistributedContext) -> int:
    """Sums the moments over a data-parallel run's processes (in place); returns the total clip count."""
    totals = context.sum({"empty": moments is None, "clips": num_clips})
    if totals["empty"]:
        raise ValueError(
            f"{int(totals['empty'])} of {context.world_size} processes got no clip: "
            "give at least as many clips as processes"
        )
    moments.all_reduce(context)
    return int(totals["clips"])


def _fit_every_layer(moments: NormalEquations, num_layers: int, ridge: float):
    """(MSE per layer, MSE relative to the target variance per layer, (best index, weight, bias))."""
    mse, relative_mse = [], []
    best: tuple[int, torch.Tensor, torch.Tensor] | None = None
    for k in range(num_layers):
        weight, bias = moments.solve(k, ridge)
        mse.append(moments.mse(k, weight, bias))
        variance = moments.target_variance(k)
        relative_mse.append(mse[-1] / variance if variance > 0 else math.nan)
        if best is None or mse[-1] < mse[best[0]]:
            best = (k, weight, bias)
    return mse, relative_mse, best


def find_stitch_layer(
    clips: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    activations: ActivationSource,
    layer_names: Sequence[str],
    spec: ConvSpec | str,
    *,
    vae: LatentEncoder | None = None,
    num_prefix_tokens: int | Sequence[int] = 0,
    ridge: float = 1e-4,
    accumulate_device: torch.device | str | None = None,
    out_dir: str | Path | None = None,
    extra_settings: Mapping[str, Any] | None = None,
    context: DistributedContext | None = None,
) -> LayerSearchResult:
    """Fit a stitching conv for every candidate layer in one pass over the clips and pick the best.

    Args:
        clips: iterable of frames (B, T, 3, H, W) in [0, 1] (encoded with ``vae``), or of
            (frames, latent) pairs with a precomputed normalised latent (B, C, T_lat, h, w). Read once.
        activations: ``activations(frames) -> [tokens_k]``, one (B, T', P_k, D) tensor per candidate layer
            (see :data:`ActivationSource`); T'/h'/w' must match the conv's output grid.
        layer_names: names of the candidate layers, in the order ``activations`` returns them.
        spec: stitching conv geometry; its out_channels must equal every layer's token width D.
        vae: encoder for clips given as frames.
        num_prefix_tokens: tokens to drop at the start of each frame (cls/registers/camera), one int for
            all layers or one per layer.
        ridge: added to the diagonal of the centred XᵀX (a sum over all rows).
        accumulate_device: where the float64 moments live (default: the first latent's device).
        out_dir: if given, the report (JSON, PNG, safetensors) is written there.
        extra_settings: recorded as-is in the report's settings (e.g. model paths).
        context: a data-parallel run (``engine.training.distributed``): each process passes its own share of the
            clips, the moments are summed over processes before the fit, every process returns the same
            result and only rank 0 writes the report.
    Returns:
        LayerSearchResult with per-layer MSE, k*, and the fitted conv of k*.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    layer_names = list(layer_names)
    if not layer_names:
        raise ValueError("layer_names is empty: name at least one candidate layer")
    prefixes = _prefix_counts(num_prefix_tokens, len(layer_names))
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")

    start = time.perf_counter()
    with torch.no_grad():
        moments, num_clips, clip_shape = _accumulate_moments(
            clips, activations, layer_names, prefixes, spec, vae, accumulate_device
        )
    context = context or DistributedContext()
    if context.is_distributed:
        num_clips = _sum_over_processes(moments, num_clips, context)
    if moments is None:
        raise ValueError("clips yielded nothing: the search needs at least one clip")
    in_channels = moments.in_features // math.prod(spec.kernel)

    mse, relative_mse, (best_index, weight, bias) = _fit_every_layer(moments, len(layer_names), ridge)
    state_dict = {"weight": weight.T.reshape(spec.weight_shape(in_channels)).contiguous(), "bias": bias}

    settings = {
        "spec": format_spec(spec),
        "ridge": ridge,
        "num_prefix_tokens": prefixes,
        "num_clips": num_clips,
        "num_rows": moments.count,
        "processes": context.world_size,
        "in_features": moments.in_features,
        "fit": "centred ridge least squares (float64 normal equations), bias = mean residual",
        "seconds": round(time.perf_counter() - start, 3),
        **clip_shape,
        **dict(extra_settings or {}),
    }
    result = LayerSearchResult(layer_names, mse, relative_mse, best_index, spec, in_channels, state_dict, settings)
    log.info("layer search: k* = %s (MSE %.6g) over %d clips", result.best_layer, mse[best_index], num_clips)
    if out_dir is not None and context.is_main:
        result.write_report(out_dir)
    return result
