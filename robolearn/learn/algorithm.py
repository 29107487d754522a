"""The `Algorithm` interface: one learning method, run by the shared `Runner` (rsl_rl's split of method and loop).

An algorithm owns its models, optimizer and storage; the Runner owns the loop around it (collection, budgets,
logging, progress, checkpoints, resume, interruption, summary, evaluation). Per iteration the Runner calls, for an
algorithm that collects experience (`collects = True`: PPO, distillation students, ...):

    for _ in range(steps_per_env):
        actions = algorithm.act(obs)                    # [N, A] on the task's device
        obs, reward, cost, terminated, truncated, info = task.step(actions)
        algorithm.process_env_step(obs, reward, cost, terminated, truncated, info)
    algorithm.compute_returns(obs)                      # e.g. bootstrap values, GAE
    stats = algorithm.update()                          # {"loss/...": float, ...}

and for an offline algorithm (`collects = False`: learning from a dataset) only `stats = algorithm.update()`.
`act` and `process_env_step` run under `torch.inference_mode()`; `update` runs with gradients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Algorithm"]


class Algorithm(ABC):
    """Subclasses set `checkpoint_format` (the `format` field of their checkpoints, read by `load_policy`)."""

    checkpoint_format: ClassVar[str]
    collects: ClassVar[bool] = True  # False: an offline algorithm (no environment steps in training)
    # What the progress bar and the plain log line show: (label, key in update()'s stats or the Runner's).
    progress_metric: ClassVar[tuple[str, str]] = ("reward", "train/mean_return")

    @abstractmethod
    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Actions [N, A] for the task's observation groups; remembers what `process_env_step` will store."""

    @abstractmethod
    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        """Store the transition of the last `act` (`obs` is the next observation, after auto-resets; `cost` the
        task's safety cost, zeros when it declares none)."""

    def compute_returns(self, obs: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional hook
        """After the rollout, before `update` (e.g. bootstrap the last values and compute advantages)."""

    @abstractmethod
    def update(self) -> dict[str, float]:
        """One learning step on what was stored; returns statistics to log (floats, read once)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (weights, optimizer, schedules, generators)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output (raises CheckpointError on a mismatch)."""

    @abstractmethod
    def deployable(self) -> nn.Module:
        """The policy that evaluation and export run: `act_mean(x)`, `actor_input(obs)`, `history`."""

    def summary(self, stats: dict[str, float]) -> dict[str, Any]:
        """Fields of the run's summary.json beyond the Runner's own (`stats`: the last iteration's)."""
        return {}
