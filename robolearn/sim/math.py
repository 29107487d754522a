"""Batched rotation helpers in torch. Quaternions are MuJoCo's (w, x, y, z)."""

from __future__ import annotations

import torch

__all__ = ["quat_rotate", "quat_rotate_inverse", "yaw_quat", "sample_uniform"]


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
