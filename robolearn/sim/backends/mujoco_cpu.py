"""`mujoco` backend: MuJoCo on the CPU, every env stepped in C++ threads by `mujoco.rollout` (no GIL, no
per-env Python). The whole batched state is one numpy array that torch views without copying."""

from __future__ import annotations

import copy
import os

import mujoco
import numpy as np
import torch
from mujoco import rollout

from robolearn.sim.backends.base import Backend, rows_as_ids

__all__ = ["MujocoBackend"]

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


class MujocoBackend(Backend):
    name = "mujoco"

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str = "cpu", nthread: int | None = None):
        if torch.device(device).type != "cpu":
            raise ValueError(f"backend 'mujoco' runs on the CPU; got device {device!r} (use mjwarp or mjx on GPUs)")
        super().__init__(model, num_envs, "cpu")
        self.nthread = nthread or min(os.cpu_count() or 1, num_envs)
        # One model per env so that friction, masses and gains can differ per env. They share nothing mutable.
        self.models = [copy.copy(model) for _ in range(num_envs)]
        self._datas = [mujoco.MjData(model) for _ in range(self.nthread)]
        self._pool = rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        self.nstate = mujoco.mj_stateSize(model, _STATE)
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        initial = np.empty(self.nstate)
        mujoco.mj_getState(model, data, initial, _STATE)
        self._state = np.tile(initial, (num_envs, 1))
        # FULLPHYSICS layout: time, qpos, qvel, act, ...
        self._qpos = torch.from_numpy(self._state[:, 1 : 1 + model.nq])
        self._qvel = torch.from_numpy(self._state[:, 1 + model.nq : 1 + model.nq + model.nv])
        self._nsub = 0

    def _buffers(self, nsub: int) -> None:
        if nsub != self._nsub:
            self._state_out = np.empty((self.num_envs, nsub, self.nstate))
            self._sensor_out = np.empty((self.num_envs, nsub, self.model.nsensordata))
            self._sensor_t = torch.from_numpy(self._sensor_out)
            self._nsub = nsub

    @property
    def qpos(self) -> torch.Tensor:
        return self._qpos

    @property
    def qvel(self) -> torch.Tensor:
        return self._qvel

    def step(self, ctrl: torch.Tensor) -> torch.Tensor:
        nsub = ctrl.shape[1]
        self._buffers(nsub)
        control = np.ascontiguousarray(ctrl.detach().numpy(), dtype=np.float64)
        self._pool.rollout(
            self.models, self._datas, self._state, control, skip_checks=True, nstep=nsub,
            state=self._state_out, sensordata=self._sensor_out,
        )
        self._state[:] = self._state_out[:, -1]
        return self._sensor_t

    def set_state(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        env_ids, (qpos, qvel) = rows_as_ids(env_ids, qpos, qvel)
        ids = env_ids.numpy()
        self._state[ids, 0] = 0.0
        self._state[ids, 1 + self.model.nq + self.model.nv :] = 0.0
        self._qpos[env_ids] = qpos.to(torch.float64)
        self._qvel[env_ids] = qvel.to(torch.float64)

    def set_model_field(self, field: str, env_ids: torch.Tensor, values: torch.Tensor | np.ndarray) -> None:
        env_ids, (values,) = rows_as_ids(env_ids, values)
        values = values.numpy() if isinstance(values, torch.Tensor) else values
        for row, env in enumerate(env_ids.tolist()):
            getattr(self.models[env], field)[...] = values[row]

    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        data = self._datas[0]
        masked = env_ids.dtype == torch.bool
        ids = env_ids.nonzero().flatten() if masked else env_ids
        out = np.zeros((self.num_envs if masked else len(ids), self.model.nsensordata))
        for row, env in enumerate(ids.tolist()):
            mujoco.mj_setState(self.models[env], data, self._state[env], _STATE)
            mujoco.mj_forward(self.models[env], data)
            out[env if masked else row] = data.sensordata
        return torch.from_numpy(out)

    def model_field(self, field: str, env_id: int) -> np.ndarray:
        return getattr(self.models[env_id], field)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
