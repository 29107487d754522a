"""Preallocated rollout storage and GAE (for the reward, and for the cost of constrained algorithms)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

__all__ = ["Batch", "RolloutStorage", "gae"]


class Batch(NamedTuple):
    actor_obs: torch.Tensor  # [B, P]
    critic_obs: torch.Tensor  # [B, C]
    actions: torch.Tensor  # [B, A]
    old_log_prob: torch.Tensor  # [B]
    old_mean: torch.Tensor  # [B, A]
    old_std: torch.Tensor  # [B, A]
    values: torch.Tensor  # [B]
    returns: torch.Tensor  # [B]
    advantages: torch.Tensor  # [B]
    # with a cost channel (`RolloutStorage(..., cost=True)`), else None
    cost_values: torch.Tensor | None = None  # [B]
    cost_returns: torch.Tensor | None = None  # [B]
    cost_advantages: torch.Tensor | None = None  # [B]


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor, gamma: float,
        lam: float) -> torch.Tensor:
    """Generalized advantage estimation (Schulman et al. 2016): advantages [T, N] of `rewards`, `values` and
    `dones` [T, N], bootstrapped from `last_values` [N] after the last step; no bootstrap across a done."""
    advantages = torch.empty_like(rewards)
    advantage = torch.zeros_like(last_values)
    for t in reversed(range(rewards.shape[0])):
        next_values = last_values if t == rewards.shape[0] - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        advantage = delta + gamma * lam * not_done * advantage
        advantages[t] = advantage
    return advantages


class RolloutStorage:
    """Tensors `[T, N, ...]` for T steps of N envs, on `device` (the task's). With `cost=True` also the per-step
    cost, the cost critic's values and their returns and advantages (`add_cost`, `compute_cost_gae`)."""

    def __init__(self, steps: int, num_envs: int, actor_dim: int, critic_dim: int, num_actions: int, *,
                 device: torch.device | str = "cpu", cost: bool = False) -> None:
        T, N = steps, num_envs
        self.steps, self.num_envs, self.device = T, N, torch.device(device)

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device)

        self.actor_obs = zeros(T, N, actor_dim)
        self.critic_obs = zeros(T, N, critic_dim)
        self.actions = zeros(T, N, num_actions)
        self.log_prob = zeros(T, N)
        self.mean = zeros(T, N, num_actions)
        self.std = zeros(T, N, num_actions)
        self.values = zeros(T, N)
        self.rewards = zeros(T, N)
        self.dones = zeros(T, N)
        self.returns = zeros(T, N)
        self.advantages = zeros(T, N)
        self.has_cost = cost
        if cost:
            self.costs = zeros(T, N)
            self.cost_values = zeros(T, N)
            self.cost_returns = zeros(T, N)
            self.cost_advantages = zeros(T, N)
            self.violations = zeros(T, N)  # what a safety critic learns from (risk_critic.violation_signal)
        self.step = 0

    def add(self, actor_obs, critic_obs, actions, log_prob, mean, std, values, rewards, dones) -> None:
        t = self.step
        self.actor_obs[t] = actor_obs
        self.critic_obs[t] = critic_obs
        self.actions[t] = actions
        self.log_prob[t] = log_prob
        self.mean[t] = mean
        self.std[t] = std
        self.values[t] = values
        self.rewards[t] = rewards
        self.dones[t] = dones
        self.step += 1

    def add_cost(self, costs: torch.Tensor, cost_values: torch.Tensor | None = None,
                 violations: torch.Tensor | None = None) -> None:
        """The cost channel of the transition `add` stored last (each part only when given)."""
        t = self.step - 1
        self.costs[t] = costs
        if cost_values is not None:
            self.cost_values[t] = cost_values
        if violations is not None:
            self.violations[t] = violations

    def compute_gae(self, last_values: torch.Tensor, gamma: float, lam: float, *,
                    mean_std: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Returns and advantages of the reward (`gae`); advantages normalized over the batch, or with
        `mean_std(advantages)` (e.g. the mean and std over all ranks' batches in distributed training)."""
        self.advantages = gae(self.rewards, self.values, self.dones, last_values, gamma, lam)
        self.returns = self.advantages + self.values
        mean, std = (self.advantages.mean(), self.advantages.std()) if mean_std is None else mean_std(self.advantages)
        self.advantages = (self.advantages - mean) / (std + 1e-8)
        self.step = 0

    def compute_cost_gae(self, last_cost_values: torch.Tensor, gamma: float, lam: float, *,
                         mean_std: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Returns and advantages of the cost; the advantages centred but not scaled (their size relative to the
        reward's is what the Lagrange multiplier weighs, as in OmniSafe)."""
        self.cost_advantages = gae(self.costs, self.cost_values, self.dones, last_cost_values, gamma, lam)
        self.cost_returns = self.cost_advantages + self.cost_values
        mean = self.cost_advantages.mean() if mean_std is None else mean_std(self.cost_advantages)[0]
        self.cost_advantages = self.cost_advantages - mean

    def minibatches(self, num_minibatches: int, epochs: int, generator: torch.Generator, *,
                    shards: int = 1) -> Iterator[Batch]:
        """`epochs` passes of `num_minibatches` random minibatches over all T * N samples.

        shards > 1 splits the envs into `shards` equal contiguous groups and draws ONE permutation over the
        (step, env-in-group) positions of a group; minibatch i holds those positions from every group. This is
        exactly the global minibatch of `shards` distributed ranks that each hold one group and share the
        generator seed (each rank calls this with shards=1), so one process can reproduce a distributed update.
        """
        if shards > 1:
            yield from self._sharded_minibatches(num_minibatches, epochs, generator, shards)
            return
        total = self.steps * self.num_envs
        size = total // num_minibatches
        flat = self._flat(slice(None))
        for _ in range(epochs):
            perm = torch.randperm(total, generator=generator, device=generator.device).to(self.device)
            for i in range(num_minibatches):
                idx = perm[i * size : (i + 1) * size]
                yield Batch(*(None if x is None else x[idx] for x in flat))

    def _sharded_minibatches(self, num_minibatches: int, epochs: int, generator: torch.Generator,
                             shards: int) -> Iterator[Batch]:
        if self.num_envs % shards:
            raise ValueError(f"num_envs ({self.num_envs}) must be divisible by shards ({shards})")
        n = self.num_envs // shards
        local = self.steps * n
        size = local // num_minibatches
        groups = [self._flat(slice(s * n, (s + 1) * n)) for s in range(shards)]
        for _ in range(epochs):
            perm = torch.randperm(local, generator=generator, device=generator.device).to(self.device)
            for i in range(num_minibatches):
                idx = perm[i * size : (i + 1) * size]
                yield Batch(*(None if groups[0][k] is None else torch.cat([g[k][idx] for g in groups])
                              for k in range(len(Batch._fields))))

    def _flat(self, envs: slice) -> Batch:
        """The samples of envs `envs`, flattened step-major to `[T * n, ...]` (the layout a rank holding only
        those envs has)."""
        cost = ((self.cost_values[:, envs].flatten(), self.cost_returns[:, envs].flatten(),
                 self.cost_advantages[:, envs].flatten()) if self.has_cost else (None, None, None))
        return Batch(
            self.actor_obs[:, envs].flatten(0, 1), self.critic_obs[:, envs].flatten(0, 1),
            self.actions[:, envs].flatten(0, 1), self.log_prob[:, envs].flatten(), self.mean[:, envs].flatten(0, 1),
            self.std[:, envs].flatten(0, 1), self.values[:, envs].flatten(), self.returns[:, envs].flatten(),
            self.advantages[:, envs].flatten(), *cost,
        )
