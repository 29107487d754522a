"""Task = batched environment: owns observations, rewards, commands, terminations, randomization.

`reset() -> obs`, `step(actions) -> (obs, reward, terminated, truncated, info)`; every tensor is
`[num_envs, ...]` on the task's device (`device="cpu"` or `"cuda"`; with a GPU backend the whole step stays on
the GPU); `obs` is a dict of groups: `policy` (what a real robot measures, noisy) and `privileged`
(critic/teacher only). Envs reset themselves when done (auto-reset): the returned `obs` of a finished env is the
first observation of its next episode.

No host sync per step: resets are computed for every env and applied where a bool mask says (`reset_idx(mask)`),
never by gathering the indices of the envs that ended, whose count would have to reach the host; per-episode
statistics are summed on the device and read once per training iteration (`episode_stats`); non-finite actions
are zeroed and flagged, and `check()` (once per iteration) raises on them and on backend faults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends import make_backend
from robolearn.sim.robots.robot_cfg import RobotCfg, load_robot_cfg
from robolearn.sim.scene import RobotInfo, build_robot_scene, robot_info

__all__ = ["TaskCfg", "Task"]


@dataclass(kw_only=True)
class TaskCfg:
    robot: str
    sim_dt: float = 0.005  # s, physics step (PD runs at this rate)
    decimation: int = 4  # physics steps per policy step
    episode_length_s: float = 20.0
    action_scale: float = 0.25  # joint target = default pose + action_scale * action
    clip_actions: float = 10.0
    action_delay_substeps: tuple[int, int] = (0, 0)  # latency, in physics steps, sampled per episode
    rewards: dict[str, float] = field(default_factory=dict)  # reward term -> weight (scaled by policy dt)
    only_positive_rewards: bool = False

    def __post_init__(self) -> None:
        if self.sim_dt <= 0 or self.decimation < 1:
            raise ConfigError(f"sim_dt must be > 0 and decimation >= 1, got {self.sim_dt}, {self.decimation}")
        lo, hi = self.action_delay_substeps
        if not 0 <= lo <= hi < self.decimation:
            raise ConfigError(f"action_delay_substeps must satisfy 0 <= low <= high < decimation, got {lo}, {hi}")


class Task(ABC):
    """Base of all tasks: the step loop, auto-reset, reward bookkeeping. Subclasses fill in the MDP.

    Every buffer lives on `self.device`; a subclass creates its tensors with `device=self.device` and draws random
    numbers from `self.generator` (on the same device) through `robolearn.sim.math.sample_uniform` or with
    `device=self.device`."""

    cfg_cls: ClassVar[type[TaskCfg]] = TaskCfg
    cpu_only: ClassVar[bool] = False  # True: the task computes on the host (e.g. per-env IK) and refuses GPUs

    def __init__(self, cfg: TaskCfg, num_envs: int, *, backend: str = "mujoco", device: str = "cpu", seed: int = 0,
                 name: str = ""):
        self.name = name or type(self).__name__
        self.cfg = cfg
        self.num_envs = num_envs
        self.device = torch.device(device)
        if self.cpu_only and self.device.type != "cpu":
            raise ConfigError(f"task {self.name} runs on the CPU only (its actions go through per-env code on the "
                              f"host); got device {device!r}: use --device cpu")
        dev = self.device
        self.generator = torch.Generator(device=dev).manual_seed(seed)
        self.robot_cfg: RobotCfg = load_robot_cfg(cfg.robot)
        self.model = self.build_model(render=False)
        self.robot: RobotInfo = robot_info(self.model, self.robot_cfg)
        self.sim = make_backend(backend, self.model, num_envs, device)
        self.backend = backend
        self.num_actions = self.action_dim()
        self.dt = cfg.sim_dt * cfg.decimation
        self.max_episode_steps = int(round(cfg.episode_length_s / self.dt))
        self.episode_step = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.default_joint_pos = torch.tensor(self.robot.default_joint_pos, dtype=torch.float32, device=dev)
        # actuated joints in qpos / qvel, policy order
        self._qpos_adr = torch.as_tensor(self.robot.qpos_adr, dtype=torch.long, device=dev)
        self._qvel_adr = torch.as_tensor(self.robot.qvel_adr, dtype=torch.long, device=dev)
        self.actions = torch.zeros(num_envs, self.num_actions, device=dev)
        self.last_actions = torch.zeros(num_envs, self.num_actions, device=dev)
        self.targets = self.default_joint_pos.repeat(num_envs, 1)
        self._target_range = torch.tensor(self.robot.joint_range, dtype=torch.float32, device=dev)
        self.action_delay = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self._substep = torch.arange(cfg.decimation, device=dev).view(1, -1, 1)
        self._reward_fns = {}
        for term in cfg.rewards:
            fn = getattr(self, f"_reward_{term}", None)
            if fn is None:
                valid = sorted(n[len("_reward_") :] for n in dir(self) if n.startswith("_reward_"))
                raise ConfigError(f"task {self.name}: unknown reward term {term!r}; valid terms: {', '.join(valid)}")
            self._reward_fns[term] = fn
        # weight x dt per term [R, 1]; the terms' sums over the running episode [R, N] (one row per term)
        self._reward_scale = torch.tensor([[w * self.dt] for w in cfg.rewards.values()], device=dev).view(-1, 1)
        self.episode_sums = torch.zeros(len(cfg.rewards), num_envs, device=dev)
        self.sensors = torch.zeros(num_envs, cfg.decimation, self.model.nsensordata, dtype=torch.float64, device=dev)
        self._obs_scales: dict[str, torch.Tensor] = {}  # policy term -> its scale as a tensor, made once
        self._stat_keys: list[str] = []  # names of the rows of `_stat_sums` (set when the first episodes end)
        self._stat_sums = torch.zeros(0, device=dev)  # per-episode statistics summed over ended episodes
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=dev)  # a non-finite action since `check`
        # Skip masked work (resets, command resamples, pushes) when its mask is empty: a free check on the CPU; on
        # a GPU it would be a host sync per step, so there the masked ops always run (an empty mask changes nothing).
        self.skip_empty_masks = self.device.type == "cpu"
        self.setup()
        self.reset()  # the env is valid from construction on: observations() works before the first step

    # -- scene -------------------------------------------------------------------------------------------
    def build_model(self, render: bool = False) -> mujoco.MjModel:
        spec = build_robot_scene(self.robot_cfg, timestep=self.cfg.sim_dt, render=render)
        self.add_to_scene(spec, render)
        return spec.compile()

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:  # noqa: B027 - optional hook
        """Add task sensors, sites or objects to the scene before it is compiled."""

    def action_dim(self) -> int:
        """Size of one action (called once, before `setup`): one joint target per actuator unless a task maps
        its actions to joint targets in its own way (`action_to_ctrl`), e.g. end-effector motions."""
        return self.model.nu

    def sensor(self, name: str) -> slice:
        """Columns of sensor `name` in `self.sensors[..., :]`."""
        s = self.model.sensor(name)
        return slice(int(s.adr[0]), int(s.adr[0] + s.dim[0]))

    # -- the MDP, filled in by tasks ---------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Allocate task buffers (called once, after the backend exists)."""

    @abstractmethod
    def reset_idx(self, mask: torch.Tensor) -> None:
        """Reset the state, commands and randomization of the envs where `mask` [N] (bool) is True: compute new
        values for every env and keep them where the mask is set (`torch.where`), so no count reaches the host."""

    @abstractmethod
    def update_state(self) -> None:
        """Derive task quantities (body-frame velocities, contacts, ...) from the simulator state."""

    @abstractmethod
    def observations(self) -> dict[str, torch.Tensor]:
        """{'policy': [N, P], 'privileged': [N, C]}"""

    @abstractmethod
    def policy_terms(self) -> list[tuple[str, torch.Tensor, float | list[float]]]:
        """The noise-free `policy` group as named terms `(name, value [N, d], scale)`, in order.

        The names are the contract with the deploy runtime, which rebuilds the same vector from what a
        robot measures (see robolearn.hardware.observations): base_ang_vel (IMU gyro, body frame),
        projected_gravity (unit gravity in the body frame), velocity_command (vx, vy, wz), joint_pos (q minus
        the default pose), joint_vel, last_action, ee_pos (end effector in the base frame), target_pos,
        target_error (target_pos - ee_pos)."""

    def clean_policy_obs(self) -> torch.Tensor:
        """`policy` observations without noise: the terms scaled and concatenated."""
        parts = []
        for name, value, scale in self.policy_terms():
            if name not in self._obs_scales:
                self._obs_scales[name] = torch.as_tensor(scale, dtype=value.dtype, device=self.device)
            parts.append(value * self._obs_scales[name])
        return torch.cat(parts, dim=1)

    def policy_obs_layout(self) -> list[dict[str, Any]]:
        """[{name, dim, scale: [dim floats]}] of the `policy` group: what an exported bundle declares."""
        layout = []
        for name, value, scale in self.policy_terms():
            dim = value.shape[1]
            scale_list = [float(x) for x in torch.as_tensor(scale, dtype=torch.float64, device="cpu").expand(dim)]
            layout.append({"name": name, "dim": dim, "scale": scale_list})
        return layout

    @abstractmethod
    def terminated(self) -> torch.Tensor:
        """[N] bool: failure (not time-outs)."""

    def after_step(self) -> None:  # noqa: B027 - optional hook
        """Commands, pushes and curricula, once per policy step before resets."""

    def mocap_positions(self, env: int) -> dict[str, Any]:
        """{mocap body name: position [3]} of env `env`: markers (targets, goals) that renderers place."""
        return {}

    def command_ranges(self) -> dict[str, tuple[float, float]]:
        """Ranges of the commands the policy was trained on (written into exported bundles)."""
        return {}

    def metrics(self) -> dict[str, torch.Tensor]:
        """Per-env task metrics for the current step (e.g. tracking error); averaged by evaluation."""
        return {}

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        """Per-env metrics [N] of an episode that would end now (e.g. success), computed for every env before the
        resets; the step keeps the rows of the envs that did end."""
        return {}

    # -- the loop ----------------------------------------------------------------------------------------
    @property
    def obs_dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self.observations().items()}

    def any_set(self, mask: torch.Tensor) -> bool:
        """Whether masked work must run: `mask.any()` where reading it is free (the CPU), else always True."""
        return bool(mask.any()) if self.skip_empty_masks else True

    def _reset_envs(self, mask: torch.Tensor) -> None:
        self.reset_idx(mask)
        fresh = self.sim.forward(mask).to(self.device, self.sensors.dtype)
        self.sensors = torch.where(mask.view(-1, 1, 1), fresh.unsqueeze(1), self.sensors)
        self.update_state()

    def reset(self) -> dict[str, torch.Tensor]:
        self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self.observations()

    def action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        """Joint position targets per physics substep `[N, decimation, nu]`, with per-env action latency."""
        previous = self.targets
        self.targets = self.default_joint_pos + self.cfg.action_scale * actions
        delayed = self._substep < self.action_delay.view(-1, 1, 1)
        return torch.where(delayed, previous.unsqueeze(1), self.targets.unsqueeze(1)).to(torch.float64)

    def step(self, actions: torch.Tensor):
        """Advance every env one policy step. `info`: `time_outs` [N] (truncated, not failed), `metrics` (per-env
        step metrics), `ended` ({`mask` [N]: envs whose episode ended this step (they were reset), `terminated`,
        `length_s` and the `episode_metrics`, all [N] and meaningful where `mask` is set})."""
        self.last_actions = self.actions
        actions = actions.detach().to(self.device, torch.float32)
        finite = torch.isfinite(actions)
        self._nonfinite |= ~finite.all()
        self.actions = torch.where(finite, actions, 0.0).clamp(-self.cfg.clip_actions, self.cfg.clip_actions)
        self.sensors = self.sim.step(self.action_to_ctrl(self.actions))
        self.episode_step += 1
        self.update_state()
        terminated = self.terminated()
        truncated = self.episode_step >= self.max_episode_steps
        reward = self.compute_reward()
        self.after_step()
        done = terminated | truncated
        ended = {"mask": done, "terminated": terminated, "length_s": self.episode_step * self.dt,
                 **{k: v.clone() for k, v in self.episode_metrics().items()}}
        info: dict[str, Any] = {"time_outs": truncated & ~terminated, "metrics": self.metrics(), "ended": ended}
        if self.any_set(done):
            self._sum_episode_stats(ended)
            self._reset_envs(done)
        return self.observations(), reward, terminated, truncated, info

    def _sum_episode_stats(self, ended: dict[str, torch.Tensor]) -> None:
        """Add the episodes that end now to the device-side sums that `episode_stats` reads: one row per
        statistic, summed over the ended envs in a few kernels."""
        done, length_s = ended["mask"], ended["length_s"]
        extra = [k for k in ended if k not in ("mask", "terminated", "length_s")]
        rows = torch.cat([
            self.episode_sums / length_s.clamp(min=self.dt),  # reward terms per second of episode [R, N]
            torch.stack([length_s, (~ended["terminated"]).float(), done.float(), *(ended[k].float() for k in extra)]),
        ])
        totals = torch.where(done, rows, 0.0).sum(dim=1)
        keys = [*(f"reward/{k}" for k in self._reward_fns), "episode_length_s", "survival", "episodes", *extra]
        if self._stat_keys != keys:  # the first episodes: start the sums
            self._stat_keys, self._stat_sums = keys, torch.zeros(len(keys), device=self.device)
        self._stat_sums = self._stat_sums + totals

    def episode_stats(self) -> dict[str, float]:
        """Means over the episodes that ended since the last call (reward terms per second of episode, episode
        length, survival, episode metrics), plus `episodes`: their count; {} when none ended. One host sync: call
        it once per iteration, not per step."""
        if not self._stat_keys:
            return {}
        sums = dict(zip(self._stat_keys, self._stat_sums.tolist(), strict=True))
        self._stat_sums = torch.zeros_like(self._stat_sums)
        count = sums.pop("episodes")
        if count == 0:
            return {}
        return {"episodes": count, **{k: v / count for k, v in sums.items()}}

    def check(self) -> None:
        """Raise on what went wrong since the last check: non-finite actions (they were zeroed meanwhile) or a
        backend fault. A host sync: the training loop calls it once per iteration."""
        if bool(self._nonfinite):
            self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
            raise FloatingPointError("policy produced non-finite actions (NaN or inf; they were replaced by 0)")
        self.sim.check()

    def _reward_action_rate(self) -> torch.Tensor:
        """Squared change of the action between policy steps (any task)."""
        return (self.actions - self.last_actions).square().sum(dim=1)

    def _reward_target_limits(self) -> torch.Tensor:
        """How far (rad) the joint targets reach beyond the joint ranges. In simulation such targets only
        saturate the PD; on a robot the deploy safety layer treats them as a fault, so train them away."""
        below = (self._target_range[:, 0] - self.targets).clamp(min=0)
        above = (self.targets - self._target_range[:, 1]).clamp(min=0)
        return (below + above).sum(dim=1)

    def compute_reward(self) -> torch.Tensor:
        """Sum of the weighted terms (weight x dt each); their per-episode sums are kept in `episode_sums`."""
        if not self._reward_fns:
            return torch.zeros(self.num_envs, device=self.device)
        terms = torch.stack([fn().float() for fn in self._reward_fns.values()]) * self._reward_scale  # [R, N]
        self.episode_sums = self.episode_sums + terms
        reward = terms.sum(dim=0)
        if self.cfg.only_positive_rewards:
            reward = reward.clamp(min=0.0)
        return reward

    def _clear_episode(self, mask: torch.Tensor) -> None:
        """Per-episode bookkeeping of the envs in `mask` back to the start of an episode."""
        rows = mask.unsqueeze(1)
        self.episode_step = torch.where(mask, 0, self.episode_step)
        self.actions = torch.where(rows, 0.0, self.actions)
        self.last_actions = torch.where(rows, 0.0, self.last_actions)
        self.targets = torch.where(rows, self.default_joint_pos, self.targets)
        lo, hi = self.cfg.action_delay_substeps
        delay = torch.randint(lo, hi + 1, (self.num_envs,), generator=self.generator, device=self.device)
        self.action_delay = torch.where(mask, delay, self.action_delay)
        self.episode_sums = torch.where(mask, 0.0, self.episode_sums)

    def close(self) -> None:
        self.sim.close()
