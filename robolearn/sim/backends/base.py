"""Backend interface: one simulator's model and batched state. Tasks own everything else."""

from __future__ import annotations

from abc import ABC, abstractmethod

import mujoco
import numpy as np
import torch

__all__ = ["Backend", "rows_as_ids", "rows_as_mask"]


def rows_as_ids(env_ids: torch.Tensor, *values: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, tuple]:
    """`(ids [k], values)` for backends that work env by env: indices pass through with their values; a bool mask
    [num_envs] becomes the indices of its True rows, and each value `[num_envs, ...]` those rows (numpy or torch)."""
    if env_ids.dtype != torch.bool:
        return env_ids, values
    ids = env_ids.nonzero().flatten()
    return ids, tuple(v[ids.numpy()] if isinstance(v, np.ndarray) else v[ids.to(v.device)] for v in values)


def rows_as_mask(env_ids: torch.Tensor, values: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """`(mask [num_envs], full values [num_envs, ...])` for backends that write all envs at once with `where` (no
    host sync): a mask passes through with its values; indices become a mask, and their value rows are scattered
    into a copy of `current` (the field's present value, [num_envs, ...])."""
    if env_ids.dtype == torch.bool:
        return env_ids.to(current.device), values.to(current.device, current.dtype)
    ids = env_ids.to(current.device)
    mask = torch.zeros(current.shape[0], dtype=torch.bool, device=current.device)
    mask[ids] = True
    full = current.clone()
    full[ids] = values.to(current.device, current.dtype)
    return mask, full


class Backend(ABC):
    """Batched physics for `num_envs` copies of one compiled model.

    Every tensor is `[num_envs, ...]` on `self.device`. `qpos`/`qvel` are views of the live state: tasks
    read them after `step` and write them (through `set_state`) on reset.

    Which envs a reset touches (`env_ids` of `set_state`, `set_model_field`, `forward`) is either a long tensor of
    env indices, with one value row per index, or a bool mask `[num_envs]` with values for every env (rows outside
    the mask are ignored). Tasks pass masks: on a GPU the count of envs to reset never has to reach the host, so a
    step makes no host sync; tests and tools pass indices.
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
        """Overwrite the state of `env_ids` (indices or a mask, see the class doc) with `qpos`/`qvel` (a reset)."""

    @abstractmethod
    def set_model_field(self, field: str, env_ids: torch.Tensor, values: torch.Tensor | np.ndarray) -> None:
        """Per-env model parameters (domain randomization): `values` is `[len(env_ids), *model.<field>.shape]` for
        indices, `[num_envs, *model.<field>.shape]` for a mask (numpy or torch, any float dtype)."""

    @abstractmethod
    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Recompute derived quantities after `set_state`; returns sensor data `[len(env_ids), nsensordata]` for
        indices, `[num_envs, nsensordata]` for a mask (rows outside it: any value)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise if the simulation went wrong since the last check (e.g. a GPU backend's contact buffers
        overflowed). Reading such flags syncs with the device, so the training loop calls this once per
        iteration, not per step."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads or device memory."""
