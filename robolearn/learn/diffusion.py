"""Diffusion Policy (Chi et al. 2023) from demonstrations: normalization, training windows, the offline learner.

A policy conditions on the last `obs_horizon` observation frames and denoises a chunk of `pred_horizon` actions
(`ConditionalUnet1D`), of which the deployed policy executes `execute` before it plans again. Training adds noise
with diffusers' DDPM scheduler (`train_steps` levels) and regresses it (epsilon prediction, MSE); sampling runs
diffusers' DDIM with `inference_steps` steps. Observations and actions are scaled to [-1, 1] with the dataset's
min and max (`meta/stats.json`). AdamW with linear warmup and cosine decay; an EMA of the weights (diffusers'
`EMAModel`, decay warming up with power 0.75 as in the paper) is what evaluation and export use.

Training windows follow the paper's sampler: every frame t of an episode starts one window; the observation frames
t - obs_horizon + 1 .. t and the actions t - obs_horizon + 1 .. t - obs_horizon + pred_horizon, indices clamped
to the episode (the first frame repeats before the start, the last action after the end).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robolearn.errors import ConfigError
from robolearn.learn.models.diffusion_unet import ConditionalUnet1D
from robolearn.learn.policy import Chunk, Policy

__all__ = ["DiffusionCfg", "MinMaxNormalizer", "ChunkWindows", "DiffusionModel", "DiffusionLearner", "DiffusionPolicy"]


@dataclass
class DiffusionCfg:
    obs_horizon: int = 2
    pred_horizon: int = 16
    execute: int = 8
    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_size: int = 5
    groups: int = 8
    step_dim: int = 64
    train_steps: int = 100  # DDPM noise levels in training
    inference_steps: int = 10  # DDIM steps when acting
    beta_schedule: str = "squaredcos_cap_v2"
    batch_size: int = 256
    learning_rate: float = 1.0e-4
    weight_decay: float = 1.0e-6
    warmup_steps: int = 500
    total_steps: int = 20000  # gradient steps over the run: the cosine decay reaches 0 there
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999

    def __post_init__(self) -> None:
        if self.obs_horizon < 1 or self.pred_horizon < 1:
            raise ConfigError(f"diffusion: obs_horizon and pred_horizon must be >= 1, got {self.obs_horizon} and "
                              f"{self.pred_horizon}")
        if not 1 <= self.execute <= self.pred_horizon - self.obs_horizon + 1:
            raise ConfigError(f"diffusion.execute must be in [1, pred_horizon - obs_horizon + 1] = "
                              f"[1, {self.pred_horizon - self.obs_horizon + 1}] (the actions from the current frame "
                              f"on), got {self.execute}")
        if not 1 <= self.inference_steps <= self.train_steps:
            raise ConfigError(f"diffusion.inference_steps must be in [1, train_steps={self.train_steps}], got "
                              f"{self.inference_steps}")


class MinMaxNormalizer(nn.Module):
    """x -> 2 (x - min) / (max - min) - 1 per dimension, and back. A dimension with max == min (constant in the
    data, e.g. panda-push's gripper, which the expert never closes) maps to 0, and `inverse` returns its value
    whatever it is given, so a policy holds it exactly. For actions (`constant_ok=False`) a dataset in which
    every dimension is constant is an error: there is nothing to learn, and the caller names the field."""

    def __init__(self, low: np.ndarray | torch.Tensor, high: np.ndarray | torch.Tensor, *, name: str,
                 constant_ok: bool = True) -> None:
        super().__init__()
        low_t = torch.as_tensor(np.asarray(low, dtype=np.float32)).reshape(-1)
        high_t = torch.as_tensor(np.asarray(high, dtype=np.float32)).reshape(-1)
        if low_t.shape != high_t.shape:
            raise ConfigError(f"{name}: min has {low_t.numel()} values, max {high_t.numel()}")
        if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()):
            raise ConfigError(f"{name}: min/max are not finite (NaN or inf in the data)")
        span = high_t - low_t
        if (span < 0).any():
            raise ConfigError(f"{name}: min > max in dimensions {(span < 0).nonzero().flatten().tolist()}")
        constant = span <= 1e-8
        if constant.all() and not constant_ok:
            raise ConfigError(f"{name}: every dimension is constant in the data (min == max): nothing to learn")
        # a constant dimension gets the range [value - 1, value + 1]: it maps to 0 (and is held on the way back)
        self.register_buffer("low", torch.where(constant, low_t - 1.0, low_t))
        self.register_buffer("span", torch.where(constant, torch.full_like(span, 2.0), span))
        self.register_buffer("constant", constant)

    @property
    def constant_dims(self) -> list[int]:
        return self.constant.nonzero().flatten().tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * (x - self.low) / self.span - 1.0

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.constant, self.low + 1.0, (y + 1.0) * 0.5 * self.span + self.low)


class ChunkWindows:
    """Training samples from episodes: (observations [obs_horizon, O], actions [pred_horizon, A]) per frame."""

    def __init__(self, episodes: list[tuple[np.ndarray, np.ndarray]], obs_horizon: int, pred_horizon: int) -> None:
        if not episodes:
            raise ConfigError("diffusion: no episodes to train on")
        obs = [np.asarray(o, dtype=np.float32) for o, _ in episodes]
        act = [np.asarray(a, dtype=np.float32) for _, a in episodes]
        for i, (o, a) in enumerate(zip(obs, act, strict=True)):
            if len(o) != len(a) or len(o) == 0:
                raise ConfigError(f"diffusion: episode {i} has {len(o)} observations and {len(a)} actions")
        lengths = np.array([len(o) for o in obs])
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self.obs = torch.from_numpy(np.concatenate(obs))
        self.actions = torch.from_numpy(np.concatenate(act))
        # index tables [windows, horizon] into the concatenated frames, clamped to each window's episode
        first = np.repeat(starts, lengths)
        last = np.repeat(starts + lengths - 1, lengths)
        t = np.arange(len(first))
        obs_idx = t[:, None] + np.arange(-obs_horizon + 1, 1)[None]
        act_idx = t[:, None] + np.arange(-obs_horizon + 1, pred_horizon - obs_horizon + 1)[None]
        self.obs_index = torch.from_numpy(np.clip(obs_idx, first[:, None], last[:, None]))
        self.act_index = torch.from_numpy(np.clip(act_idx, first[:, None], last[:, None]))

    def __len__(self) -> int:
        return len(self.obs_index)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.obs[self.obs_index[idx]], self.actions[self.act_index[idx]]


class DiffusionModel(nn.Module):
    """Normalizers + denoiser + the DDIM sampler: raw observation frames [B, To, O] -> raw action chunk [B, Tp, A]."""

    def __init__(self, cfg: DiffusionCfg, obs_dim: int, action_dim: int, obs_norm: MinMaxNormalizer,
                 action_norm: MinMaxNormalizer) -> None:
        super().__init__()
        from diffusers import DDIMScheduler

        self.cfg, self.obs_dim, self.action_dim = cfg, obs_dim, action_dim
        self.obs_norm, self.action_norm = obs_norm, action_norm
        self.denoiser = ConditionalUnet1D(action_dim, cfg.obs_horizon * obs_dim, down_dims=cfg.down_dims,
                                          kernel_size=cfg.kernel_size, groups=cfg.groups, step_dim=cfg.step_dim)
        self.sampler = DDIMScheduler(num_train_timesteps=cfg.train_steps, beta_schedule=cfg.beta_schedule,
                                     clip_sample=True, prediction_type="epsilon")

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs).flatten(1)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise from Gaussian noise (or `noise`, [B, Tp, A]) with DDIM in `steps` steps; raw actions."""
        cond = self.condition(obs)
        shape = (obs.shape[0], self.cfg.pred_horizon, self.action_dim)
        x = noise if noise is not None else torch.randn(shape, generator=generator, device=obs.device)
        self.sampler.set_timesteps(steps or self.cfg.inference_steps)
        for t in self.sampler.timesteps:
            eps = self.denoiser(x, t.to(obs.device), cond)
            x = self.sampler.step(eps, t, x).prev_sample
        return self.action_norm.inverse(x)


class DiffusionLearner:
    """One gradient step per `step()`: sample windows, noise the normalized chunk at a random level, regress the
    noise. Keeps the EMA copy (`ema_model`) that acts."""

    def __init__(self, model: DiffusionModel, windows: ChunkWindows, *, generator: torch.Generator) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        cfg = model.cfg
        self.model, self.windows, self.generator, self.cfg = model, windows, generator, cfg
        self.noise = DDPMScheduler(num_train_timesteps=cfg.train_steps, beta_schedule=cfg.beta_schedule,
                                   clip_sample=True, prediction_type="epsilon")
        self.optimizer = torch.optim.AdamW(model.denoiser.parameters(), lr=cfg.learning_rate,
                                           weight_decay=cfg.weight_decay)
        self.schedule = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.total_steps)
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.ema = EMAModel(self.ema_model.denoiser.parameters(), use_ema_warmup=True, power=cfg.ema_power,
                            decay=cfg.ema_max_decay)
        self.steps = 0

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        target = self.model.action_norm(actions)
        eps = torch.randn(target.shape, generator=self.generator, device=target.device)
        t = torch.randint(0, self.cfg.train_steps, (target.shape[0],), generator=self.generator,
                          device=target.device)
        noisy = self.noise.add_noise(target, eps, t)
        return nn.functional.mse_loss(self.model.denoiser(noisy, t, self.model.condition(obs)), eps)

    def step(self) -> float:
        idx = torch.randint(0, len(self.windows), (self.cfg.batch_size,), generator=self.generator)
        obs, actions = self.windows.batch(idx)
        loss = self.loss(obs, actions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.ema.step(self.model.denoiser.parameters())
        self.ema.copy_to(self.ema_model.denoiser.parameters())
        self.steps += 1
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema_model": self.ema_model.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema_model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["rng"])
        self.steps = int(state["steps"])


class _ChunkGraph(nn.Module):
    """Stacked frames [B, To * O] -> the chunk's actions from the current frame on, [B, Tp - To + 1, A]."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.model.cfg
        chunk = self.model.sample(x.reshape(x.shape[0], cfg.obs_horizon, self.model.obs_dim))
        return chunk[:, cfg.obs_horizon - 1:]  # action i of the chunk goes with frame t - To + 1 + i


class DiffusionPolicy(Policy):
    """A trained diffusion model as a deployable, chunked Policy: it plans on the last `obs_horizon` frames and
    executes `execute` actions of each plan (the paper's receding horizon)."""

    def __init__(self, model: DiffusionModel) -> None:
        cfg = model.cfg
        model.eval()
        self._graph = _ChunkGraph(model)
        super().__init__(frame_dim=model.obs_dim, action_dim=model.action_dim, history=cfg.obs_horizon,
                         chunk=Chunk(horizon=cfg.pred_horizon - cfg.obs_horizon + 1, execute=cfg.execute))

    def graph(self) -> nn.Module:
        return self._graph
