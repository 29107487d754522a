"""The denoising loop of a diffusion policy on the robot's computer: numpy around the bundle's denoiser graph.

The robot computer has no torch and no diffusers, so the sampler the bundle declares (`graphs[].diffusion`, see
`robolearn.deploy.bundle.DiffusionSpec`) is written out here: deterministic DDIM (eta 0) with epsilon prediction
and sample clipping, over the exact timesteps and cumulative alphas that training's diffusers scheduler used (the
exporter writes them; `tests/test_diffusion_deploy.py` checks this loop against diffusers' `DDIMScheduler` step
for step). One plan is `len(timesteps)` graph calls at batch 1 (`warm`: `len(warm_timesteps)` after the first).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from robolearn.deploy.bundle import DiffusionSpec, GraphSpec, OnnxGraph
from robolearn.errors import BundleError

__all__ = ["DiffusionSampler", "area_resize"]


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A camera frame [H, W, 3] (uint8 RGB) -> [3, height, width] float32 in 0..255, each pixel the mean of the
    source pixels it covers (rows floor(i H / h) .. ceil((i + 1) H / h)), rounded to integers: what training's
    `resize_frames` (torch area interpolation, then uint8) gives, within 1 level."""
    x = np.asarray(image, dtype=np.float64)
    for axis, n in ((0, height), (1, width)):
        size = x.shape[axis]
        if size != n:
            i = np.arange(n)
            start, end = (i * size) // n, -((-(i + 1) * size) // n)
            total = np.concatenate([np.zeros_like(np.take(x, [0], axis=axis)), np.cumsum(x, axis=axis)], axis=axis)
            shape = [1] * x.ndim
            shape[axis] = n
            x = (np.take(total, end, axis=axis) - np.take(total, start, axis=axis)) / (end - start).reshape(shape)
    return np.clip(np.rint(x), 0, 255).astype(np.float32).transpose(2, 0, 1)


class DiffusionSampler:
    """`sampler(obs) -> chunk [pred_horizon - obs_horizon + 1, A]` (raw actions from the current frame on), obs =
    the stacked state frames [obs_horizon * O], or for an image policy (state frames, [each camera's current
    frame]) with frames as the camera gives them ([H, W, 3] uint8 RGB, resized here by `area_resize`, in the policy
    thread) or already resized ([3, h, w]). `observe(obs)` (every policy step, before a plan) keeps the last
    obs_horizon camera frames; `reset()` forgets them and the previous plan (a warm start begins cold again).
    `noise` fixes the initial noise of the next plans (tests, parity); else it is drawn from a generator seeded
    with `seed`."""

    def __init__(self, graph: OnnxGraph, spec: GraphSpec, *, encoders: dict[str, OnnxGraph] | None = None,
                 seed: int = 0) -> None:
        if spec.diffusion is None or spec.chunk is None:
            raise BundleError(f"graph {spec.name!r}: not a denoiser (no diffusion section)")
        d: DiffusionSpec = spec.diffusion
        self.graph, self.spec, self.d = graph, spec, d
        self.execute = spec.chunk.execute
        self.alphas = np.asarray(d.alphas_cumprod, dtype=np.float64)
        self.timesteps = [int(t) for t in d.timesteps]
        self.obs_low = np.asarray(d.obs_low, dtype=np.float32)
        self.obs_span = np.asarray(d.obs_span, dtype=np.float32)
        self.act_low = np.asarray(d.action_low, dtype=np.float32)
        self.act_span = np.asarray(d.action_span, dtype=np.float32)
        self.act_constant = np.asarray(d.action_constant, dtype=bool)
        self.shape = (1, d.pred_horizon, len(d.action_low))
        self.rng = np.random.default_rng(seed)
        self.noise: np.ndarray | None = None
        self._last: np.ndarray | None = None  # the previous plan, normalized [1, Tp, A]
        self.calls = 0  # graph evaluations
        encoders = encoders or {}
        missing = [c.graph for c in d.cameras if c.graph not in encoders]
        if missing:
            raise BundleError(f"graph {spec.name!r}: encoder graph {missing[0]!r} is not loaded")
        self.cameras = [(c, encoders[c.graph]) for c in d.cameras]
        self._images: deque[list[np.ndarray]] = deque(maxlen=d.obs_horizon)  # per frame: one image per camera

    def reset(self) -> None:
        self._last = None
        self._images.clear()

    def observe(self, obs: np.ndarray | tuple[np.ndarray, list[np.ndarray]]) -> None:
        """Keep this step's camera frames; a fresh start repeats the first."""
        if not self.cameras:
            return
        if not isinstance(obs, tuple) or len(obs[1]) != len(self.cameras):
            raise BundleError(f"the policy sees cameras {[c.name for c, _ in self.cameras]}: give (state, frames) "
                              f"with one frame per camera")
        images = []
        for (cam, _), frame in zip(self.cameras, obs[1], strict=True):
            frame = np.asarray(frame)
            if frame.shape == (3, cam.height, cam.width):
                images.append(frame.astype(np.float32))
            elif frame.ndim == 3 and frame.shape[2] == 3:
                images.append(area_resize(frame, cam.height, cam.width))
            else:
                raise BundleError(f"camera {cam.name}: expected an RGB frame [H, W, 3], got shape {frame.shape}")
        if not self._images:
            self._images.extend([images] * self.d.obs_horizon)
        else:
            self._images.append(images)

    def condition(self, obs: np.ndarray) -> np.ndarray:
        """cond [1, obs_horizon * (O + features)]: per frame the normalized state and each camera's features."""
        state = obs[0] if isinstance(obs, tuple) else obs
        frames = np.asarray(state, dtype=np.float32).reshape(self.d.obs_horizon, -1)
        cond = 2.0 * (frames - self.obs_low) / self.obs_span - 1.0
        if self.cameras:
            if not self._images:
                self.observe(obs)
            features = [encoder.run({encoder.spec.input: np.stack([f[k] for f in self._images])})[encoder.spec.output]
                        for k, (_, encoder) in enumerate(self.cameras)]
            cond = np.concatenate([cond, *features], axis=1)
        return cond.reshape(1, -1).astype(np.float32)

    def _alpha_prev(self, i: int, timesteps: list[int]) -> float:
        return float(self.alphas[timesteps[i + 1]]) if i + 1 < len(timesteps) else self.d.final_alpha_cumprod

    def denoise(self, cond: np.ndarray, x: np.ndarray, timesteps: list[int]) -> np.ndarray:
        """Run the DDIM steps `timesteps` from `x` [1, Tp, A] (normalized) under `cond`."""
        x = x.astype(np.float64)
        clip = self.d.clip_sample
        for i, t in enumerate(timesteps):
            eps = self.graph.run({"x": x.astype(np.float32), "t": np.array([t], dtype=np.int64),
                                  "cond": cond})["eps"].astype(np.float64)
            self.calls += 1
            a_t, a_prev = float(self.alphas[t]), self._alpha_prev(i, timesteps)
            x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
            if clip is not None:
                x0 = np.clip(x0, -clip, clip)
            x = np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps
        return x

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        cond = self.condition(obs)
        eps = self.noise if self.noise is not None else self.rng.standard_normal(self.shape)
        if self.d.sampler == "warm" and self._last is not None:
            k = self.execute
            shifted = np.concatenate([self._last[:, k:], np.repeat(self._last[:, -1:], k, axis=1)], axis=1)
            steps = [int(t) for t in self.d.warm_timesteps]
            a = float(self.alphas[steps[0]])
            x = self.denoise(cond, np.sqrt(a) * shifted + np.sqrt(1.0 - a) * eps, steps)
        else:
            x = self.denoise(cond, eps, self.timesteps)
        self._last = x
        actions = np.where(self.act_constant, self.act_low + 1.0, (x[0] + 1.0) * 0.5 * self.act_span + self.act_low)
        return actions[self.d.obs_horizon - 1:].astype(np.float32)
