"""Observation history: the last H policy frames per env, stacked oldest first, as the deploy runtime does.

`FrameHistory.push(frames, reset)` appends one frame [N, P] per env and returns [N, H * P]; envs flagged in
`reset` [N] (their episode just restarted, so `frames` is the first frame of a new episode) are refilled with
that frame, exactly like `hardware.observations.ObservationBuilder` on a fresh start. `PolicyInput` turns task
observations into a policy's input (its `actor_input`, stacked when `policy.history > 1`) for evaluation,
export and distillation alike.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FrameHistory", "PolicyInput"]


class FrameHistory:
    def __init__(self, num_envs: int, frame_dim: int, length: int, device: torch.device | str = "cpu") -> None:
        if length < 1:
            raise ValueError(f"history length must be >= 1, got {length}")
        self.length, self.frame_dim = length, frame_dim
        self.buffer = torch.zeros(num_envs, length, frame_dim, device=device)
        self._started = False

    def push(self, frames: torch.Tensor, reset: torch.Tensor | None = None) -> torch.Tensor:
        """Append `frames` [N, P]; `reset` [N] bool refills those envs. The first push fills every env."""
        if not self._started:
            self.buffer[:] = frames.unsqueeze(1)
            self._started = True
        else:
            self.buffer = torch.cat([self.buffer[:, 1:], frames.unsqueeze(1)], dim=1)
            if reset is not None:  # no host sync on reset.any(): one where over the batch
                self.buffer = torch.where(reset.view(-1, 1, 1), frames.unsqueeze(1), self.buffer)
        return self.buffer.flatten(1)


class PolicyInput:
    """Callable (obs, reset) -> the policy's input [N, history * frame]; for history 1 the frame itself."""

    def __init__(self, policy: nn.Module, num_envs: int, device: torch.device | str = "cpu") -> None:
        self.policy = policy
        length = policy.history
        self.history = FrameHistory(num_envs, policy.actor_dim // length, length, device) if length > 1 else None

    def __call__(self, obs: dict[str, torch.Tensor], reset: torch.Tensor | None = None) -> torch.Tensor:
        frame = self.policy.actor_input(obs)
        return frame if self.history is None else self.history.push(frame, reset)
