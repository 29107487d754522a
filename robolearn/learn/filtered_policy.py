"""The safety filter in simulation: a policy whose actions pass through its Q_risk critic, batched over envs.

The same rule as the deploy runtime's filter (deploy/safety_filter.py, numpy and onnxruntime at control rate),
here in torch at the policy rate (the task steps once per policy action): an action whose risk is over the
threshold is replaced by a candidate (the action shrunk toward 0, the default pose, or with `shrink_toward:
measured` toward the action that holds the measured joints, in `shrink_steps` steps, and
`random_candidates` Gaussian perturbations): the lowest-risk one (`selection: lowest_risk`), or the one closest to
the commanded action among those under the threshold (`closest_safe`, the least intervention). Where no candidate
is under the threshold the robot would damp on hardware; a simulated episode cannot, so the lowest-risk candidate
is taken and counted in `no_safe_candidate`. While the risk of the commanded action is over
`impedance_threshold`, the bound task's joint impedance is scaled to `impedance_scale` (`Task.set_gain_scale`),
ramping back to full over `impedance_recover_s` once it is not, as the runtime scales its PD gains (the deploy
profile's defaults; `impedance_threshold` 1 turns it off). `act_mean` is what evaluation calls, `filter` what
PPO calls on its sampled actions in training (`safety_critic.filter_in_training`); counts stay on the device until
`stats()`.
The critic: a module `critic(frames [B, obs_dim], action [B, A]) -> risk [B, 1]` with `obs_dim` and `history`
(RiskCritic: `history` observation frames stacked oldest first). The filtered policy's input is then the last
max(policy history, critic history) actor frames: the policy reads its own newest ones, the critic the observation
part of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from robolearn.errors import ConfigError

__all__ = ["FilteredPolicy", "SELECTIONS", "SHRINK_TOWARD", "shrink_anchor"]

# the deploy filter's too (deploy/profile.py; learn imports no deploy)
SELECTIONS = ("lowest_risk", "closest_safe")
SHRINK_TOWARD = ("default", "measured")


def shrink_anchor(shrink_toward: str, task, a: torch.Tensor) -> torch.Tensor:
    """[N, A]: where shrunk candidates of the actions `a` head: 0 (the default pose), or with `measured` the action
    that holds `task`'s measured joints (`Task.measured_action`)."""
    return torch.zeros_like(a) if shrink_toward == "default" else task.measured_action().to(a.device)


class FilteredPolicy(nn.Module):
    def __init__(self, policy: nn.Module, critic: nn.Module, *, threshold: float = 0.2, shrink_steps: int = 4,
                 random_candidates: int = 12, noise: float = 0.3, selection: str = "lowest_risk",
                 shrink_toward: str = "default", impedance_threshold: float = 0.1, impedance_scale: float = 0.5,
                 impedance_recover_s: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= impedance_threshold <= 1.0 or not 0.0 < impedance_scale <= 1.0 or impedance_recover_s < 0:
            raise ConfigError(f"safety filter: impedance_threshold must be a risk in [0, 1], impedance_scale in "
                              f"(0, 1] and impedance_recover_s >= 0; got {impedance_threshold}, {impedance_scale}, "
                              f"{impedance_recover_s}")
        if not 0.0 <= threshold <= 1.0 or shrink_steps < 1 or random_candidates < 0 or noise < 0:
            raise ConfigError(f"safety filter: threshold must be a risk in [0, 1], shrink_steps >= 1, "
                              f"random_candidates and noise >= 0; got {threshold}, {shrink_steps}, "
                              f"{random_candidates}, {noise}")
        if selection not in SELECTIONS:
            raise ConfigError(f"safety filter: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        if shrink_toward not in SHRINK_TOWARD:
            raise ConfigError(f"safety filter: shrink_toward must be one of {', '.join(SHRINK_TOWARD)}, got "
                              f"{shrink_toward!r}")
        self.selection, self.shrink_toward = selection, shrink_toward
        self._task = None  # with shrink_toward measured: the task whose measured joints anchor the candidates
        self.policy, self.critic = policy, critic
        self.threshold, self.noise, self.random_candidates = threshold, noise, random_candidates
        self.policy_history = getattr(policy, "history", 1)
        self.critic_history = getattr(critic, "history", 1)
        self.history = max(self.policy_history, self.critic_history)  # actor frames per input, oldest first
        self.actor_frame = policy.actor_dim // self.policy_history
        self.reads_privileged = getattr(policy, "reads_privileged", False)
        self.frame_dim = critic.obs_dim // self.critic_history  # the observation part of an actor frame
        k = torch.arange(1, shrink_steps + 1, dtype=torch.float32)
        self.register_buffer("shrink", (1.0 - k / shrink_steps).view(-1, 1, 1))  # [S, 1, 1]
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.counts = torch.zeros(3)  # (actions scored, replaced, no safe candidate)
        self.impedance_threshold, self.impedance_scale = impedance_threshold, impedance_scale
        self.impedance_recover_s = impedance_recover_s
        self._since_high: torch.Tensor | None = None  # [N] seconds since the risk was last over impedance_threshold

    @property
    def actor_dim(self) -> int:
        return self.actor_frame * self.history

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.actor_input(obs)

    def bind(self, task) -> None:
        """The task the filtered actions are executed in: its measured joints (for `shrink_toward: measured`) and
        its joint impedance (lowered while the risk is high)."""
        if self.shrink_toward == "measured":
            task.measured_action()  # a task without joint position actions fails here, by name
        self._task = task
        self._since_high = None

    @property
    def lowers_impedance(self) -> bool:
        return self.impedance_threshold < 1.0 and self.impedance_scale < 1.0

    def _lower_impedance(self, risk: torch.Tensor) -> None:
        """The bound task's gain scale after this step's risk [N] (the deploy filter's `gain_scale` rule, at the
        policy rate): `impedance_scale` while the risk is over the threshold, then a linear ramp back to 1 over
        `impedance_recover_s`; an env starting an episode starts at full gains."""
        task = self._task
        if self._since_high is None or self._since_high.shape != risk.shape:
            self._since_high = torch.full_like(risk, torch.inf)
        fresh = task.episode_step.to(risk.device) == 0  # a new episode: the runtime's filter is reset with it
        since = torch.where(fresh, torch.inf, self._since_high + task.dt)
        self._since_high = since = torch.where(risk > self.impedance_threshold, 0.0, since)
        recover = self.impedance_recover_s
        progress = (since / recover).clamp(max=1.0) if recover > 0 else (since > 0).float()
        task.set_gain_scale(self.impedance_scale + (1.0 - self.impedance_scale) * progress)

    def anchor(self, a: torch.Tensor) -> torch.Tensor:
        """What the shrink candidates move the command toward: 0 (the default pose) or the measured joints."""
        if self.shrink_toward == "measured" and self._task is None:
            raise ConfigError("safety filter with shrink_toward: measured: bind(task) first (its measured joints)")
        return shrink_anchor(self.shrink_toward, self._task, a)

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        """The critic's input in an input of this policy [N, history x actor frame]: the observation part (a
        teacher's privileged extras left out) of the newest `critic_history` actor frames."""
        frames = x.reshape(x.shape[0], self.history, self.actor_frame)
        return frames[:, -self.critic_history:, : self.frame_dim].flatten(1)

    @torch.no_grad()
    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        own = x.reshape(x.shape[0], self.history, self.actor_frame)[:, -self.policy_history:].flatten(1)
        return self.filter(self.frame(x), self.policy.act_mean(own))

    @torch.no_grad()
    def filter(self, frame: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The actions [N, A] to execute for commanded actions `a` in the critic's input `frame` [N, obs_dim] (its
        history of observation frames)."""
        risk = self.critic(frame, a).squeeze(-1)  # [N]
        if self._generator is None or self._generator.device != a.device:
            self._generator = torch.Generator(device=a.device).manual_seed(self.seed)
            self.counts = self.counts.to(a.device)
        noise = torch.randn((self.random_candidates, *a.shape), generator=self._generator, device=a.device)
        anchor = self.anchor(a)
        cands = torch.cat([anchor + self.shrink * (a - anchor), a + self.noise * noise])  # [K, N, A]
        K, N = cands.shape[:2]
        cand_risk = self.critic(frame.repeat(K, 1), cands.flatten(0, 1)).view(K, N)
        best_risk, best = cand_risk.min(dim=0)  # [N]
        if self.selection == "closest_safe":  # the least change among the safe candidates, where there is one
            safe = cand_risk <= self.threshold
            change = torch.where(safe, (cands - a).norm(dim=-1), torch.inf)  # [K, N]
            best = torch.where(safe.any(dim=0), change.argmin(dim=0), best)
            best_risk = cand_risk.gather(0, best.view(1, N))[0]
        chosen = cands.gather(0, best.view(1, N, 1).expand(1, N, a.shape[1]))[0]
        if self._task is not None and self.lowers_impedance:
            self._lower_impedance(risk)
        risky = risk > self.threshold
        self.counts += torch.stack([torch.tensor(float(N), device=a.device), risky.sum(),
                                    (risky & (best_risk > self.threshold)).sum()]).float()
        return torch.where(risky.unsqueeze(-1), chosen, a)

    def stats(self, reset: bool = False) -> dict[str, float]:
        """Counts since construction (or the last `reset`): one host read."""
        scored, replaced, unsafe = self.counts.tolist()
        if reset:
            self.counts = torch.zeros_like(self.counts)
        return {"scored": scored, "replaced_fraction": replaced / max(scored, 1.0),
                "no_safe_candidate_fraction": unsafe / max(scored, 1.0)}
