"""DSRL: steer a frozen diffusion policy by learning, with SAC, the initial noise it denoises from (Wagenmaker et al.,
"Steering Your Diffusion Policy with Latent Space Reinforcement Learning", 2025).

The diffusion model is frozen: its weights are in no optimizer and never change (a test compares them bit for bit).
The RL agent's action is the noise w [Tp * A] in the box [-bound, bound] (or only its executed positions,
`steer: executed`). `NoiseSteeredTask` wraps the simulated task: it denoises w deterministically with DDIM into an
action chunk, executes `execute` of its actions and returns their summed reward (or DSRL's sparse success reward),
so one RL step is one chunk. Its observation is the diffusion model's own condition (the last
`obs_horizon` frames, min-max normalized). `SAC` (twin Q with target networks, a tanh-Gaussian actor, learned
temperature; one replay buffer on the task's device) learns pi(w | frames) through the shared Runner; evaluation
denoises the actor's mean noise (`steer`).

Simplifications, stated: an episode that ends inside a chunk (auto-reset) runs the chunk's remaining actions in the
new episode, and its transition is terminal; a time-limit end is treated as terminal too; the replay buffer is not
in checkpoints (a resumed run refills it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.diffusion import DiffusionModel
from robolearn.learn.models.actor_critic import mlp

__all__ = ["DSRLCfg", "NoiseWindow", "NoiseSteeredTask", "NoiseActor", "SAC"]


@dataclass
class DSRLCfg:
    bound: float = 1.5  # the noise box [-bound, bound] per dimension (the prior's noise is N(0, 1))
    # which noise numbers the actor chooses: "chunk", all pred_horizon x action_dim of them; "executed", only those
    # at the executed actions' positions (execute x action_dim: 16 instead of 32 on panda-push), the others held at
    # 0, the prior's mode
    steer: str = "chunk"
    # the RL reward per chunk: "task", the task's reward summed over the executed actions; "success", -1 per chunk
    # until the goal is reached and 0 on the chunk that reaches it, which ends the RL episode (Robomimic's sparse
    # reward, as DSRL trains; the simulated episode runs on)
    reward: str = "task"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    learning_rate: float = 3.0e-4
    gamma: float = 0.99  # per chunk
    # n-step targets: the rewards of the next n chunks of the same env (up to its episode's end) and a bootstrap
    # discounted by gamma^n. 1 is SAC's one-step target; more carries a sparse reward back n chunks per update
    # (with the older behaviour noise's bias, as in DrQ-v2's 3-step returns)
    n_step: int = 1
    tau: float = 0.005  # Polyak rate of the target critics
    batch_size: int = 256
    buffer_size: int = 100_000  # transitions (chunks)
    random_steps: int = 1_000  # transitions before the actor acts, with the noise of `warmup`
    # "prior": the base policy as trained (N(0, 1) noise, clipped to the box), as DSRL seeds its buffer with the
    # diffusion policy's own rollouts; "uniform": uniform in the box
    warmup: str = "prior"
    gradient_steps: int = 64  # per iteration
    init_alpha: float = 0.1
    # target entropy = -scale * noise dims. 0 (DSRL's target entropy of 0) keeps each noise dimension about as
    # spread as N(0, 0.24^2); SAC's usual -dims (scale 1) lets each narrow to about N(0, 0.09^2)
    target_entropy_scale: float = 0.0

    def __post_init__(self) -> None:
        if not self.bound > 0 or not 0 < self.tau <= 1 or not 0 <= self.gamma < 1:
            raise ConfigError(f"dsrl: bound > 0, tau in (0, 1], gamma in [0, 1) expected; got {self.bound}, "
                              f"{self.tau}, {self.gamma}")
        if min(self.batch_size, self.buffer_size, self.gradient_steps, self.n_step) < 1 or self.random_steps < 0:
            raise ConfigError("dsrl: batch_size, buffer_size, gradient_steps and n_step must be >= 1, "
                              "random_steps >= 0")
        if self.steer not in ("chunk", "executed"):
            raise ConfigError(f"dsrl.steer: 'chunk' or 'executed' expected, got {self.steer!r}")
        if self.reward not in ("task", "success"):
            raise ConfigError(f"dsrl.reward: 'task' or 'success' expected, got {self.reward!r}")
        if self.warmup not in ("prior", "uniform"):
            raise ConfigError(f"dsrl.warmup: 'prior' or 'uniform' expected, got {self.warmup!r}")


class NoiseWindow(nn.Module):
    """Places the actor's noise [N, length * A] at chunk positions [start, start + length) of the full initial noise
    [N, Tp * A]; the other positions are 0 (the prior's mode). The whole chunk when start = 0 and length = Tp."""

    def __init__(self, pred_horizon: int, action_dim: int, start: int, length: int) -> None:
        super().__init__()
        if not (0 <= start and 1 <= length and start + length <= pred_horizon):
            raise ConfigError(f"dsrl: noise window [{start}, {start + length}) outside the chunk of {pred_horizon}")
        self.pred_horizon, self.action_dim, self.start, self.length = pred_horizon, action_dim, start, length
        self.dims = length * action_dim

    @classmethod
    def for_model(cls, model: DiffusionModel, steer: str) -> NoiseWindow:
        cfg = model.cfg
        if steer == "executed":
            return cls(cfg.pred_horizon, model.action_dim, cfg.obs_horizon - 1, cfg.execute)
        return cls(cfg.pred_horizon, model.action_dim, 0, cfg.pred_horizon)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.length == self.pred_horizon:
            return w
        full = w.new_zeros(w.shape[0], self.pred_horizon, self.action_dim)
        full[:, self.start:self.start + self.length] = w.view(w.shape[0], self.length, self.action_dim)
        return full.flatten(1)


class NoiseSteeredTask:
    """A task whose actions are the diffusion model's initial noise: one step denoises a chunk and runs `execute`
    of its actions. Exposes what the Runner reads of a task (reset, step, num_envs, device, check, close,
    episode_stats, state_dict); `success` episodes are counted as the evaluation does (the goal reached at any
    step)."""

    def __init__(self, task: Any, model: DiffusionModel, obs_keys: list[str], window: NoiseWindow | None = None,
                 reward: str = "task") -> None:
        from robolearn.learn.diffusion_eval import observation_frames

        self.task, self.model, self.obs_keys = task, model.eval().requires_grad_(False), list(obs_keys)
        self._frames_of = observation_frames
        cfg = model.cfg
        self.window = window if window is not None else NoiseWindow.for_model(model, "chunk")
        self.sparse = reward == "success"
        self.num_envs, self.device, self.backend = task.num_envs, task.device, task.backend
        self.num_actions = self.window.dims
        self.num_obs = cfg.obs_horizon * model.obs_dim
        self.dt = task.dt * cfg.execute
        n = self.num_envs
        self._frames = torch.zeros(n, cfg.obs_horizon, model.obs_dim, device=self.device)
        self._reached = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._episodes = torch.zeros((), device=self.device)
        self._successes = torch.zeros((), device=self.device)

    def _fill(self, mask: torch.Tensor | None = None) -> None:
        frame = self._frames_of(self.task, self.obs_keys).to(self.device)
        if mask is None:
            self._frames[:] = frame.unsqueeze(1)
        else:  # a new episode: its history is its first frame, repeated (as in evaluation)
            self._frames = torch.where(mask[:, None, None], frame.unsqueeze(1).expand_as(self._frames),
                                       torch.cat((self._frames[:, 1:], frame.unsqueeze(1)), dim=1))

    def observe(self) -> dict[str, torch.Tensor]:
        return {"policy": self.model.condition(self._frames)}

    def reset(self) -> dict[str, torch.Tensor]:
        self.task.reset()
        self._reached.zero_()
        self._fill()
        return self.observe()

    def chunk(self, noise: torch.Tensor) -> torch.Tensor:
        """The raw actions [N, execute, A] that the actor's `noise` [N, window dims] denoises to (DDIM,
        deterministic)."""
        cfg, model = self.model.cfg, self.model
        full = self.window(noise)
        x = model.denoise(self._frames, noise=full.reshape(self.num_envs, cfg.pred_horizon, model.action_dim))
        return model.action_norm.inverse(x)[:, cfg.obs_horizon - 1:cfg.obs_horizon - 1 + cfg.execute]

    def step(self, noise: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor, dict[str, Any]]:
        actions = self.chunk(noise)
        n = self.num_envs
        reward = torch.zeros(n, device=self.device)
        cost = torch.zeros(n, device=self.device)
        terminated = torch.zeros(n, dtype=torch.bool, device=self.device)
        truncated = torch.zeros(n, dtype=torch.bool, device=self.device)
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        succeeded = torch.zeros(n, dtype=torch.bool, device=self.device)  # the goal reached within this chunk
        info: dict[str, Any] = {}
        for k in range(actions.shape[1]):
            _, r, c, term, trunc, info = self.task.step(actions[:, k])
            last = info["ended"]
            success = torch.where(last["mask"], last["success"].bool(), self.task.success())
            succeeded |= alive & success
            self._reached |= alive & success
            reward += r * alive
            cost += c * alive
            ended = alive & last["mask"]
            terminated |= ended & term
            truncated |= ended & ~term
            self._episodes += ended.sum()
            self._successes += (ended & self._reached).sum()
            self._reached &= ~ended
            alive &= ~ended
            self._fill(last["mask"])
        if self.sparse:
            reward = succeeded.float() - 1.0
            terminated |= succeeded
            truncated &= ~succeeded
        return self.observe(), reward, cost, terminated, truncated, info

    def episode_stats(self) -> dict[str, float]:
        stats = self.task.episode_stats()
        episodes = float(self._episodes)
        if episodes > 0:
            stats["success"] = float(self._successes) / episodes
        self._episodes.zero_()
        self._successes.zero_()
        return stats

    def check(self) -> None:
        self.task.check()

    def close(self) -> None:
        self.task.close()

    def state_dict(self) -> dict[str, Any]:
        return self.task.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.load_state_dict(state)


class NoiseActor(nn.Module):
    """pi(w | obs): a tanh-squashed Gaussian scaled to [-bound, bound]. `forward(obs)` is the deterministic noise
    (bound * tanh(mean)) that evaluation and `steer` use."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], bound: float) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim, "relu")
        self.bound = bound

    def _stats(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(-5.0, 2.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(self._stats(obs)[0])

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, log pi(w | obs)) with the reparameterization trick."""
        mean, log_std = self._stats(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        squashed = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log(self.bound * (1 - squashed.pow(2)) + 1e-6).sum(-1)
        return self.bound * squashed, log_prob


def _critic(inp: int, hidden: list[int]) -> nn.Sequential:
    """Q(obs, w): an MLP with LayerNorm after each hidden layer. Without it, Q diverged on panda-push (64 noise
    dimensions: Q rose to 2,600 in 13k updates against returns of about 4 per episode, the actor saturating the box
    where the critic extrapolates); LayerNorm critics are the usual fix (as in RLPD)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inp, width), nn.LayerNorm(width), nn.ReLU()]
        inp = width
    return nn.Sequential(*layers, nn.Linear(inp, 1))


class SAC(Algorithm):
    """Soft actor-critic over the noise of a NoiseSteeredTask (or any task with a bounded action box)."""

    checkpoint_format = "robolearn-dsrl"
    progress_metric = ("success", "episode/success")

    def __init__(self, cfg: DSRLCfg, obs_dim: int, act_dim: int, num_envs: int, device: torch.device | str, *,
                 chunk_steps: int = 1) -> None:
        self.cfg, self.device, self.num_envs, self.act_dim = cfg, torch.device(device), num_envs, act_dim
        self.chunk_steps = chunk_steps  # simulator steps per transition (the chunk's executed actions)
        with self.device:
            self.actor = NoiseActor(obs_dim, act_dim, cfg.hidden, cfg.bound)
            self.critics = nn.ModuleList(_critic(obs_dim + act_dim, cfg.hidden) for _ in range(2))
            self.targets = copy.deepcopy(self.critics).requires_grad_(False)
            self.log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=True)
            size = cfg.buffer_size
            self.buffer = {"obs": torch.zeros(size, obs_dim), "act": torch.zeros(size, act_dim),
                           "rew": torch.zeros(size), "next": torch.zeros(size, obs_dim), "done": torch.zeros(size)}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.learning_rate)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.learning_rate)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.learning_rate)
        self.target_entropy = -cfg.target_entropy_scale * act_dim
        self.stored = 0  # transitions in this process's buffer (a host counter: no device sync)
        self.transitions = 0  # all transitions of the run (resumes included)
        self.gradient_steps_done = 0
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs["policy"]
        if self.transitions < self.cfg.random_steps:
            bound = self.cfg.bound
            if self.cfg.warmup == "prior":
                w = torch.randn(x.shape[0], self.act_dim, device=x.device).clamp(-bound, bound)
            else:
                w = (torch.rand(x.shape[0], self.act_dim, device=x.device) * 2 - 1) * bound
        else:
            w, _ = self.actor.sample(x)
        self._last = (x.clone(), w)
        return w

    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        assert self._last is not None, "act before process_env_step"
        x, w = self._last
        n, size = x.shape[0], self.cfg.buffer_size
        idx = torch.arange(self.stored, self.stored + n, device=self.device) % size
        self.buffer["obs"][idx] = x
        self.buffer["act"][idx] = w
        self.buffer["rew"][idx] = reward
        self.buffer["next"][idx] = obs["policy"]
        self.buffer["done"][idx] = (terminated | truncated).float()
        self.stored += n
        self.transitions += n

    def _sample(self, filled: int) -> dict[str, torch.Tensor]:
        """A minibatch with its n-step return `rew` and the bootstrap's `next` observation and `discount`
        (gamma^k, 0 after a terminal). Transitions are stored num_envs at a time, so the same env's next one lies
        num_envs slots later; a row uses the k <= n_step transitions that are stored and precede its episode's
        end."""
        cfg, n = self.cfg, self.num_envs
        pos = self.stored - filled + torch.randint(0, filled, (cfg.batch_size,), device=self.device)  # absolute
        later = pos[:, None] + n * torch.arange(cfg.n_step, device=self.device)  # [B, n_step]
        idx = later % cfg.buffer_size
        done = self.buffer["done"][idx]
        ended_before = torch.cumsum(done, 1) - done  # terminals among the earlier steps of the row
        used = (later < self.stored) & (ended_before == 0)
        k = used.sum(1)  # >= 1: the first transition is always used
        powers = cfg.gamma ** torch.arange(cfg.n_step, device=self.device, dtype=torch.float32)
        last = idx.gather(1, (k - 1)[:, None]).squeeze(1)
        return {"obs": self.buffer["obs"][idx[:, 0]], "act": self.buffer["act"][idx[:, 0]],
                "rew": (self.buffer["rew"][idx] * used * powers).sum(1), "next": self.buffer["next"][last],
                "discount": cfg.gamma ** k.float() * (1 - self.buffer["done"][last])}

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        filled = min(self.stored, cfg.buffer_size)
        if filled < cfg.batch_size or self.transitions < cfg.random_steps:
            return {"dsrl/buffer": float(filled)}
        totals = torch.zeros(4, device=self.device)
        for _ in range(cfg.gradient_steps):
            b = self._sample(filled)
            alpha = self.log_alpha.exp().detach()
            with torch.no_grad():
                next_w, next_logp = self.actor.sample(b["next"])
                q_next = torch.min(*(t(torch.cat((b["next"], next_w), -1)).squeeze(-1) for t in self.targets))
                target = b["rew"] + b["discount"] * (q_next - alpha * next_logp)
            sa = torch.cat((b["obs"], b["act"]), -1)
            critic_loss = sum(F.mse_loss(q(sa).squeeze(-1), target) for q in self.critics)
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
            w, logp = self.actor.sample(b["obs"])
            q_pi = torch.min(*(q(torch.cat((b["obs"], w), -1)).squeeze(-1) for q in self.critics))
            actor_loss = (alpha * logp - q_pi).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            with torch.no_grad():
                for target_net, net in zip(self.targets, self.critics, strict=True):
                    for tp, p in zip(target_net.parameters(), net.parameters(), strict=True):
                        tp.lerp_(p, cfg.tau)
            totals += torch.stack((critic_loss.detach(), actor_loss.detach(), -logp.detach().mean(),
                                   q_pi.detach().mean()))
        self.gradient_steps_done += cfg.gradient_steps
        critic, actor, entropy, q = (totals / cfg.gradient_steps).tolist()  # one host read per iteration
        return {"loss/critic": critic, "loss/actor": actor, "dsrl/entropy": entropy, "dsrl/q": q,
                "dsrl/alpha": float(self.log_alpha.detach().exp()), "dsrl/buffer": float(filled)}

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critics": self.critics.state_dict(),
                "targets": self.targets.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "transitions": self.transitions,
                "gradient_steps": self.gradient_steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.actor.load_state_dict(state["actor"])
            self.critics.load_state_dict(state["critics"])
            self.targets.load_state_dict(state["targets"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"DSRL networks do not match the checkpoint ({type(exc).__name__})") from None
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        # The buffer is not saved: a resumed run refills it with the actor's own noise (no uniform phase again)
        # and updates once it holds a batch.
        self.transitions = int(state["transitions"])
        self.gradient_steps_done = int(state["gradient_steps"])

    def deployable(self) -> nn.Module:
        return self.actor

    def summary(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"transitions": self.transitions, "sim_steps": self.transitions * self.chunk_steps,
                "gradient_steps": self.gradient_steps_done}
