"""Pure-PyTorch Gaussian rasterizer with gsplat's conventions, differentiable on any device.

Design
------
1. Projection, culling, SH colours (``projection.py``, ``sh.py``) are plain autograd code. The
   visible Gaussians of a view are sorted front to back by camera z (stable, so ties keep the
   input order like gsplat's radix sort) and packed into a feature table, one row per Gaussian.
2. Binning (no autograd): each Gaussian is listed in every ``TILE_SIZE`` x ``TILE_SIZE`` tile its
   screen box touches (gsplat's opacity-aware box, which bounds exactly where alpha can reach
   1/255, so nothing is lost). One stable sort of the entries by tile yields per-tile lists in
   compositing order.
3. Compositing (``_TileCompositor``, a custom autograd Function): tiles with similar list lengths
   are processed side by side (``TILES_PER_CHUNK``), walking their lists in segments of
   ``SEGMENT_LENGTH`` entries as dense (tiles, entries, pixels) tensors small enough to stay in the
   CPU cache. log(alpha) is a quadratic in the pixel position, so one matmul evaluates a segment;
   the transmittance is a cumulative product along the list; gsplat's early stop (a Gaussian whose
   inclusion would bring T to <= 1e-4 is not composited, nor anything behind it) is a mask on the
   inclusive transmittance; colour and depth are a batched matmul of the weights with the entries'
   colours. A tile leaves the walk when its list ends or all its pixels are stopped (gsplat's
   per-tile early exit). The backward pass walks the segments in reverse, re-evaluating one at a
   time from the transmittance recorded in front of it, and applies the closed-form gradients (what
   the Gaussians behind an entry contribute is a reverse cumulative sum). Memory is the feature
   table, the tile lists, the per-segment transmittances (1/SEGMENT_LENGTH of the evaluated
   entries) and one segment's temporaries.

Nothing of size N x H x W is ever built.

Deviations from gsplat, all at the level of float rounding: gsplat also skips a pair when rounding
makes ``0.5 d^T conic d`` slightly negative (possible only within rounding distance of a centre),
this backend does not; the expanded polynomial for log(alpha) and the final transmittance taken as
``T - sum(weights)`` round differently from gsplat's direct per-pixel evaluation (about 1e-6
relative in float32; float64 inputs are computed in float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.render.output import RenderOutput
from engine.render.projection import ALPHA_THRESHOLD, covariance_3d, project_gaussians
from engine.render.sh import sh_to_color
from engine.scene import Cameras, GaussianScene

MAX_ALPHA = 0.999  # gsplat 1.5 clamps alpha at 0.999 (the original 3DGS rasterizer uses 0.99)
MIN_TRANSMITTANCE = 1e-4  # a Gaussian whose inclusion brings T to <= this is not composited
TILE_SIZE = 4  # pixels per tile side; results do not depend on it, only speed does
SEGMENT_LENGTH = 32  # list entries evaluated at once per tile; finished tiles drop out in between
TILES_PER_CHUNK = 256  # tiles processed side by side: (256, 32, 16) = 131k entries per dense segment

# Rows of the transposed per-Gaussian feature table.
MEAN_X, MEAN_Y, CONIC_A, CONIC_B, CONIC_C, OPACITY, DEPTH = range(7)
SHADE = slice(6, 10)  # depth, r, g, b: the quantities that are alpha-blended
NUM_FEATURES = 10


def rasterize_torch(
    scene: GaussianScene,
    cameras: Cameras,
    background: Tensor,
    near_plane: float,
    far_plane: float,
    sh_degree: int,
) -> RenderOutput:
    """Renders ``scene`` from every camera.

    Args:
        scene: N Gaussians (any float dtype / device).
        cameras: V cameras; converted to the scene's dtype and device.
        background: (3,) colour in the scene's dtype and device.
        near_plane, far_plane: camera-z culling range.
        sh_degree: SH degree to evaluate, at most ``scene.sh_degree``.

    Returns:
        RenderOutput with (V, H, W, 3) rgb, (V, H, W) alpha and (V, H, W) expected depth.
    """
    dtype, device = scene.dtype, scene.device
    world_to_camera = cameras.world_to_camera.to(device=device, dtype=dtype)
    intrinsics = cameras.intrinsics.to(device=device, dtype=dtype)
    centers = cameras.centers.to(device=device, dtype=dtype)
    width, height = cameras.width, cameras.height

    opacities = scene.opacities
    covariances = covariance_3d(scene.rotations, scene.log_scales)
    projected = project_gaussians(
        scene.means, covariances, opacities, world_to_camera, intrinsics, width, height, near_plane, far_plane
    )

    images, alphas, depths = [], [], []
    for view in range(len(cameras)):
        visible_ids = projected.visible[view].nonzero().squeeze(1)
        front_to_back = torch.sort(projected.depths[view, visible_ids].detach(), stable=True).indices
        order = visible_ids[front_to_back]  # (M,) Gaussian ids in compositing order

        # index_select rather than [] indexing: its backward (index_add) is much faster on a CPU.
        means2d = projected.means2d[view].index_select(0, order)
        colors = sh_to_color(
            scene.sh.index_select(0, order), scene.means.index_select(0, order) - centers[view], sh_degree
        )
        features = torch.cat(
            [
                means2d,
                projected.conics[view].index_select(0, order),
                opacities.index_select(0, order)[:, None],
                projected.depths[view].index_select(0, order)[:, None],
                colors,
            ],
            dim=1,
        ).T  # (NUM_FEATURES, M), rows MEAN_X ... b
        boxes = pixel_boxes(means2d.detach(), projected.radii[view].index_select(0, order), width, height)
        bins = bin_to_tiles(boxes, width, height)
        shade_tiles, transmittance_tiles = _TileCompositor.apply(features, bins)

        shade = bins.tiles_to_image(shade_tiles)  # (H, W, 4)
        transmittance = bins.tiles_to_image(transmittance_tiles[..., None])[..., 0]
        alpha = 1.0 - transmittance
        images.append(shade[..., 1:] + transmittance[..., None] * background)
        alphas.append(alpha)
        # gsplat's "ED": accumulated depth over accumulated alpha, which is 0 where alpha is 0.
        depths.append(shade[..., 0] / alpha.clamp_min(1e-10))

    return RenderOutput(rgb=torch.stack(images), alpha=torch.stack(alphas), depth=torch.stack(depths))


def pixel_boxes(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    """Inclusive pixel ranges whose centres lie within mean +- radius, clipped to the image.

    Args:
        means2d: (M, 2) projected centres; radii: (M, 2) integer half-sizes.

    Returns:
        (M, 4) int64 (u_first, u_last, v_first, v_last); empty ranges have last < first.
    """
    radii = radii.to(means2d.dtype)
    # Pixel u has its centre at u + 0.5. Clamping in floating point first keeps huge boxes
    # (a Gaussian right in front of the camera) from overflowing the integer conversion.
    u_first = torch.ceil(means2d[:, 0] - radii[:, 0] - 0.5).clamp(0, width)
    u_last = torch.floor(means2d[:, 0] + radii[:, 0] - 0.5).clamp(-1, width - 1)
    v_first = torch.ceil(means2d[:, 1] - radii[:, 1] - 0.5).clamp(0, height)
    v_last = torch.floor(means2d[:, 1] + radii[:, 1] - 0.5).clamp(-1, height - 1)
    return torch.stack([u_first, u_last, v_first, v_last], dim=1).to(torch.int64)


@dataclass
class TileBins:
    """Per-tile lists of Gaussians (rows of a front-to-back feature table).

    Attributes:
        tile_size: tile side in pixels.
        tiles_x, tiles_y: tile grid size.
        width, height: image size.
        num_gaussians: rows of the feature table (M); index M is used as an empty slot.
        gaussian_of_entry: (E,) feature rows, grouped by tile, front to back within a tile.
        tile_first: (T,) index of each tile's first entry; tile_count: (T,) entries per tile.
    """

    tile_size: int
    tiles_x: int
    tiles_y: int
    width: int
    height: int
    num_gaussians: int
    gaussian_of_entry: Tensor
    tile_first: Tensor
    tile_count: Tensor

    @property
    def num_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def pixels_per_tile(self) -> int:
        return self.tile_size * self.tile_size

    def chunks(self) -> Iterator[Tensor]:
        """Non-empty tile ids, longest lists first, in chunks of ``TILES_PER_CHUNK`` (similar lengths)."""
        nonempty = (self.tile_count > 0).nonzero().squeeze(1)
        by_length = nonempty[torch.sort(self.tile_count[nonempty], descending=True, stable=True).indices]
        yield from by_length.split(TILES_PER_CHUNK)

    def segment(self, tiles: Tensor, start: int, length: int) -> Tensor:
        """(n, length) feature rows at list positions start..start+length-1 of the tiles; past the
        end of a tile's list the row is ``num_gaussians`` (the empty slot)."""
        slots = torch.arange(start, start + length, device=tiles.device)
        entry = (self.tile_first[tiles, None] + slots).clamp_max(len(self.gaussian_of_entry) - 1)
        inside = slots < self.tile_count[tiles, None]
        return torch.where(inside, self.gaussian_of_entry[entry], self.num_gaussians)

    def tile_centres(self, tiles: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(n,) tile ids -> x and y pixel coordinates of the tile centres, each (n,)."""
        half = self.tile_size / 2
        return (tiles % self.tiles_x * self.tile_size).to(dtype) + half, (tiles // self.tiles_x * self.tile_size).to(
            dtype
        ) + half

    def monomials(self, dtype: torch.dtype) -> Tensor:
        """(6, P) monomials (1, qx, qy, qx^2, qx qy, qy^2) of the pixel-centre offsets q from the tile centre."""
        local = torch.arange(self.pixels_per_tile, device=self.tile_count.device)
        qx = (local % self.tile_size).to(dtype) + 0.5 - self.tile_size / 2
        qy = (local // self.tile_size).to(dtype) + 0.5 - self.tile_size / 2
        return torch.stack([torch.ones_like(qx), qx, qy, qx * qx, qx * qy, qy * qy])

    def tiles_to_image(self, per_tile: Tensor) -> Tensor:
        """(T, tile_size^2, C) tile-major values -> (H, W, C) image (differentiable)."""
        size = self.tile_size
        grid = per_tile.reshape(self.tiles_y, self.tiles_x, size, size, -1).permute(0, 2, 1, 3, 4)
        return grid.reshape(self.tiles_y * size, self.tiles_x * size, -1)[: self.height, : self.width]


def bin_to_tiles(boxes: Tensor, width: int, height: int, tile_size: int = TILE_SIZE) -> TileBins:
    """Lists every Gaussian in each tile its pixel box touches, front to back within a tile.

    Args:
        boxes: (M, 4) pixel boxes from ``pixel_boxes``, rows in front-to-back order.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    num_gaussians = len(boxes)
    ids = ((boxes[:, 1] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 2])).nonzero().squeeze(1)
    tile_x0, tile_x1 = boxes[ids, 0] // tile_size, boxes[ids, 1] // tile_size
    tile_y0, tile_y1 = boxes[ids, 2] // tile_size, boxes[ids, 3] // tile_size
    span_x = tile_x1 - tile_x0 + 1
    counts = span_x * (tile_y1 - tile_y0 + 1)
    owner = torch.repeat_interleave(torch.arange(len(ids), device=boxes.device), counts)
    offset = torch.arange(len(owner), device=boxes.device) - (torch.cumsum(counts, 0) - counts)[owner]
    tile = (tile_y0[owner] + offset // span_x[owner]) * tiles_x + tile_x0[owner] + offset % span_x[owner]
    # Entries were generated Gaussian by Gaussian, i.e. front to back, so a stable sort by tile
    # alone yields each tile's list in compositing order (32-bit keys sort about twice as fast).
    tile_of_entry, by_tile = torch.sort(tile.to(torch.int32), stable=True)
    tile_count = torch.bincount(tile_of_entry, minlength=tiles_x * tiles_y)
    return TileBins(
        tile_size=tile_size,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        width=width,
        height=height,
        num_gaussians=num_gaussians,
        gaussian_of_entry=ids[owner[by_tile]],
        tile_first=torch.cumsum(tile_count, 0) - tile_count,
        tile_count=tile_count,
    )


@dataclass
class _SegmentState:
    """One segment's quantities: per-entry (n, S) local geometry and (n, S, P) per-pixel values."""

    mean_x: Tensor  # (n, S) mean relative to the tile centre
    mean_y: Tensor
    alpha: Tensor  # min(MAX_ALPHA, o exp(-sigma)), 0 where below 1/255
    one_minus_alpha: Tensor
    before: Tensor  # transmittance in front of the entry
    kept: Tensor | None  # 1.0 where composited, 0.0 past the transmittance cut; None: all kept
    weight: Tensor  # alpha * before * kept


def _just_below(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` below ``value``."""
    return float(torch.nextafter(torch.tensor(value, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)))


def _evaluate_segment(
    columns: Tensor, tiles: Tensor, bins: TileBins, start_transmittance: Tensor, alive: Tensor
) -> _SegmentState:
    """Alpha, transmittance and blending weights of one segment of the tiles' lists.

    log(alpha) = log(o) - 0.5 d^T conic d is a quadratic polynomial in the pixel position, so with
    pixel offsets q from the tile centre it is ``sum_j k_j m_j(q)`` for the six monomials
    m = (1, qx, qy, qx^2, qx qy, qy^2): one matmul of per-entry coefficients (n, S, 6) with the
    monomials of a tile's pixels (6, P), instead of a dozen elementwise passes.

    Args:
        columns: (NUM_FEATURES, n, S) gathered feature rows of the segment.
        tiles: (n,) tile ids.
        start_transmittance: (n, P) transmittance in front of the segment.
        alive: (n, P) 1.0 for pixels not yet stopped by the transmittance cut, else 0.0.
    """
    centre_x, centre_y = bins.tile_centres(tiles, columns.dtype)
    mean_x = columns[MEAN_X] - centre_x[:, None]
    mean_y = columns[MEAN_Y] - centre_y[:, None]
    a, b, c = columns[CONIC_A], columns[CONIC_B], columns[CONIC_C]
    # Empty list slots have opacity 0: log(0) = -inf gives alpha = 0.
    constant = torch.log(columns[OPACITY]) - (
        0.5 * a * mean_x * mean_x + b * mean_x * mean_y + 0.5 * c * mean_y * mean_y
    )
    coefficients = torch.stack(
        [constant, a * mean_x + b * mean_y, b * mean_x + c * mean_y, -0.5 * a, -b, -0.5 * c], dim=-1
    )
    alpha = torch.matmul(coefficients, bins.monomials(columns.dtype)).exp_()  # (n, S, P), before the clamp
    # threshold(x, t, 0) keeps x > t, so t just below 1/255 keeps exactly gsplat's alpha >= 1/255.
    # (Float masks through threshold/sign throughout: boolean masks are several times slower on a CPU.)
    F.threshold_(alpha, _just_below(ALPHA_THRESHOLD, alpha.dtype), 0.0).clamp_max_(MAX_ALPHA)

    one_minus_alpha = torch.rsub(alpha, 1.0)
    through = torch.cumprod(one_minus_alpha, dim=1).mul_(start_transmittance[:, None, :])  # inclusive
    before = torch.empty_like(through)
    before[:, 0] = start_transmittance
    before[:, 1:] = through[:, :-1]
    weight = before * alpha
    kept = None
    if float(alive.min()) < 1.0 or float(through[:, -1].min()) <= MIN_TRANSMITTANCE:
        # gsplat stops before the entry that would bring T to <= MIN_TRANSMITTANCE; T only
        # decreases along the list, so this masks a suffix of each pixel's list.
        kept = F.threshold(through, MIN_TRANSMITTANCE, 0.0).sign_().mul_(alive[:, None, :])
        weight.mul_(kept)
    return _SegmentState(mean_x, mean_y, alpha, one_minus_alpha, before, kept, weight)


def _add_to_rows(target: Tensor, rows: Tensor, values: Tensor) -> None:
    """``target[rows] += values`` in place, for distinct ``rows`` (the active tiles of a chunk).

    Not ``index_add_``: on a CPU, torch's ``index_add_`` along the first dimension of a tensor of more
    than one dimension runs parallel work that stalls when the cores are busy with other processes
    (torch 2.13, 2 threads, on the shared 2-core development machine: 80 ms for 256 rows of 64 values,
    against 0.02 ms for this gather, add and scatter; one call per segment made it half of a fly-through
    render's time). One-dimensional ``index_add_`` does not have the problem.
    """
    target.index_copy_(0, rows, target.index_select(0, rows).add_(values))


def _gather_columns(table: Tensor, lists: Tensor) -> Tensor:
    """(C, M + 1) table, (n, L) row ids -> (C, n, L); one 1-D gather per row is the fastest on CPU."""
    flat = lists.flatten()
    return torch.stack([row.index_select(0, flat) for row in table]).reshape(len(table), *lists.shape)


@dataclass
class _SegmentStart:
    """What the backward pass needs to re-evaluate one segment: which tiles, where, and the state in front."""

    active: Tensor  # (n_a,) positions in the chunk's tile list
    start: int  # list position of the segment's first entry
    transmittance: Tensor  # (n_a, P)
    alive: Tensor  # (n_a, P)


class _TileCompositor(torch.autograd.Function):
    """Front-to-back compositing of one view's tiles, with a hand-written backward.

    Inputs: features (NUM_FEATURES, M) rows MEAN_X ... b for Gaussians in front-to-back order,
    bins (TileBins). Outputs: shade (T, P, 4) = sum_i w_i (z_i, r_i, g_i, b_i) per tile pixel and
    transmittance (T, P), with w_i = alpha_i T_i and T_i the transmittance in front of entry i.

    Each chunk of tiles walks its lists in segments of ``SEGMENT_LENGTH``; a tile leaves once its
    list is exhausted or all its pixels hit the transmittance cut (gsplat's per-tile early exit).
    The forward pass records the transmittance in front of every segment, so the backward pass can
    walk the segments in reverse, re-evaluating one at a time, with bounded memory.
    """

    @staticmethod
    def forward(ctx, features: Tensor, bins: TileBins):
        table = torch.cat([features, features.new_zeros(NUM_FEATURES, 1)], dim=1)  # empty slot: opacity 0
        pixels = bins.pixels_per_tile
        shade = features.new_zeros(bins.num_tiles, pixels, 4)
        transmittance = features.new_ones(bins.num_tiles, pixels)
        walks = []
        for tiles in bins.chunks():
            chunk_shade = features.new_zeros(len(tiles), pixels, 4)
            chunk_transmittance = features.new_ones(len(tiles), pixels)
            alive = features.new_ones(len(tiles), pixels)
            active = torch.arange(len(tiles), device=tiles.device)
            counts = bins.tile_count[tiles]
            segments = []
            start = 0
            while len(active):
                active_tiles = tiles[active]
                lists = bins.segment(active_tiles, start, SEGMENT_LENGTH)
                columns = _gather_columns(table, lists)
                start_transmittance = chunk_transmittance[active]
                start_alive = alive[active]
                state = _evaluate_segment(columns, active_tiles, bins, start_transmittance, start_alive)
                segments.append(_SegmentStart(active, start, start_transmittance, start_alive))

                blended = torch.bmm(state.weight.transpose(1, 2), columns[SHADE].permute(1, 2, 0))
                _add_to_rows(chunk_shade, active, blended)
                # The weights telescope: T_after = T_before - sum_i w_i.
                chunk_transmittance.index_copy_(0, active, start_transmittance - state.weight.sum(dim=1))
                start += SEGMENT_LENGTH
                if state.kept is not None:
                    alive.index_copy_(0, active, state.kept[:, -1])
                    unfinished = (alive[active].amax(dim=1) > 0) & (counts[active] > start)
                else:
                    unfinished = counts[active] > start
                active = active[unfinished]
            shade.index_copy_(0, tiles, chunk_shade)
            transmittance.index_copy_(0, tiles, chunk_transmittance)
            walks.append((tiles, segments))
        ctx.bins, ctx.walks = bins, walks
        ctx.save_for_backward(table, transmittance)
        return shade, transmittance

    @staticmethod
    def backward(ctx, grad_shade: Tensor, grad_transmittance: Tensor):
        table, transmittance = ctx.saved_tensors
        bins = ctx.bins
        grad_table = torch.zeros_like(table)
        monomials = bins.monomials(table.dtype)
        # dL/dT_final * T_final: what the background behind the last entry is worth to a pixel.
        behind = grad_transmittance * transmittance
        for tiles, segments in ctx.walks:
            chunk_pixel_grad = grad_shade.index_select(0, tiles)  # (n, P, 4)
            # sum_{k behind} w_k gain_k + behind, per pixel, accumulated from the back.
            later_total = behind.index_select(0, tiles)
            for segment in reversed(segments):
                active = segment.active
                active_tiles = tiles[active]
                lists = bins.segment(active_tiles, segment.start, SEGMENT_LENGTH)
                columns = _gather_columns(table, lists)
                state = _evaluate_segment(columns, active_tiles, bins, segment.transmittance, segment.alive)
                _accumulate_segment_grads(
                    grad_table, lists, columns, state, chunk_pixel_grad[active], later_total, active, monomials
                )
        return grad_table[:, :-1], None


def _accumulate_segment_grads(
    grad_table: Tensor,
    lists: Tensor,
    columns: Tensor,
    state: _SegmentState,
    pixel_grad: Tensor,
    later_total: Tensor,
    active: Tensor,
    monomials: Tensor,
) -> None:
    """Adds one segment's gradients to ``grad_table`` and its weighted gains to ``later_total``.

    Args:
        grad_table: (NUM_FEATURES, M + 1) gradient of the feature table, updated in place.
        lists, columns, state: the segment as evaluated by ``_evaluate_segment``.
        pixel_grad: (n_a, P, 4) dL/d(shade) of the segment's tiles.
        later_total: (n_chunk, P) per pixel of the chunk: sum of w_k gain_k over the entries behind
            this segment plus dL/dT_final T_final; updated in place (rows ``active``).
    """
    entry_shade = columns[SHADE].permute(1, 2, 0)  # (n, S, 4)
    # gain_i = dL/dw_i per pixel; the blended quantities get sum_pixels w_i dL/d(shade).
    gain = torch.bmm(entry_shade, pixel_grad.transpose(1, 2))  # (n, S, P)
    grad_entry_shade = torch.bmm(state.weight, pixel_grad)  # (n, S, 4)

    # Every w_k behind entry i and T_final carry the factor (1 - alpha_i):
    # dL/dalpha_i = T_i gain_i - (sum_{k>i} w_k gain_k + dL/dT_final T_final) / (1 - alpha_i).
    weighted_gain = state.weight * gain
    segment_total = weighted_gain.sum(dim=1)  # (n, P)
    behind_segment = later_total.index_select(0, active)
    later = torch.cumsum(weighted_gain, dim=1).neg_().add_((segment_total + behind_segment)[:, None, :])
    _add_to_rows(later_total, active, segment_total)
    later.div_(state.one_minus_alpha)
    grad_alpha = gain.mul_(state.before).sub_(later)
    if state.kept is not None:
        grad_alpha.mul_(state.kept)
    # dL/dlog(alpha) = alpha dL/dalpha below the clamp; the clamp at MAX_ALPHA passes nothing.
    grad_log_alpha = grad_alpha.mul_(state.alpha)
    if float(state.alpha.max()) >= MAX_ALPHA:
        # 1.0 where alpha < MAX_ALPHA (i.e. -alpha > -MAX_ALPHA), else 0.0.
        grad_log_alpha.mul_(F.threshold(state.alpha.neg(), -MAX_ALPHA, 0.0).sign_().neg_())
    grad_coefficients = torch.matmul(grad_log_alpha, monomials.T)  # (n, S, 6)

    g_const, g_x, g_y, g_xx, g_xy, g_yy = grad_coefficients.unbind(-1)
    mx, my = state.mean_x, state.mean_y
    a, b, c = columns[CONIC_A], columns[CONIC_B], columns[CONIC_C]
    # Chain rule through the coefficients of _evaluate_segment (the offsets move with the mean).
    entry_grads = torch.stack(
        [
            -g_const * (a * mx + b * my) + g_x * a + g_y * b,
            -g_const * (b * mx + c * my) + g_x * b + g_y * c,
            -0.5 * g_const * mx * mx + g_x * mx - 0.5 * g_xx,
            -g_const * mx * my + g_x * my + g_y * mx - g_xy,
            -0.5 * g_const * my * my + g_y * my - 0.5 * g_yy,
            g_const / columns[OPACITY].clamp_min(ALPHA_THRESHOLD),
            *grad_entry_shade.unbind(-1),
        ]
    )  # (NUM_FEATURES, n, S)
    flat_lists = lists.flatten()
    for row, values in zip(grad_table, entry_grads):
        row.index_add_(0, flat_lists, values.flatten())
