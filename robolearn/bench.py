"""`robolearn bench`: env steps/s of a task (physics + observations + rewards + resets) next to the raw
`mujoco.rollout` physics rate of the same model, same envs and same decimation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from robolearn.sim.tasks import make_task

__all__ = ["BenchResult", "bench_task"]


@dataclass
class BenchResult:
    task: str
    backend: str
    num_envs: int
    decimation: int
    env_steps_per_s: float  # task.step: physics + observations + rewards + resets
    raw_physics_steps_per_s: float  # backend.step alone
    raw_env_steps_per_s: float  # the same, per policy step (physics / decimation)

    @property
    def ratio(self) -> float:
        return self.env_steps_per_s / self.raw_env_steps_per_s


def bench_task(task_name: str, *, backend: str = "mujoco", num_envs: int = 1024, steps: int = 100,
               warmup: int = 10, action_std: float = 0.3, seed: int = 0) -> BenchResult:
    """Random actions (Gaussian, `action_std`) through the full task step, then the same control pattern
    through the backend alone."""
    task = make_task(task_name, num_envs, backend=backend, seed=seed)
    g = torch.Generator().manual_seed(seed)
    actions = [action_std * torch.randn(num_envs, task.num_actions, generator=g) for _ in range(8)]
    try:
        for i in range(warmup):
            task.step(actions[i % 8])
        t0 = time.perf_counter()
        for i in range(steps):
            task.step(actions[i % 8])
        env_rate = num_envs * steps / (time.perf_counter() - t0)
        ctrls = [task.action_to_ctrl(a) for a in actions]
        t0 = time.perf_counter()
        for i in range(steps):
            task.sim.step(ctrls[i % 8])
        raw_env_rate = num_envs * steps / (time.perf_counter() - t0)
    finally:
        task.close()
    d = task.cfg.decimation
    return BenchResult(task_name, backend, num_envs, d, env_rate, raw_env_rate * d, raw_env_rate)
