"""The camera encoder of an image-based diffusion policy: a ResNet-18-style network with GroupNorm, written in torch.

As in Diffusion Policy (Chi et al.): BatchNorm is replaced by GroupNorm (the EMA of the weights and small batches
do not go with batch statistics), the global average pool by a spatial softmax (the expected image position of
each of `keypoints` feature maps), and training sees random crops (`crop`) of the image while acting sees the
center crop. Input: uint8 images [..., 3, H, W] (0..255); output: features [..., feature_dim].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ImageEncoder", "SpatialSoftmax", "resize_frames"]


def resize_frames(frames: torch.Tensor | np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Camera frames [N, H, W, 3] uint8 (as recorded or rendered) -> [N, 3, size[0], size[1]] uint8 (area
    averaging): what the encoder reads, the same in training and when acting."""
    x = torch.as_tensor(frames)
    x = x.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != (int(size[0]), int(size[1])):
        x = F.interpolate(x, size=(int(size[0]), int(size[1])), mode="area")
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(cout)
        self.skip = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (x if self.skip is None else self.skip(x)))


class SpatialSoftmax(nn.Module):
    """[B, C, H, W] -> [B, 2 K]: a 1x1 conv to K maps, then each map's softmax-weighted mean (x, y) in [-1, 1]."""

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.conv(x)
        b, k, h, w = maps.shape
        weights = maps.flatten(2).softmax(dim=-1).reshape(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)


class ImageEncoder(nn.Module):
    """ResNet-18 layout (a stem of stride 4, then 4 stages of 2 basic blocks) with `channels` per stage, GroupNorm,
    a spatial softmax and a linear layer to `feature_dim`. Unlike ResNet-18, the last stage does not halve the
    resolution: small robot-camera crops (64 x 88 -> a 4 x 6 map) keep enough positions for the spatial softmax."""

    def __init__(self, *, crop: Sequence[int], channels: Sequence[int] = (32, 64, 128, 256), keypoints: int = 32,
                 feature_dim: int = 64) -> None:
        super().__init__()
        self.crop = (int(crop[0]), int(crop[1]))
        c0 = channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 7, 2, 3, bias=False), _norm(c0), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], c0
        for i, c in enumerate(channels):  # stride 1, 2, 2, 1: the last stage keeps its resolution (total 16)
            stages += [_BasicBlock(cin, c, 2 if i in (1, 2) else 1), _BasicBlock(c, c, 1)]
            cin = c
        self.stages = nn.Sequential(*stages)
        self.pool = SpatialSoftmax(cin, keypoints)
        self.out = nn.Linear(2 * keypoints, feature_dim)
        self.feature_dim = feature_dim

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = self.crop
        if self.training:  # one random crop per image
            top = torch.randint(0, h - ch + 1, (x.shape[0],), device=x.device)
            left = torch.randint(0, w - cw + 1, (x.shape[0],), device=x.device)
            rows = top[:, None] + torch.arange(ch, device=x.device)
            cols = left[:, None] + torch.arange(cw, device=x.device)
            return x[torch.arange(x.shape[0], device=x.device)[:, None, None, None],
                     torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        x = self._crop(x).float() * (2.0 / 255.0) - 1.0
        return self.out(self.pool(self.stages(self.stem(x)))).reshape(*lead, self.feature_dim)
