"""Episode returns and per-episode task statistics during training, kept on the task's device.

Per step (`step`) only device ops: the running return of every env, and the sum and count of the returns of the
episodes that end. Once per iteration (`end_iteration`) one host sync reads them together with the task's own
per-episode sums (`Task.episode_stats`: reward terms, length, survival, episode metrics).
"""

from __future__ import annotations

from collections import deque

import torch

from robolearn.sim.tasks import Task

__all__ = ["EpisodeLog"]


class EpisodeLog:
    """`mean_return` is the mean return of the episodes that ended in the last `window` iterations (rsl_rl keeps the
    last 100 episodes; a window of iterations needs no per-episode host copy); `episode` holds the task's
    statistics of the latest iteration in which episodes ended."""

    def __init__(self, num_envs: int, device: torch.device | str, window: int = 10) -> None:
        self.running = torch.zeros(num_envs, device=device)
        self._ended_sum = torch.zeros((), device=device)
        self._ended_count = torch.zeros((), device=device)
        self._window: deque[tuple[float, float]] = deque(maxlen=window)
        self.mean_return = 0.0
        self.returns_seen = 0  # episodes in the window
        self.episode: dict[str, float] = {}

    def step(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.running += reward
        self._ended_sum = self._ended_sum + torch.where(done, self.running, 0.0).sum()
        self._ended_count = self._ended_count + done.sum()
        self.running = torch.where(done, 0.0, self.running)

    def end_iteration(self, task: Task, reduce: object = None) -> None:
        """Read this iteration's sums (one host sync) and the task's episode statistics. `reduce(tensor)` sums a
        float64 tensor over distributed ranks (returns over all ranks' episodes), if given."""
        totals = torch.stack([self._ended_sum, self._ended_count]).double()
        if reduce is not None:
            totals = reduce(totals)
        ended_sum, ended_count = totals.tolist()
        self._ended_sum = torch.zeros_like(self._ended_sum)
        self._ended_count = torch.zeros_like(self._ended_count)
        self._window.append((ended_sum, ended_count))
        n = sum(c for _, c in self._window)
        self.returns_seen = int(n)
        if n:
            self.mean_return = sum(s for s, _ in self._window) / n
        stats = task.episode_stats()
        if stats:
            self.episode = stats
