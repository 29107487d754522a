"""A learned safety critic Q_risk(s, a): the discounted probability that a constraint is violated from state s after
action a, following the training policy (Recovery RL, Thananjeyan et al. 2021, arXiv:2010.15920).

Trained beside PPO from the same rollouts (`safety_critic.enabled` in a training config): a violation at step t is
a step whose task cost (or the sum of the cost terms named in `safety_critic.terms`) is > 0, and the target is

    y_t = c_t + (1 - c_t) (1 - done_t) gamma_risk * max_i Q'_i(s_{t+1}, a_{t+1})

with a_{t+1} the action the policy took next (on-policy, as Recovery RL's Q_risk^pi) and Q'_1, Q'_2 slow-moving
(Polyak) copies of two critics: the max over the pair is the pessimistic target (it overestimates the risk, where
clipped double Q-learning takes the min of the value). Binary cross-entropy on the sigmoid output keeps Q_risk in
[0, 1]. The deployable critic (`RiskCritic.deployable()`) is the max of the two heads with its input normalizer;
export puts it into the bundle as the `safety_critic` graph that the deploy runtime's safety filter runs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from robolearn.errors import ConfigError
from robolearn.learn.filtered_policy import SELECTIONS, SHRINK_TOWARD
from robolearn.learn.models.actor_critic import EmpiricalNormalizer, mlp

__all__ = ["SafetyCriticCfg", "RiskCritic", "RiskCriticLearner", "violation_signal"]


@dataclass(kw_only=True)
class SafetyCriticCfg:
    enabled: bool = False
    # the cost terms whose violation Q_risk predicts (a step violates when one of them is > 0); empty: the task's
    # whole cost (every term, or a Gymnasium env's info["cost"])
    terms: list[str] = field(default_factory=list)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    # policy observation frames the critic reads, the newest last (at the policy rate; a fresh episode repeats its
    # first frame). One frame cannot tell a slip from a step: go2-rough's falls under wide randomization are mostly
    # slips on low friction, which a history shows (the students read 25 frames for the same reason). Fitted with
    # `robolearn risk` (beside PPO the critic reads one frame)
    history: int = 1
    gamma: float = 0.9  # gamma_risk: how far ahead a violation counts (Recovery RL uses 0.5-0.85 for short horizons)
    learning_rate: float = 1e-3
    # Polyak rate of the target critics per gradient step. 0.005 with 8 steps per iteration left go2-rough's critic
    # at a mean risk of 0.29 after 150 iterations (the true rate is ~0.01): the lagging target kept y near 0.45
    tau: float = 0.05
    epochs: int = 4  # passes over each rollout
    minibatches: int = 8
    init_risk: float = 0.05  # the heads start here (their output bias), not at 0.5: violations are rare
    # `robolearn risk`: the fraction of envs per step that execute a safety-filter candidate instead of the policy's
    # action (the action shrunk toward 0 by a uniform factor, or perturbed by `candidate_noise`), so that the critic
    # knows the actions the filter will score; a policy's own noise rarely reaches them (a pressing arm's critic
    # fitted without them called lifting the arm as risky as pressing harder)
    candidate_fraction: float = 0.0
    candidate_noise: float = 0.3
    # where shrunk candidates head, for these and for the filter in training: default (0, the default pose) or
    # measured (the action that holds the measured joints: a joint impedance's force scales down with the shrink)
    shrink_toward: str = "default"
    # The safety filter in training (a shield): PPO's sampled actions pass through this critic as in evaluation
    # and on the robot (filtered_policy.py) before the task steps; the rollout keeps the executed actions. In
    # `robolearn risk` the policy collects through the filter (outside candidate_fraction).
    # The filter settings (the deploy profile's `safety.filter` defaults) are also what `robolearn eval
    # --safety-filter` uses for this run unless its options say otherwise.
    filter_in_training: bool = False
    filter_threshold: float = 0.2
    filter_selection: str = "lowest_risk"  # lowest_risk | closest_safe
    filter_shrink_steps: int = 4
    # the joint impedance while the risk is high (the deploy profile's safety.filter.impedance_* defaults): scaled
    # to filter_impedance_scale while Q_risk of the command is over filter_impedance_threshold (1: never), ramping back
    # over filter_impedance_recover_s
    filter_impedance_threshold: float = 0.1
    filter_impedance_scale: float = 0.5
    filter_impedance_recover_s: float = 0.5
    # Rollouts the critic is fitted on: the newest plus this many - 1 before it (a replay buffer; 1: the newest
    # only). With the filter in the loop the newest rollouts hold few violations once the filter works, and a critic
    # fitted on them alone forgets what it blocked: panda-wipe's filter swung between 59% and 16% fewer violations
    # from one checkpoint to the next. Not saved in checkpoints: it refills on resume.
    replay_rollouts: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"safety_critic.gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0 or not self.learning_rate > 0:
            raise ConfigError(f"safety_critic: tau must be in (0, 1] and learning_rate > 0, got {self.tau} and "
                              f"{self.learning_rate}")
        if not 0.0 < self.init_risk < 1.0:
            raise ConfigError(f"safety_critic.init_risk must be in (0, 1), got {self.init_risk}")
        if not 0.0 <= self.candidate_fraction <= 1.0 or self.candidate_noise < 0:
            raise ConfigError(f"safety_critic: candidate_fraction must be in [0, 1] and candidate_noise >= 0; got "
                              f"{self.candidate_fraction} and {self.candidate_noise}")
        if self.shrink_toward not in SHRINK_TOWARD:
            raise ConfigError(f"safety_critic.shrink_toward must be one of {', '.join(SHRINK_TOWARD)}, got "
                              f"{self.shrink_toward!r}")
        if not 0.0 <= self.filter_threshold <= 1.0 or self.filter_selection not in SELECTIONS:
            raise ConfigError(f"safety_critic: filter_threshold must be a risk in [0, 1] and filter_selection one of "
                              f"{', '.join(SELECTIONS)}; got {self.filter_threshold} and {self.filter_selection!r}")
        if not 0.0 <= self.filter_impedance_threshold <= 1.0 or not 0.0 < self.filter_impedance_scale <= 1.0 \
                or self.filter_impedance_recover_s < 0:
            raise ConfigError(f"safety_critic: filter_impedance_threshold must be a risk in [0, 1], "
                              f"filter_impedance_scale in (0, 1] and filter_impedance_recover_s >= 0; got "
                              f"{self.filter_impedance_threshold}, {self.filter_impedance_scale} and "
                              f"{self.filter_impedance_recover_s}")
        if self.filter_shrink_steps < 1:
            raise ConfigError(f"safety_critic.filter_shrink_steps must be >= 1, got {self.filter_shrink_steps}")
        if self.history < 1:
            raise ConfigError(f"safety_critic.history must be >= 1 (frames), got {self.history}")
        if self.replay_rollouts < 1:
            raise ConfigError(f"safety_critic.replay_rollouts must be >= 1, got {self.replay_rollouts}")
        if self.epochs < 1 or self.minibatches < 1:
            raise ConfigError(f"safety_critic: epochs and minibatches must be >= 1, got {self.epochs} and "
                              f"{self.minibatches}")

    def filter_kwargs(self) -> dict[str, Any]:
        """This run's safety filter settings as FilteredPolicy's keyword arguments."""
        return {"threshold": self.filter_threshold, "selection": self.filter_selection,
                "shrink_toward": self.shrink_toward, "shrink_steps": self.filter_shrink_steps,
                "impedance_threshold": self.filter_impedance_threshold,
                "impedance_scale": self.filter_impedance_scale,
                "impedance_recover_s": self.filter_impedance_recover_s}


class RiskCritic(nn.Module):
    """Two heads Q_1, Q_2 (logits) on [normalized observation, action]; `forward(obs, action) -> risk [B, 1]`, the
    pessimistic max of the two sigmoids (what the deploy filter runs). `obs`: `history` observation frames of
    `obs_dim / history` values each, stacked oldest first."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], init_risk: float = 0.5,
                 history: int = 1) -> None:
        super().__init__()
        if history < 1 or obs_dim % history:
            raise ConfigError(f"safety critic: {obs_dim} observation values are not {history} frames")
        self.history = history
        self.obs_norm = EmpiricalNormalizer(obs_dim)
        self.heads = nn.ModuleList([mlp(obs_dim + num_actions, hidden, 1, "elu") for _ in range(2)])
        for head in self.heads:
            nn.init.constant_(head[-1].bias, math.log(init_risk / (1.0 - init_risk)))

    @property
    def obs_dim(self) -> int:
        """The whole observation input: history x frame_dim."""
        return self.obs_norm.mean.shape[0]

    @property
    def frame_dim(self) -> int:
        return self.obs_dim // self.history

    def logits(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[2, B] logits of the two heads."""
        x = torch.cat([self.obs_norm(obs), action], dim=-1)
        return torch.stack([h(x).squeeze(-1) for h in self.heads])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(obs, action)).amax(dim=0).unsqueeze(-1)

    @classmethod
    def from_checkpoint(cls, state: dict) -> RiskCritic:
        """The critic a checkpoint's `risk_critic` entry (RiskCriticLearner.state_dict()) holds, on the CPU."""
        critic = cls(state["obs_dim"], state["num_actions"], state["hidden"], history=state.get("history", 1))
        critic.load_state_dict(state["critic"])
        return critic


def violation_signal(cfg: SafetyCriticCfg, cost: torch.Tensor, info: dict) -> torch.Tensor:
    """[N] > 0 where the step violates a constraint Q_risk learns: the named cost terms' sum, or the whole cost."""
    if not cfg.terms:
        return cost
    costs = info["costs"]
    missing = [t for t in cfg.terms if t not in costs]
    if missing:
        raise ConfigError(f"safety_critic.terms: {missing} are not cost terms of the task (its terms: "
                          f"{', '.join(costs) or 'none'})")
    return torch.stack([costs[t] for t in cfg.terms]).sum(dim=0)


class RiskCriticLearner:
    """Owns the critic, its target copy, optimizer and replay buffer; `update(obs, actions, costs, dones)` on a rollout
    [T, N, ...] (transitions t -> t + 1 within it: the last step has no next action and is not a sample; `obs`: the
    critic's input, `cfg.history` frames of `frame_dim` stacked oldest first). Each update
    stores the rollout's transitions (the newest `replay_rollouts` rollouts are kept), computes every stored
    transition's target with the target critics, and takes `epochs` x `minibatches` gradient steps on minibatches of
    a rollout's size / `minibatches` drawn from all of them."""

    def __init__(self, frame_dim: int, num_actions: int, cfg: SafetyCriticCfg, *, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        obs_dim = frame_dim * cfg.history
        self.shape = {"obs_dim": obs_dim, "num_actions": num_actions, "hidden": list(cfg.hidden),
                      "history": cfg.history}
        self.critic = RiskCritic(obs_dim, num_actions, cfg.hidden, cfg.init_risk, cfg.history).to(device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.critic.heads.parameters(), lr=cfg.learning_rate)
        self.generator = generator
        self._buffer: dict[str, torch.Tensor] = {}  # s, a, c, done, s2, a2: [replay_rollouts x rollout, ...]
        self._stored = 0  # transitions stored so far (the ring's write position is this modulo its size)

    def _store(self, **transitions: torch.Tensor) -> int:
        """Write one rollout's transitions into the ring; returns how many transitions it holds now."""
        size = next(iter(transitions.values())).shape[0]
        if not self._buffer or self._buffer["s"].shape[0] != size * self.cfg.replay_rollouts:
            self._buffer = {k: v.new_zeros((size * self.cfg.replay_rollouts, *v.shape[1:]))
                            for k, v in transitions.items()}
            self._stored = 0
        start = self._stored % self._buffer["s"].shape[0]
        for k, v in transitions.items():
            self._buffer[k][start:start + size] = v
        self._stored += size
        return min(self._stored, self._buffer["s"].shape[0])

    def update(self, obs: torch.Tensor, actions: torch.Tensor, costs: torch.Tensor, dones: torch.Tensor
               ) -> dict[str, float]:
        cfg = self.cfg
        T, N = costs.shape
        if T < 2:
            raise ConfigError("safety_critic: a rollout needs at least 2 steps per env (steps_per_env >= 2)")
        self.critic.obs_norm.update(obs.flatten(0, 1))
        self.target.obs_norm.load_state_dict(self.critic.obs_norm.state_dict())
        size = (T - 1) * N  # this rollout's transitions
        total = self._store(s=obs[:-1].flatten(0, 1), a=actions[:-1].flatten(0, 1),
                            c=(costs[:-1] > 0).float().flatten(), done=dones[:-1].flatten(),
                            s2=obs[1:].flatten(0, 1), a2=actions[1:].flatten(0, 1))
        b = {k: v[:total] for k, v in self._buffer.items()}
        s, a, c = b["s"], b["a"], b["c"]
        with torch.no_grad():
            next_risk = torch.sigmoid(self.target.logits(b["s2"], b["a2"])).amax(dim=0)  # the pessimistic pair
            y = c + (1.0 - c) * (1.0 - b["done"]) * cfg.gamma * next_risk
        batch = max(1, size // cfg.minibatches)
        sums = torch.zeros(2, dtype=torch.float64, device=obs.device)
        n = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(total, generator=self.generator, device=self.generator.device).to(obs.device)
            for i in range(cfg.minibatches):
                idx = perm[i * batch:(i + 1) * batch]
                logits = self.critic.logits(s[idx], a[idx])  # [2, B]
                loss = F.binary_cross_entropy_with_logits(logits, y[idx].expand_as(logits))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                with torch.no_grad():
                    for p, q in zip(self.critic.heads.parameters(), self.target.heads.parameters(), strict=True):
                        q.lerp_(p, cfg.tau)
                    sums += torch.stack([loss.detach(), torch.sigmoid(logits).amax(0).mean()]).double()
                n += 1
        loss_mean, risk_mean = (sums / n).tolist()
        return {"loss/risk": loss_mean, "risk/mean_q": risk_mean, "risk/replay_transitions": float(total)}

    def state_dict(self) -> dict:
        return {**self.shape, "critic": self.critic.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
