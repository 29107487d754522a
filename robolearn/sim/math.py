"""Batched rotation helpers in torch. Quaternions are MuJoCo's (w, x, y, z)."""

from __future__ import annotations

import torch

__all__ = ["quat_rotate", "quat_rotate_inverse", "yaw_quat", "sample_uniform", "grid_points", "yaw_points_to_world"]


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors `v` [N, 3] from body to world by unit quaternions `q` [N, 4]."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * torch.linalg.cross(xyz, v, dim=-1)
    return v + w * t + torch.linalg.cross(xyz, t, dim=-1)


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate world vectors `v` [N, 3] into the body frame of `q` [N, 4]."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * torch.linalg.cross(xyz, v, dim=-1)
    return v - w * t + torch.linalg.cross(xyz, t, dim=-1)


def yaw_quat(yaw: torch.Tensor) -> torch.Tensor:
    """Quaternions [N, 4] of a rotation by `yaw` [N] about z."""
    half = 0.5 * yaw
    zeros = torch.zeros_like(yaw)
    return torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], dim=-1)


def sample_uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform samples in [low, high) on the generator's device."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def grid_points(size: tuple[float, float], resolution: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """[K, 2] (x, y) of a grid `size` = (x extent, y extent) m centered on 0, every `resolution` m, x-major (the
    scan patterns around a base: height scan, occupancy scan)."""
    nx, ny = (int(round(s / resolution)) + 1 for s in size)
    xs = torch.linspace(-size[0] / 2, size[0] / 2, nx, device=device)
    ys = torch.linspace(-size[1] / 2, size[1] / 2, ny, device=device)
    return torch.cartesian_prod(xs, ys)


def yaw_points_to_world(base_xy: torch.Tensor, heading: torch.Tensor, points: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """World (x [N, K], y [N, K]) of `points` [K, 2] given in each base's yaw frame (base at `base_xy` [N, 2],
    heading `heading` [N] rad)."""
    cos, sin = heading.cos().unsqueeze(1), heading.sin().unsqueeze(1)
    px, py = points[:, 0], points[:, 1]
    return base_xy[:, :1] + cos * px - sin * py, base_xy[:, 1:2] + sin * px + cos * py
