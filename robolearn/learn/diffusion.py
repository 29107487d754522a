"""Diffusion Policy (Chi et al. 2023) from demonstrations: normalization, training windows, the offline learner.

A policy conditions on the last `obs_horizon` observation frames and denoises a chunk of `pred_horizon` actions
(`ConditionalUnet1D`), of which the deployed policy executes `execute` before it plans again. Training adds noise
with diffusers' DDPM scheduler (`train_steps` levels) and regresses it (epsilon prediction, MSE); sampling runs
diffusers' DDIM with `inference_steps` steps. Observations and actions are scaled to [-1, 1] with the dataset's
min and max (`meta/stats.json`). AdamW with linear warmup and cosine decay; an EMA of the weights (diffusers'
`EMAModel`, decay warming up with power 0.75 as in the paper) is what evaluation and export use.

Sampling modes (`DiffusionCfg.sampler`, `ChunkPlanner`):
- ddim: every chunk from Gaussian noise in `inference_steps` DDIM steps (the default);
- ddpm: every chunk in all `train_steps` DDPM steps (the paper's training-time sampler; slow, the reference);
- warm: real-time iteration (RTI-DP): the first chunk as ddim; each later one starts from the previous chunk shifted
  by the `execute` actions run since (its tail repeats the last action), re-noised to the level of the last
  `warm_steps` steps of a `warm_schedule_steps`-step DDIM schedule, and refined in those `warm_steps` steps. With
  a 5-step schedule a 3-step warm plan starts at noise level 40 of 100 (10 steps: level 20): on panda-push that
  kept DDIM 10's success (77% vs 77.5%, 200 episodes) where the 10-step tail lost 6 points.

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

__all__ = ["SAMPLERS", "DiffusionCfg", "MinMaxNormalizer", "ChunkWindows", "DiffusionModel", "DiffusionLearner",
           "OnnxDenoiser", "ChunkPlanner", "DiffusionPolicy"]

SAMPLERS = ("ddim", "ddpm", "warm")


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
    sampler: str = "ddim"  # ddim | ddpm | warm (see the module doc)
    warm_steps: int = 3  # warm: DDIM steps that refine the shifted chunk (the last ones of the warm schedule)
    warm_schedule_steps: int = 0  # warm: the DDIM schedule those steps end (0: inference_steps)
    beta_schedule: str = "squaredcos_cap_v2"
    batch_size: int = 256
    learning_rate: float = 1.0e-4
    weight_decay: float = 1.0e-6
    warmup_steps: int = 500
    total_steps: int = 0  # gradient steps of the cosine decay (to 0); 0: the run's budget (set by its config)
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    # image policies (the run's image_keys): each camera frame is resized to image_size (H, W), cropped to crop
    # (random in training, centered when acting) and encoded (ImageEncoder) to image_features numbers per camera
    image_size: list[int] = field(default_factory=lambda: [96, 128])
    crop: list[int] = field(default_factory=lambda: [88, 120])
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    keypoints: int = 32
    image_features: int = 64

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
        if self.total_steps < 0:
            raise ConfigError(f"diffusion.total_steps must be >= 0 (0: the run's budget), got {self.total_steps}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"diffusion.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        schedule = self.warm_schedule_steps or self.inference_steps
        if not 0 <= self.warm_schedule_steps <= self.train_steps:
            raise ConfigError(f"diffusion.warm_schedule_steps must be in [0, train_steps={self.train_steps}] (0: "
                              f"inference_steps), got {self.warm_schedule_steps}")
        if not 1 <= self.warm_steps <= schedule:
            raise ConfigError(f"diffusion.warm_steps must be in [1, {schedule}] (the warm schedule's steps: "
                              f"warm_schedule_steps, or inference_steps), got {self.warm_steps}")
        if len(self.image_size) != 2 or len(self.crop) != 2 or not all(
                0 < c <= s for c, s in zip(self.crop, self.image_size, strict=True)):
            raise ConfigError(f"diffusion.crop must be 2 sizes within diffusion.image_size, got {self.crop} and "
                              f"{self.image_size}")


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
    """Training samples from episodes: (observations [obs_horizon, O], actions [pred_horizon, A], camera images
    [obs_horizon, K, 3, H, W] uint8 or None) per frame. `images`: per episode [T, K, 3, H, W] uint8."""

    def __init__(self, episodes: list[tuple[np.ndarray, np.ndarray]], obs_horizon: int, pred_horizon: int,
                 images: list[np.ndarray] | None = None) -> None:
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
        self.images = None
        if images is not None:
            if [len(x) for x in images] != [len(o) for o in obs]:
                raise ConfigError("diffusion: the camera frames do not match the episodes' lengths")
            self.images = torch.from_numpy(np.concatenate(images))
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

    def to(self, device: torch.device | str) -> ChunkWindows:
        """Move the frames and index tables (e.g. to the GPU that trains); returns self."""
        for name in ("obs", "actions", "obs_index", "act_index", "images"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        images = None if self.images is None else self.images[self.obs_index[idx]]
        return self.obs[self.obs_index[idx]], self.actions[self.act_index[idx]], images


class DiffusionModel(nn.Module):
    """Normalizers + denoiser (+ camera encoder) + the samplers: raw observation frames [B, To, O] (and camera
    images [B, To, K, 3, H, W] uint8 for `cameras` K > 0) -> raw action chunk [B, Tp, A]."""

    def __init__(self, cfg: DiffusionCfg, obs_dim: int, action_dim: int, obs_norm: MinMaxNormalizer,
                 action_norm: MinMaxNormalizer, cameras: int = 0) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler

        from robolearn.learn.models.image_encoder import ImageEncoder

        self.cfg, self.obs_dim, self.action_dim, self.cameras = cfg, obs_dim, action_dim, cameras
        self.obs_norm, self.action_norm = obs_norm, action_norm
        self.encoder = ImageEncoder(crop=cfg.crop, channels=cfg.encoder_channels, keypoints=cfg.keypoints,
                                    feature_dim=cfg.image_features) if cameras else None
        self.cond_dim = cfg.obs_horizon * (obs_dim + cameras * cfg.image_features)
        self.denoiser = ConditionalUnet1D(action_dim, self.cond_dim, down_dims=cfg.down_dims,
                                          kernel_size=cfg.kernel_size, groups=cfg.groups, step_dim=cfg.step_dim)
        schedule = dict(num_train_timesteps=cfg.train_steps, beta_schedule=cfg.beta_schedule, clip_sample=True,
                        prediction_type="epsilon")
        self.ddim = DDIMScheduler(**schedule)
        self.ddpm = DDPMScheduler(**schedule)

    def nets(self) -> list[nn.Module]:
        """The trained networks (the optimizer's and the EMA's parameters): the denoiser and the camera encoder."""
        return [self.denoiser] + ([self.encoder] if self.encoder is not None else [])

    def condition(self, obs: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's conditioning [B, cond_dim]: per frame the normalized observation and each camera's
        features, frames flattened."""
        cond = self.obs_norm(obs)
        if self.encoder is not None:
            if images is None:
                raise ConfigError(f"this diffusion policy sees {self.cameras} camera(s): give their images")
            cond = torch.cat([cond, self.encoder(images).flatten(2)], dim=-1)
        return cond.flatten(1)

    @torch.no_grad()
    def denoise(self, obs: torch.Tensor, *, sampler: str = "ddim", steps: int | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                start: torch.Tensor | None = None, start_steps: int | None = None,
                denoiser: nn.Module | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        """The normalized chunk [B, Tp, A] for observation frames `obs` [B, To, O].

        ddim (`steps`, default `inference_steps`) or ddpm (all `train_steps`) from Gaussian noise (or `noise`);
        with `start` (a normalized chunk: the warm start) DDIM noises it to the level of the last `start_steps` of
        the `steps`-step schedule and runs only those steps. `denoiser`: another engine for the same network (an
        `OnnxDenoiser`)."""
        net = denoiser if denoiser is not None else self.denoiser
        cond = self.condition(obs, images)
        shape = (obs.shape[0], self.cfg.pred_horizon, self.action_dim)
        eps = noise if noise is not None else torch.randn(shape, generator=generator, device=obs.device)
        if sampler == "ddpm":
            scheduler = self.ddpm
            scheduler.set_timesteps(self.cfg.train_steps)
        else:
            scheduler = self.ddim
            scheduler.set_timesteps(steps or self.cfg.inference_steps)
        timesteps = scheduler.timesteps
        if start is None:
            x = eps
        else:
            timesteps = timesteps[-(start_steps or self.cfg.warm_steps):]
            x = scheduler.add_noise(start, eps, timesteps[:1])
        for t in timesteps:
            out = net(x, t.to(obs.device), cond)
            x = scheduler.step(out, t, x, generator=generator).prev_sample if sampler == "ddpm" else \
                scheduler.step(out, t, x).prev_sample
        return x

    def sample(self, obs: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise from Gaussian noise (or `noise`, [B, Tp, A]) with DDIM in `steps` steps; raw actions."""
        return self.action_norm.inverse(self.denoise(obs, steps=steps, generator=generator, noise=noise,
                                                     images=images))


class DiffusionLearner:
    """One gradient step per `step()`: sample windows, noise the normalized chunk at a random level, regress the
    noise. Keeps the EMA copy (`ema_model`) that acts."""

    def __init__(self, model: DiffusionModel, windows: ChunkWindows, *, generator: torch.Generator) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        cfg = model.cfg
        if cfg.total_steps < 1:
            raise ConfigError("diffusion.total_steps: set the length of the learning-rate schedule (gradient steps)")
        self.model, self.windows, self.generator, self.cfg = model, windows, generator, cfg
        self.noise = DDPMScheduler(num_train_timesteps=cfg.train_steps, beta_schedule=cfg.beta_schedule,
                                   clip_sample=True, prediction_type="epsilon")
        # fused: one kernel for all parameters (10% less time per step than the default on a 2-core CPU)
        self.optimizer = torch.optim.AdamW(self._params(model), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           fused=True)
        self.schedule = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.total_steps)
        self._ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.ema = EMAModel(self._params(self._ema_model), use_ema_warmup=True, power=cfg.ema_power,
                            decay=cfg.ema_max_decay, foreach=True)
        self._ema_stale = False
        self.steps = 0

    @staticmethod
    def _params(model: DiffusionModel) -> list[nn.Parameter]:
        return [p for net in model.nets() for p in net.parameters()]

    @property
    def ema_model(self) -> DiffusionModel:
        """The model with the EMA weights (what acts and is exported), brought up to date when read."""
        if self._ema_stale:
            self.ema.copy_to(self._params(self._ema_model))
            self._ema_stale = False
        return self._ema_model

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        target = self.model.action_norm(actions)
        eps = torch.randn(target.shape, generator=self.generator, device=target.device)
        t = torch.randint(0, self.cfg.train_steps, (target.shape[0],), generator=self.generator,
                          device=target.device)
        noisy = self.noise.add_noise(target, eps, t)
        return nn.functional.mse_loss(self.model.denoiser(noisy, t, self.model.condition(obs, images)), eps)

    def step(self) -> float:
        idx = torch.randint(0, len(self.windows), (self.cfg.batch_size,), generator=self.generator,
                            device=self.generator.device)
        obs, actions, images = self.windows.batch(idx)
        loss = self.loss(obs, actions, images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.schedule.last_epoch < self.cfg.total_steps:  # past the end (a resumed run) the rate stays at 0
            self.schedule.step()
        self.ema.step(self._params(self.model))
        self._ema_stale = True
        self.steps += 1
        return loss.detach()

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema_model": self.ema_model.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self._ema_model.load_state_dict(state["ema_model"])
        self._ema_stale = False
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["rng"])
        self.steps = int(state["steps"])


class OnnxDenoiser(nn.Module):
    """The denoiser run by onnxruntime, the engine of the deploy runtime: the same (x, t, cond) -> noise on CPU
    tensors. At batch 1 it takes 2-3x less time per call than torch on this project's 2-core CPU (1.0 vs 2.5 ms for
    down_dims [32, 64, 128]); for large batches torch is faster. Exported once at construction (seconds)."""

    def __init__(self, model: DiffusionModel, *, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        from robolearn.learn.onnx_graph import onnx_bytes

        cfg = model.cfg
        example = (torch.zeros(2, cfg.pred_horizon, model.action_dim), torch.zeros(2, dtype=torch.long),
                   torch.zeros(2, model.cond_dim))
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(onnx_bytes(model.denoiser.eval(), example, ["x", "t", "cond"], ["eps"]),
                                            options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        steps = t.reshape(-1).expand(x.shape[0]).to(torch.long)
        out = self.session.run(None, {"x": x.cpu().numpy(), "t": steps.cpu().numpy(), "cond": cond.cpu().numpy()})
        return torch.from_numpy(out[0]).to(x.device)


class ChunkPlanner:
    """Plans chunks for B envs with the model's sampler: `plan(frames)` -> the actions from the current frame on,
    [B, Tp - To + 1, A] (raw). For `warm` it keeps each env's last normalized chunk; `reset(mask)` makes the
    masked envs (a new episode) start cold again. The caller executes `execute` actions of each plan before the
    next `plan` (what the warm start's shift assumes)."""

    def __init__(self, model: DiffusionModel, batch: int, *, sampler: str | None = None,
                 generator: torch.Generator | None = None, denoiser: nn.Module | None = None,
                 steer: nn.Module | None = None) -> None:
        self.model, self.batch, self.denoiser, self.steer = model, batch, denoiser, steer
        self.sampler = sampler or model.cfg.sampler
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if steer is not None and self.sampler != "ddim":
            raise ConfigError(f"a steered policy (DSRL) plans with ddim from its chosen noise, not {self.sampler!r}")
        self.generator = generator
        self._last: torch.Tensor | None = None  # [B, Tp, A] normalized
        self._cold = torch.ones(batch, dtype=torch.bool)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self._cold[:] = True
        else:
            self._cold |= mask.to(self._cold.device)

    @torch.no_grad()
    def plan(self, frames: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """`frames` [B, To, O]; `images` [B, To, K, 3, H, W] uint8 for a policy with cameras."""
        model, cfg = self.model, self.model.cfg
        if self.steer is not None:  # DSRL: the noise is the steering policy's choice for these frames
            noise = self.steer(model.condition(frames)).reshape(frames.shape[0], cfg.pred_horizon, model.action_dim)
            x = model.denoise(frames, noise=noise, denoiser=self.denoiser)
        elif self.sampler != "warm" or self._last is None or bool(self._cold.all()):
            x = model.denoise(frames, sampler="ddpm" if self.sampler == "ddpm" else "ddim", generator=self.generator,
                              denoiser=self.denoiser, images=images)
        else:
            shifted = torch.cat((self._last[:, cfg.execute:],
                                 self._last[:, -1:].expand(-1, cfg.execute, -1)), dim=1)
            x = model.denoise(frames, start=shifted, steps=cfg.warm_schedule_steps or None, generator=self.generator,
                              denoiser=self.denoiser, images=images)
            if self._cold.any():  # envs that started a new episode: a full plan from noise
                cold = self._cold.to(frames.device)
                x[cold] = model.denoise(frames[cold], generator=self.generator, denoiser=self.denoiser,
                                        images=None if images is None else images[cold])
        self._last = x
        self._cold[:] = False
        return model.action_norm.inverse(x)[:, cfg.obs_horizon - 1:]


class _ChunkGraph(nn.Module):
    """Stacked frames [B, To * O] -> the chunk's actions from the current frame on, [B, Tp - To + 1, A] (a cold
    DDIM plan: the stateless graph that export writes)."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.model.cfg
        chunk = self.model.sample(x.reshape(x.shape[0], cfg.obs_horizon, self.model.obs_dim))
        return chunk[:, cfg.obs_horizon - 1:]  # action i of the chunk goes with frame t - To + 1 + i


class DiffusionPolicy(Policy):
    """A trained diffusion model as a deployable, chunked Policy: it plans on the last `obs_horizon` frames and
    executes `execute` actions of each plan (the paper's receding horizon), with the config's sampler (or
    `sampler`)."""

    def __init__(self, model: DiffusionModel, *, sampler: str | None = None) -> None:
        cfg = model.cfg
        if model.cameras:
            raise ConfigError("a diffusion policy with cameras acts through `robolearn eval` (rendered cameras); as "
                              "a state-only Policy it would have no images")
        model.eval()
        self._graph = _ChunkGraph(model)
        self.planner = ChunkPlanner(model, 1, sampler=sampler)
        super().__init__(frame_dim=model.obs_dim, action_dim=model.action_dim, history=cfg.obs_horizon,
                         chunk=Chunk(horizon=cfg.pred_horizon - cfg.obs_horizon + 1, execute=cfg.execute))

    def graph(self) -> nn.Module:
        return self._graph

    def reset(self) -> None:
        super().reset()
        self.planner.reset()

    @torch.no_grad()
    def act_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        frames = self._push(obs).reshape(1, self.history, self.frame_dim)
        self.model_calls += 1
        return self.planner.plan(frames)[0]
