"""The denoiser of Diffusion Policy (Chi et al. 2023, arXiv:2303.04137): a 1-D temporal U-Net over an action chunk.

Input: a noisy chunk [B, T, A] (T: the prediction horizon), the diffusion step [B] and a condition [B, C] (the
observation horizon's frames, flattened, normalized). Output: the predicted noise [B, T, A]. Convolutions run over
time with the action dimensions as channels; every residual block is FiLM-conditioned (a per-channel scale and
bias from [step embedding, condition]); GroupNorm and Mish as in the paper. The chunk halves in time at each level
but the last, so T must be divisible by 2^(levels - 1) (16 with three levels: 16 -> 8 -> 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from robolearn.errors import ConfigError

__all__ = ["ConditionalUnet1D", "step_embedding"]


def step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of diffusion steps [B] (the Transformer's position code)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device, dtype=torch.float32) / (half - 1))
    angles = steps.float()[:, None] * freqs[None]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class _ConvNormMish(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, groups: int) -> None:
        super().__init__(nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish())


class _FiLMBlock(nn.Module):
    """conv-norm-mish, then scale * h + bias from the condition, then conv-norm-mish; a residual path."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.first = _ConvNormMish(cin, cout, kernel, groups)
        self.second = _ConvNormMish(cout, cout, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.first(x) * scale + bias
        return self.second(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """eps_theta(noisy chunk [B, T, A], step [B], condition [B, C]) -> [B, T, A]."""

    def __init__(self, action_dim: int, cond_dim: int, *, down_dims: Sequence[int] = (64, 128, 256),
                 kernel_size: int = 5, groups: int = 8, step_dim: int = 64) -> None:
        super().__init__()
        dims = [int(d) for d in down_dims]
        if not dims or any(d % groups for d in dims):
            raise ConfigError(f"diffusion.down_dims: need one or more widths divisible by groups={groups}, "
                              f"got {list(down_dims)}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"diffusion.kernel_size must be odd (same-length convolutions), got {kernel_size}")
        self.action_dim, self.cond_dim, self.levels = action_dim, cond_dim, len(dims)
        self.step_dim = step_dim
        self.step_mlp = nn.Sequential(nn.Linear(step_dim, 4 * step_dim), nn.Mish(), nn.Linear(4 * step_dim, step_dim))
        film_dim = step_dim + cond_dim
        widths = [action_dim, *dims]
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = i == len(dims) - 1
            self.down.append(nn.ModuleList([
                _FiLMBlock(cin, cout, film_dim, kernel_size, groups),
                _FiLMBlock(cout, cout, film_dim, kernel_size, groups),
                nn.Identity() if last else nn.Conv1d(cout, cout, 3, stride=2, padding=1)]))
        mid = dims[-1]
        self.mid = nn.ModuleList([_FiLMBlock(mid, mid, film_dim, kernel_size, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for cout, cin in zip(reversed(dims[:-1]), reversed(dims[1:]), strict=True):  # each undoes one halving
            self.up.append(nn.ModuleList([
                _FiLMBlock(2 * cin, cout, film_dim, kernel_size, groups),
                _FiLMBlock(cout, cout, film_dim, kernel_size, groups),
                nn.ConvTranspose1d(cout, cout, 4, stride=2, padding=1)]))
        self.head = nn.Sequential(_ConvNormMish(dims[0], dims[0], kernel_size, groups),
                                  nn.Conv1d(dims[0], action_dim, 1))

    @property
    def min_horizon_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, sample: torch.Tensor, step: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if sample.shape[1] % self.min_horizon_multiple:
            raise ConfigError(f"diffusion: the prediction horizon ({sample.shape[1]}) must be divisible by "
                              f"{self.min_horizon_multiple} with {self.levels} U-Net levels")
        step = step.expand(sample.shape[0]) if step.dim() else step.reshape(1).expand(sample.shape[0])
        film = torch.cat((self.step_mlp(step_embedding(step, self.step_dim)), cond), dim=-1)
        x = sample.transpose(1, 2)  # [B, A, T]: actions as channels, convolutions over time
        skips = []  # the output of every level below the top (the top's is not used, as in the paper's code)
        for first, second, down in self.down:
            x = second(first(x, film), film)
            skips.append(x)
            x = down(x)
        skips = skips[1:]
        for block in self.mid:
            x = block(x, film)
        for first, second, up in self.up:
            x = torch.cat((x, skips.pop()), dim=1)  # same width and length
            x = up(second(first(x, film), film))
        return self.head(x).transpose(1, 2)
