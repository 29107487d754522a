"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) with an asymmetric critic,
clipped value loss and a KL-adaptive learning rate (as in rsl_rl)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.distributed import Distributed
from robolearn.learn.filtered_policy import FilteredPolicy
from robolearn.learn.models.actor_critic import ActorCritic
from robolearn.learn.risk_critic import RiskCriticLearner, violation_signal
from robolearn.learn.storage import Batch, RolloutStorage

__all__ = ["PPOCfg", "PPO", "clipped_surrogate"]

MAX_LOG_RATIO = 20.0  # exp(20) ~ 5e8: far beyond any on-policy ratio, far below float32's overflow at exp(88)


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(PPO's clipped surrogate loss, the ratios). The log-ratio is clamped to +-MAX_LOG_RATIO: an action far out in
    the Gaussian's tail (a safety filter's replacement, stored as executed) must not give exp(.) = inf and a NaN
    update; on-policy ratios are never near the bound."""
    ratio = torch.exp((log_prob - old_log_prob).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))
    surrogate = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    return surrogate, ratio


@dataclass(kw_only=True)
class PPOCfg:
    learning_rate: float = 1e-3
    schedule: str = "adaptive"  # adaptive (on KL, rsl_rl) | linear (annealed to 0 over the run, CleanRL) | fixed
    desired_kl: float = 0.01
    epochs: int = 5
    minibatches: int = 4
    clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.01
    gamma: float = 0.99
    lam: float = 0.95
    max_grad_norm: float = 1.0
    min_lr: float = 1e-5
    max_lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.schedule not in ("adaptive", "linear", "fixed"):
            raise ConfigError(f"ppo.schedule must be adaptive, linear or fixed, got {self.schedule!r}")
        for name in ("epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("learning_rate", "clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ppo.{name} must be > 0, got {getattr(self, name)}")


class PPO(Algorithm):
    """PPO on one process, or on one rank of `dist` (gradients and KL averaged over ranks, see distributed.py).

    Owns the actor-critic, its optimizer and the rollout storage (`steps_per_env` x `num_envs`, on the policy's
    device). Time-outs are bootstrapped: a truncated (not failed) episode's last reward gets + gamma * V(s)."""

    checkpoint_format = "robolearn-ppo"
    uses_cost = False  # True: the storage keeps a cost channel (constrained variants)

    def __init__(self, policy: ActorCritic, cfg: PPOCfg, *, num_envs: int, steps_per_env: int,
                 generator: torch.Generator, dist: Distributed | None = None, total_updates: int = 0,
                 risk: RiskCriticLearner | None = None) -> None:
        self.policy = policy
        self.risk = risk  # a safety critic Q_risk trained on the same rollouts (risk_critic.py), or None
        self.cfg = cfg
        self.lr = cfg.learning_rate
        self.params = [*policy.parameters(), *self.extra_parameters()]
        # fused: one kernel per step and the step counters on the parameters' device (the default keeps them on
        # the host and reads them with .item() at every minibatch)
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr, fused=True)
        self.generator = generator  # minibatch permutations: the same seed on every rank
        self.dist = dist
        self.storage = RolloutStorage(steps_per_env, num_envs, policy.actor_dim, policy.critic_norm.mean.shape[0],
                                      policy.log_std.shape[0], device=policy.log_std.device,
                                      cost=self.uses_cost or risk is not None)
        self.shield: FilteredPolicy | None = None  # the safety filter in training (safety_critic.filter_in_training)
        if risk is not None and risk.cfg.filter_in_training:
            self.shield = FilteredPolicy(policy, risk.critic, **risk.cfg.filter_kwargs(),
                                         seed=int(generator.initial_seed()))
        self._step: tuple[torch.Tensor, ...] = ()  # what `act` computed for the transition being collected
        self.updates = 0  # updates done (the linear schedule's position, with `total_updates`)
        self.total_updates = total_updates

    # -- collection ------------------------------------------------------------------------------------------
    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        actor_obs, critic_obs = self.policy.actor_input(obs), obs["privileged"]
        if self.dist is None:
            self.policy.update_normalizers(actor_obs, critic_obs)
        else:  # merged over ranks: the normalizers stay identical everywhere
            self.dist.update_normalizers(((self.policy.actor_norm, actor_obs), (self.policy.critic_norm, critic_obs)))
        dist = self.policy.distribution(actor_obs)
        actions = dist.rsample()  # mean + std * N(0, 1); `sample` checks std >= 0 on the host (a sync per step)
        if self.shield is not None:  # the executed (filtered) actions are what the rollout learns from
            actions = self.shield.filter(obs["policy"], actions)
        values = self.policy.value(critic_obs).squeeze(-1)
        self._step = (actor_obs, critic_obs, actions, dist.log_prob(actions).sum(-1), dist.mean,
                      dist.stddev.expand_as(dist.mean), values)
        return actions

    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        values = self._step[-1]
        reward = reward + self.cfg.gamma * values * info["time_outs"]  # the episode did not fail, it was cut
        self.storage.add(*self._step, reward, (terminated | truncated).float())
        if self.risk is not None:  # what Q_risk learns from (ppo-lag stores its cost and cost values after this)
            self.storage.add_cost(cost, violations=violation_signal(self.risk.cfg, cost, info))

    def compute_returns(self, obs: dict[str, torch.Tensor]) -> None:
        last_values = self.policy.value(obs["privileged"]).squeeze(-1)
        self.storage.compute_gae(last_values, self.cfg.gamma, self.cfg.lam,
                                 mean_std=None if self.dist is None else self.dist.mean_std)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "lr": self.lr,
                 "rng": self.generator.get_state(), "updates": self.updates}
        if self.risk is not None:
            state["risk_critic"] = self.risk.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.policy.load_state_dict(state["model"])
        except RuntimeError:
            raise CheckpointError("checkpoint: network layout differs from the config's network section") from None
        self.optimizer.load_state_dict(state["optimizer"])  # moved to the parameters' device
        if self.risk is not None:
            if "risk_critic" not in state:
                raise CheckpointError("checkpoint: no safety critic in it (trained without safety_critic.enabled)")
            self.risk.load_state_dict(state["risk_critic"])
        self.lr = state["lr"]
        self.updates = int(state.get("updates", state.get("iteration", 0)))
        # a resumed run's budget counts from the resume: the linear anneal goes on from where it stopped and
        # reaches 0 at the end of the new budget (else updates > total_updates would mean lr 0 from the start)
        self.total_updates += self.updates
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        rng = state["rng"]
        if rng.numel() == self.generator.get_state().numel():  # CPU and CUDA generators keep different states
            self.generator.set_state(rng)
        else:  # trained on another device: a fresh, deterministic stream
            self.generator.manual_seed(int(state.get("iteration", 0)) + 1)

    def deployable(self) -> nn.Module:
        return self.policy

    # -- hooks for variants (PPO-Lagrangian) ---------------------------------------------------------------
    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the same optimizer besides the policy's (e.g. a cost critic)."""
        return []

    def policy_advantages(self, batch: Batch) -> torch.Tensor:
        """The advantages the clipped surrogate maximizes."""
        return batch.advantages

    def extra_loss(self, batch: Batch) -> torch.Tensor | None:
        """A loss added to PPO's, weighted by `ppo.value_coef` (e.g. the cost critic's value loss); logged under
        `extra_loss_name`."""
        return None

    extra_loss_name = ""

    def _adapt_learning_rate(self, kl_t: torch.Tensor) -> None:
        cfg = self.cfg
        kl = kl_t.item()  # the one host sync per minibatch (rsl_rl's adaptive schedule reads it the same way)
        if kl > 2.0 * cfg.desired_kl:
            self.lr = max(cfg.min_lr, self.lr / 1.5)
        elif 0.0 < kl < 0.5 * cfg.desired_kl:
            self.lr = min(cfg.max_lr, self.lr * 1.5)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def update(self, *, shards: int = 1) -> dict[str, float]:
        """`cfg.epochs` x `cfg.minibatches` steps over the storage; `shards` as in `RolloutStorage.minibatches`."""
        cfg, storage = self.cfg, self.storage
        if cfg.schedule == "linear":  # CleanRL's anneal: lr0 x the fraction of the run left
            left = 1.0 - self.updates / max(1, self.total_updates)
            self.lr = cfg.learning_rate * max(left, 0.0)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        names = ("loss/surrogate", "loss/value", "loss/entropy", "ppo/approx_kl", "ppo/clip_fraction",
                 *((self.extra_loss_name,) if self.extra_loss_name else ()))
        sums = torch.zeros(len(names), dtype=torch.float64, device=storage.device)  # read once, at the end
        n = 0
        for batch in storage.minibatches(cfg.minibatches, cfg.epochs, self.generator, shards=shards):
            dist = self.policy.distribution(batch.actor_obs)
            log_prob = dist.log_prob(batch.actions).sum(-1)
            entropy = dist.entropy().sum(-1).mean()
            with torch.no_grad():  # analytic KL(old || new) of diagonal Gaussians
                kl = (torch.log(dist.stddev / batch.old_std)
                      + (batch.old_std.square() + (batch.old_mean - dist.mean).square()) / (2 * dist.variance)
                      - 0.5).sum(-1).mean()
            advantages = self.policy_advantages(batch)
            surrogate, ratio = clipped_surrogate(log_prob, batch.old_log_prob, advantages, cfg.clip)
            value = self.policy.value(batch.critic_obs).squeeze(-1)
            value_clipped = batch.values + (value - batch.values).clamp(-cfg.clip, cfg.clip)
            value_loss = torch.max((value - batch.returns).square(), (value_clipped - batch.returns).square()).mean()
            loss = surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
            extra = self.extra_loss(batch)
            if extra is not None:
                loss = loss + cfg.value_coef * extra
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.dist is not None:  # one flat all-reduce: mean gradients and mean KL over ranks
                (kl,) = self.dist.average_gradients(self.params, kl)
            if cfg.schedule == "adaptive":  # the lr is only read by the step below: same on every rank
                self._adapt_learning_rate(kl)
            nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            clip_fraction = ((ratio - 1).abs() > cfg.clip).float().mean()
            terms = [surrogate, value_loss, entropy, kl, clip_fraction, *(() if extra is None else (extra,))]
            sums += torch.stack(terms).detach().double()
            n += 1
        returns, values = storage.returns.flatten(), storage.values.flatten()
        explained = 1 - (returns - values).var() / returns.var().clamp(min=1e-8)
        std = self.policy.log_std.exp().mean()
        means = torch.cat([sums / n, torch.stack([explained, std]).detach().double()]).tolist()
        stats = dict(zip((*names, "ppo/explained_variance"), means[:-1], strict=True))
        if self.dist is not None:  # logged statistics: the mean over ranks
            local = torch.tensor(list(stats.values()), dtype=torch.float64, device=self.dist.device)
            stats = dict(zip(stats, self.dist.mean(local).tolist(), strict=True))
        stats["ppo/learning_rate"] = self.lr
        self.updates += 1
        stats["policy/std"] = means[-1]
        if self.risk is not None:  # Q_risk on the policy's observation frame (a teacher's extras left out)
            frame = storage.actor_obs[..., : self.risk.critic.obs_dim]
            stats.update(self.risk.update(frame, storage.actions, storage.violations, storage.dones))
        if self.shield is not None:
            shield = self.shield.stats(reset=True)
            stats["safety/replaced_fraction"] = shield["replaced_fraction"]
            stats["safety/no_safe_candidate_fraction"] = shield["no_safe_candidate_fraction"]
        return stats
