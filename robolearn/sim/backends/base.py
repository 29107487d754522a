"""Backend interface: one simulator's model and batched state. Tasks own everything else."""

from __future__ import annotations

from abc import ABC, abstractmethod

import mujoco
import numpy as np
import torch

__all__ = ["Backend"]


class Backend(ABC):
    """Batched physics for `num_envs` copies of one compiled model.

    Every tensor is `[num_envs, ...]` on `self.device`. `qpos`/`qvel` are views of the live state: tasks
    read them after `step` and write them (through `set_state`) on reset.
    """

    name: str = ""

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str = "cpu") -> None:
        self.model = model
        self.num_envs = num_envs
        self.device = torch.device(device)

    @property
    @abstractmethod
    def qpos(self) -> torch.Tensor:
        """[num_envs, nq] generalized positions (float64 on CPU backends)."""

    @property
    @abstractmethod
    def qvel(self) -> torch.Tensor:
        """[num_envs, nv] generalized velocities."""

    @abstractmethod
    def step(self, ctrl: torch.Tensor) -> torch.Tensor:
        """Advance `ctrl.shape[1]` physics steps with ctrl `[num_envs, nsub, nu]` (one row per substep).

        Returns sensor data of every substep, `[num_envs, nsub, nsensordata]`.
        """

    @abstractmethod
    def set_state(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Overwrite the state of `env_ids` (a reset)."""

    @abstractmethod
    def set_model_field(self, field: str, env_ids: torch.Tensor, values: np.ndarray) -> None:
        """Per-env model parameters (domain randomization): `values` is `[len(env_ids), *model.<field>.shape]`."""

    @abstractmethod
    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Recompute derived quantities after `set_state`; returns sensor data `[len(env_ids), nsensordata]`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads or device memory."""
