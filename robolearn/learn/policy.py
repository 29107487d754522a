"""Deployable policies: `reset()`, `act(obs) -> action`, `act_chunk(obs) -> [H, A]`, one robot (env) at a time.

A `Policy` owns the state that a deployed policy carries across calls: its observation history (the last
`history` frames, oldest first; a fresh start repeats the first frame, as the deploy runtime does) and, for a
chunked policy, the queue of actions left from its last chunk. Its model (`graph()`) is stateless: stacked
frames [B, history * frame_dim] -> actions [B, A], or chunks [B, horizon, A]; that graph is what
`robolearn.export.export_policy` writes to ONNX, so the bundle behaves as the Policy does.

`obs` is one frame of the task's `policy` observation group (the terms scaled, as the bundle declares them).
A chunked policy runs its model on the first call and then every `chunk.execute` calls, executing the first
`execute` actions of each chunk (Diffusion Policy: horizon 16, execute 8); frames are recorded on every call,
so the history is current whenever the model runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from robolearn.errors import ConfigError

__all__ = ["Chunk", "Policy", "ActorPolicy"]


@dataclass(frozen=True)
class Chunk:
    horizon: int  # actions per chunk
    execute: int  # actions executed from each chunk before the model runs again
    interpolation: str = "hold"  # hold | linear: joint targets between two consecutive actions of a chunk

    def __post_init__(self) -> None:
        if self.horizon < 1 or not 1 <= self.execute <= self.horizon:
            raise ConfigError(f"chunk: need 1 <= execute <= horizon, got execute {self.execute}, "
                              f"horizon {self.horizon}")
        if self.interpolation not in ("hold", "linear"):
            raise ConfigError(f"chunk.interpolation: expected hold or linear, got {self.interpolation!r}")


class Policy(ABC):
    """A deployable policy (see the module doc). Subclasses give the stateless `graph()`."""

    def __init__(self, *, frame_dim: int, action_dim: int, history: int = 1, chunk: Chunk | None = None) -> None:
        if history < 1:
            raise ConfigError(f"policy history must be >= 1, got {history}")
        self.frame_dim, self.action_dim, self.history, self.chunk = frame_dim, action_dim, history, chunk
        self._frames: deque[torch.Tensor] = deque(maxlen=history)
        self._queue: deque[torch.Tensor] = deque()
        self.model_calls = 0

    @abstractmethod
    def graph(self) -> nn.Module:
        """x [B, history * frame_dim] -> [B, action_dim], or [B, horizon, action_dim] for a chunked policy."""

    @property
    def obs_dim(self) -> int:
        return self.history * self.frame_dim

    def reset(self) -> None:
        """A new episode: forget the history and any queued actions."""
        self._frames.clear()
        self._queue.clear()

    def _push(self, obs: torch.Tensor) -> torch.Tensor:
        frame = torch.as_tensor(obs, dtype=torch.float32).reshape(-1)
        if frame.numel() != self.frame_dim:
            raise ConfigError(f"policy: expected an observation frame of {self.frame_dim} values, got {frame.numel()}")
        if not self._frames:
            self._frames.extend([frame] * self.history)
        else:
            self._frames.append(frame)
        return torch.cat(tuple(self._frames)).unsqueeze(0)

    @torch.no_grad()
    def act_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """Record the frame and run the model: [horizon, action_dim] ([1, action_dim] for an unchunked policy).
        Leaves the action queue alone."""
        out = self.graph()(self._push(obs))[0]
        self.model_calls += 1
        return out if self.chunk is not None else out.unsqueeze(0)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The action [action_dim] to apply now."""
        if self.chunk is None:
            return self.act_chunk(obs)[0]
        if self._queue:
            self._push(obs)
        else:
            self._queue.extend(self.act_chunk(obs)[: self.chunk.execute])
        return self._queue.popleft()


class _MeanActor(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.act_mean(x)


class ActorPolicy(Policy):
    """A trained actor (ActorCritic or distilled Student): its deterministic action (`act_mean`) on stacked
    frames, normalizer included."""

    def __init__(self, model: nn.Module) -> None:
        if getattr(model, "reads_privileged", False):
            raise ConfigError("this policy is a privileged teacher (its actor reads simulator-only state); "
                              "distil it into a deployable student first")
        model.eval()
        history = int(getattr(model, "history", 1))
        self.model = model
        self._graph = _MeanActor(model)
        with torch.no_grad():
            action_dim = self._graph(torch.zeros(1, model.actor_dim)).shape[-1]
        super().__init__(frame_dim=model.actor_dim // history, action_dim=action_dim, history=history)

    def graph(self) -> nn.Module:
        return self._graph
