"""VGGT's camera head: iterative refinement of the 9-value pose encoding of every view.

Official computation (``vggt/heads/camera_head.py``), from the last aggregator tap (B, S, P', 2C):

1. t = ``token_norm``(camera token of every view) -> (B, S, 2C); t stays fixed across iterations.
2. For each of ``num_iterations`` iterations:
   * ``inp = embed_pose(empty_pose_tokens)`` on the first, ``embed_pose(pred.detach())`` afterwards, where
     ``pred`` is the raw (pre-activation) accumulated encoding;
   * ``shift, scale, gate = poseLN_modulation(inp).chunk(3)`` (SiLU then Linear);
   * ``x = gate * (adaln_norm(t) * (1 + scale) + shift) + t`` (adaln_norm: LayerNorm without affine, eps 1e-6);
   * ``x = trunk(x)`` (blocks attending across the S views of a scene, no RoPE, no qk-norm);
   * ``pred = pred + pose_branch(trunk_norm(x))`` (``pred = delta`` on the first iteration);
   * append ``activate_pose(pred)`` (translation and quaternion linear, fields of view ReLU).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from engine.models.config import CameraHeadConfig
from engine.models.layers import Block, Mlp
from engine.models.pose_encoding import activate_pose

POSE_DIM = 9


class CameraHead(nn.Module):
    """Keys: empty_pose_tokens, trunk.{i}.*, token_norm, trunk_norm, embed_pose, poseLN_modulation.1, pose_branch."""

    def __init__(self, config: CameraHeadConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim_in
        self.trunk = nn.Sequential(
            *[
                Block(dim, config.num_heads, mlp_ratio=config.mlp_ratio, init_values=config.init_values)
                for _ in range(config.trunk_depth)
            ]
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)

    def forward(
        self, aggregated_tokens_list: list[Optional[Tensor]], num_iterations: Optional[int] = None
    ) -> list[Tensor]:
        """Taps (last entry (B, S, P', 2C)) -> list of ``num_iterations`` activated encodings (B, S, 9)."""
        tokens = aggregated_tokens_list[-1]
        if tokens is None:
            raise ValueError("the camera head needs the last aggregator layer's tokens")
        pose_tokens = self.token_norm(tokens[:, :, 0])
        iterations = self.config.num_iterations if num_iterations is None else num_iterations
        return self.refine(pose_tokens, iterations)

    def refine(self, pose_tokens: Tensor, num_iterations: int) -> list[Tensor]:
        """Normalised camera tokens (B, S, 2C) -> activated encodings after each iteration."""
        b, s, _ = pose_tokens.shape
        pred: Optional[Tensor] = None
        results = []
        for _ in range(num_iterations):
            if pred is None:
                module_input = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                # Detached in place, as upstream: later iterations do not backpropagate into earlier ones.
                pred = pred.detach()
                module_input = self.embed_pose(pred)
            shift, scale, gate = self.poseLN_modulation(module_input).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(pose_tokens) * (1 + scale) + shift) + pose_tokens
            x = self.trunk(x)
            delta = self.pose_branch(self.trunk_norm(x))
            pred = delta if pred is None else pred + delta
            results.append(activate_pose(pred, self.config.trans_act, self.config.quat_act, self.config.fl_act))
        return results
