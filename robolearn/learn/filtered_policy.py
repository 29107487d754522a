"""The safety filter in simulation: a policy whose actions pass through its Q_risk critic, batched over envs.

The same rule as the deploy runtime's filter (deploy/safety_filter.py, numpy and onnxruntime at control rate),
here in torch at the policy rate (the task steps once per policy action): an action whose risk is over the
threshold is replaced by the lowest-risk candidate (the action shrunk toward 0, the default pose, in
`shrink_steps` steps, and `random_candidates` Gaussian perturbations). Where no candidate is under the
threshold the robot would damp on hardware; a simulated episode cannot, so the lowest-risk candidate is taken and
counted in `no_safe_candidate`. `act_mean` is what evaluation calls; counts stay on the device until `stats()`.
The critic: a module `critic(frame [B, obs_dim], action [B, A]) -> risk [B, 1]` with `obs_dim` (RiskCritic).
"""

from __future__ import annotations

import torch
from torch import nn

from robolearn.errors import ConfigError

__all__ = ["FilteredPolicy"]


class FilteredPolicy(nn.Module):
    def __init__(self, policy: nn.Module, critic: nn.Module, *, threshold: float = 0.2, shrink_steps: int = 4,
                 random_candidates: int = 12, noise: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0 or shrink_steps < 1 or random_candidates < 0 or noise < 0:
            raise ConfigError(f"safety filter: threshold must be a risk in [0, 1], shrink_steps >= 1, "
                              f"random_candidates and noise >= 0; got {threshold}, {shrink_steps}, "
                              f"{random_candidates}, {noise}")
        self.policy, self.critic = policy, critic
        self.threshold, self.noise, self.random_candidates = threshold, noise, random_candidates
        self.history = getattr(policy, "history", 1)
        self.reads_privileged = getattr(policy, "reads_privileged", False)
        self.frame_dim = critic.obs_dim
        k = torch.arange(1, shrink_steps + 1, dtype=torch.float32)
        self.register_buffer("shrink", (1.0 - k / shrink_steps).view(-1, 1, 1))  # [S, 1, 1]
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.counts = torch.zeros(3)  # (actions scored, replaced, no safe candidate)

    @property
    def actor_dim(self) -> int:
        return self.policy.actor_dim

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.actor_input(obs)

    @torch.no_grad()
    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        a = self.policy.act_mean(x)  # [N, A]
        frame = x[:, -self.frame_dim:] if self.history > 1 else x[:, : self.frame_dim]
        risk = self.critic(frame, a).squeeze(-1)  # [N]
        if self._generator is None or self._generator.device != a.device:
            self._generator = torch.Generator(device=a.device).manual_seed(self.seed)
            self.counts = self.counts.to(a.device)
        noise = torch.randn((self.random_candidates, *a.shape), generator=self._generator, device=a.device)
        cands = torch.cat([self.shrink * a, a + self.noise * noise])  # [K, N, A]
        K, N = cands.shape[:2]
        cand_risk = self.critic(frame.repeat(K, 1), cands.flatten(0, 1)).view(K, N)
        best_risk, best = cand_risk.min(dim=0)  # [N]
        chosen = cands.gather(0, best.view(1, N, 1).expand(1, N, a.shape[1]))[0]
        risky = risk > self.threshold
        self.counts += torch.stack([torch.tensor(float(N), device=a.device), risky.sum(),
                                    (risky & (best_risk > self.threshold)).sum()]).float()
        return torch.where(risky.unsqueeze(-1), chosen, a)

    def stats(self) -> dict[str, float]:
        scored, replaced, unsafe = self.counts.tolist()
        return {"scored": scored, "replaced_fraction": replaced / max(scored, 1.0),
                "no_safe_candidate_fraction": unsafe / max(scored, 1.0)}
