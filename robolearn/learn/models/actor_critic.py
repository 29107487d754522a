"""Networks: MLP, running observation normalizer, and the asymmetric actor-critic."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from robolearn.errors import ConfigError

if TYPE_CHECKING:
    from robolearn.learn.config import NetworkCfg

__all__ = ["mlp", "EmpiricalNormalizer", "ActorCritic", "TeacherActorCritic", "build_policy"]

_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(inp: int, hidden: list[int], out: int, activation: str = "elu") -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), _ACTIVATIONS[activation]()]
        inp = h
    layers.append(nn.Linear(inp, out))
    return nn.Sequential(*layers)


class EmpiricalNormalizer(nn.Module):
    """Running mean / variance (parallel Welford); `forward` normalizes, `update` accumulates a batch [B, D]."""

    def __init__(self, dim: int, eps: float = 1e-2) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.var + self.eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        total = self.count + n
        batch_mean = x.mean(dim=0)
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        m2 = self.var * self.count + x.var(dim=0, unbiased=False) * n + delta.square() * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class ActorCritic(nn.Module):
    """Gaussian actor on `policy` observations; critic on `privileged` observations (asymmetric).

    Shapes: actor_obs [B, P] -> mean [B, A]; critic_obs [B, C] -> value [B, 1]. Normalizers are part of the
    module, so an exported actor carries its own normalization. `actor_input(obs)` picks the actor's input from
    a task's observation groups; `history` is the number of stacked frames the actor reads (1: none).
    """

    history = 1
    reads_privileged = False  # True: the actor reads privileged observations (a teacher; not deployable)

    def __init__(self, actor_dim: int, critic_dim: int, num_actions: int, *, actor_hidden: list[int],
                 critic_hidden: list[int], activation: str = "elu", init_std: float = 1.0,
                 _actor_in: int | None = None) -> None:
        super().__init__()
        self.actor_dim = actor_dim
        self.actor_norm = EmpiricalNormalizer(actor_dim)
        self.critic_norm = EmpiricalNormalizer(critic_dim)
        self.actor = mlp(actor_dim if _actor_in is None else _actor_in, actor_hidden, num_actions, activation)
        self.critic = mlp(critic_dim, critic_hidden, 1, activation)
        self.log_std = nn.Parameter(torch.full((num_actions,), float(torch.tensor(init_std).log())))
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return obs["policy"]

    def act_mean(self, actor_obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.actor_norm(actor_obs))

    def distribution(self, actor_obs: torch.Tensor) -> torch.distributions.Normal:
        # validate_args=False: the argument checks would read the device (a host sync) at every step
        return torch.distributions.Normal(self.act_mean(actor_obs), self.log_std.exp(), validate_args=False)

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.critic_norm(critic_obs))

    def update_normalizers(self, actor_obs: torch.Tensor, critic_obs: torch.Tensor) -> None:
        self.actor_norm.update(actor_obs)
        self.critic_norm.update(critic_obs)


class TeacherActorCritic(ActorCritic):
    """A privileged teacher: the actor reads the policy group and a latent of the privileged extras.

    The task's privileged group must start with the (noise-free) policy terms, as locomotion tasks' does; the
    extras are `privileged[:, policy_dim:]` (true velocity, friction, masses, motor strength, height scan...).
    Actor input = [policy, extras] [B, P + E], normalized; encoder(extras) -> latent z [B, L];
    actor head([policy, z]) -> mean [B, A]. RMA-style students regress z and reuse the frozen head.
    """

    reads_privileged = True

    def __init__(self, policy_dim: int, critic_dim: int, num_actions: int, *, encoder_hidden: list[int],
                 latent_dim: int, actor_hidden: list[int], critic_hidden: list[int], activation: str = "elu",
                 init_std: float = 1.0) -> None:
        if critic_dim <= policy_dim:
            raise ValueError(f"a teacher needs privileged extras: privileged dim {critic_dim} <= policy dim "
                             f"{policy_dim}")
        super().__init__(critic_dim, critic_dim, num_actions, actor_hidden=actor_hidden, critic_hidden=critic_hidden,
                         activation=activation, init_std=init_std, _actor_in=policy_dim + latent_dim)
        self.policy_dim, self.latent_dim = policy_dim, latent_dim
        self.encoder = mlp(critic_dim - policy_dim, encoder_hidden, latent_dim, activation)

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([obs["policy"], obs["privileged"][:, self.policy_dim:]], dim=1)

    def head(self, policy_normed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Action mean from the normalized policy observation [B, P] and a latent [B, L]."""
        return self.actor(torch.cat([policy_normed, z], dim=1))

    def act_with_latent(self, actor_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, P + E] -> (action mean [B, A], latent z [B, L]), the encoder run once."""
        x = self.actor_norm(actor_obs)
        z = self.encoder(x[:, self.policy_dim:])
        return self.head(x[:, :self.policy_dim], z), z

    def act_mean(self, actor_obs: torch.Tensor) -> torch.Tensor:
        return self.act_with_latent(actor_obs)[0]


def build_policy(network: NetworkCfg, obs_dims: dict[str, int], num_actions: int, task: str) -> ActorCritic:
    """The actor-critic a config's `network` section describes, for a task's observation sizes."""
    n = network
    if n.privileged_encoder:
        if obs_dims["privileged"] <= obs_dims["policy"]:
            raise ConfigError(f"network.privileged_encoder: task {task} has no privileged extras (privileged "
                              f"{obs_dims['privileged']} <= policy {obs_dims['policy']}) for a teacher to read")
        return TeacherActorCritic(obs_dims["policy"], obs_dims["privileged"], num_actions,
                                  encoder_hidden=n.privileged_encoder, latent_dim=n.latent_dim,
                                  actor_hidden=n.actor_hidden, critic_hidden=n.critic_hidden,
                                  activation=n.activation, init_std=n.init_std)
    return ActorCritic(obs_dims["policy"], obs_dims["privileged"], num_actions, actor_hidden=n.actor_hidden,
                       critic_hidden=n.critic_hidden, activation=n.activation, init_std=n.init_std)
