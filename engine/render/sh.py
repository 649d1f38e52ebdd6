"""Real spherical harmonics up to degree 3, in the basis and sign convention of 3DGS and gsplat.

The colour of a Gaussian seen along the unit direction ``d`` (from the camera centre towards the
Gaussian) is ``max(sum_k coeffs[k] * Y_k(d) + 0.5, 0)``; the ``+ 0.5`` and the clamp follow gsplat,
which clamps after adding the offset.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.scene import MAX_SH_DEGREE, SH_C0

SH_C1 = 0.4886025119029199
# Degree 2: xy, yz, 2z^2 - x^2 - y^2, xz, x^2 - y^2.
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
# Degree 3: y(3x^2 - y^2), xyz, y(4z^2 - x^2 - y^2), z(2z^2 - 3x^2 - 3y^2), x(4z^2 - x^2 - y^2),
# z(x^2 - y^2), x(x^2 - 3y^2).
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(directions: Tensor, degree: int) -> Tensor:
    """Evaluates the (degree+1)^2 real SH basis functions.

    Args:
        directions: (..., 3) view directions; normalised here, so any non-zero length works.
        degree: 0..3.

    Returns:
        (..., (degree+1)^2) basis values, in the coefficient order of 3DGS / gsplat.
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    d = torch.nn.functional.normalize(directions, dim=-1)
    x, y, z = d.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(basis, dim=-1)


def sh_to_color(coeffs: Tensor, directions: Tensor, degree: int) -> Tensor:
    """Colours of Gaussians from their SH coefficients, clamped like gsplat.

    Args:
        coeffs: (..., K, 3) coefficients with K >= (degree+1)^2; only the first (degree+1)^2 are used.
        directions: (..., 3) view directions (mean - camera centre), broadcastable against coeffs[..., 0, :].
        degree: SH degree to evaluate, 0..3.

    Returns:
        (..., 3) colours ``max(SH(dir) + 0.5, 0)``.
    """
    num_used = (degree + 1) ** 2
    if coeffs.shape[-2] < num_used:
        raise ValueError(f"SH degree {degree} needs {num_used} coefficients, got {coeffs.shape[-2]}")
    if degree == 0:
        # The DC term does not depend on the direction; skipping the basis keeps the graph small.
        value = SH_C0 * coeffs[..., 0, :]
    else:
        basis = sh_basis(directions, degree)
        value = (basis.unsqueeze(-1) * coeffs[..., :num_used, :]).sum(dim=-2)
    return torch.clamp_min(value + 0.5, 0.0)
