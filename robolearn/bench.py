"""`robolearn bench`: env steps/s of a task (physics + observations + rewards + resets) next to the raw
`mujoco.rollout` physics rate of the same model, same envs and same decimation."""

from __future__ import annotations

import statistics
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
               rounds: int = 3, warmup: int = 10, action_std: float = 0.3, seed: int = 0) -> BenchResult:
    """Random actions (Gaussian, `action_std`) through the full task step, then the same control pattern
    through the backend alone; `rounds` alternating measurements of `steps // rounds` steps, medians reported.
    Each raw round starts from a fresh reset so both see the same mix of standing and fallen robots."""
    task = make_task(task_name, num_envs, backend=backend, seed=seed)
    g = torch.Generator().manual_seed(seed)
    actions = [action_std * torch.randn(num_envs, task.num_actions, generator=g) for _ in range(8)]
    ctrls = [task.action_to_ctrl(a) for a in actions]
    n = max(1, steps // rounds)
    env_rates, raw_rates = [], []
    try:
        for _ in range(rounds):
            task.reset()
            for i in range(warmup):
                task.step(actions[i % 8])
            t0 = time.perf_counter()
            for i in range(n):
                task.step(actions[i % 8])
            env_rates.append(num_envs * n / (time.perf_counter() - t0))
            task.reset()
            for i in range(warmup):
                task.sim.step(ctrls[i % 8])
            t0 = time.perf_counter()
            for i in range(n):
                task.sim.step(ctrls[i % 8])
            raw_rates.append(num_envs * n / (time.perf_counter() - t0))
    finally:
        task.close()
    env_rate, raw_env_rate = statistics.median(env_rates), statistics.median(raw_rates)
    d = task.cfg.decimation
    return BenchResult(task_name, backend, num_envs, d, env_rate, raw_env_rate * d, raw_env_rate)
