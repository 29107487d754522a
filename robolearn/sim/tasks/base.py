"""Task = batched environment: owns observations, rewards, commands, terminations, randomization.

`reset() -> obs`, `step(actions) -> (obs, reward, terminated, truncated, info)`; every tensor is
`[num_envs, ...]` on the env's device; `obs` is a dict of groups: `policy` (what a real robot measures,
noisy) and `privileged` (critic/teacher only). Envs reset themselves when done (auto-reset): the returned
`obs` of a finished env is the first observation of its next episode.
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
    """Base of all tasks: the step loop, auto-reset, reward bookkeeping. Subclasses fill in the MDP."""

    cfg_cls: ClassVar[type[TaskCfg]] = TaskCfg

    def __init__(self, cfg: TaskCfg, num_envs: int, *, backend: str = "mujoco", device: str = "cpu", seed: int = 0,
                 name: str = ""):
        self.name = name or type(self).__name__
        self.cfg = cfg
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.robot_cfg: RobotCfg = load_robot_cfg(cfg.robot)
        self.model = self.build_model(render=False)
        self.robot: RobotInfo = robot_info(self.model, self.robot_cfg)
        self.sim = make_backend(backend, self.model, num_envs, device)
        self.backend = backend
        self.num_actions = self.action_dim()
        self.dt = cfg.sim_dt * cfg.decimation
        self.max_episode_steps = int(round(cfg.episode_length_s / self.dt))
        self.episode_step = torch.zeros(num_envs, dtype=torch.long)
        self.default_joint_pos = torch.tensor(self.robot.default_joint_pos, dtype=torch.float32)
        self._qpos_adr = torch.as_tensor(self.robot.qpos_adr)  # actuated joints in qpos / qvel, policy order
        self._qvel_adr = torch.as_tensor(self.robot.qvel_adr)
        self.actions = torch.zeros(num_envs, self.num_actions)
        self.last_actions = torch.zeros(num_envs, self.num_actions)
        self.targets = self.default_joint_pos.repeat(num_envs, 1)
        self._target_range = torch.tensor(self.robot.joint_range, dtype=torch.float32)
        self.action_delay = torch.zeros(num_envs, dtype=torch.long)
        self._reward_fns = {}
        for term in cfg.rewards:
            fn = getattr(self, f"_reward_{term}", None)
            if fn is None:
                valid = sorted(n[len("_reward_") :] for n in dir(self) if n.startswith("_reward_"))
                raise ConfigError(f"task {self.name}: unknown reward term {term!r}; valid terms: {', '.join(valid)}")
            self._reward_fns[term] = fn
        self.episode_sums = {term: torch.zeros(num_envs) for term in cfg.rewards}
        self.sensors = torch.zeros(num_envs, cfg.decimation, self.model.nsensordata, dtype=torch.float64)
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
    def reset_idx(self, env_ids: torch.Tensor) -> None:
        """Reset the state, commands and randomization of `env_ids`."""

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
        return torch.cat([value * torch.as_tensor(scale, dtype=value.dtype) for _, value, scale in self.policy_terms()],
                         dim=1)

    def policy_obs_layout(self) -> list[dict[str, Any]]:
        """[{name, dim, scale: [dim floats]}] of the `policy` group: what an exported bundle declares."""
        layout = []
        for name, value, scale in self.policy_terms():
            dim = value.shape[1]
            scale_list = [float(x) for x in torch.as_tensor(scale, dtype=torch.float64).expand(dim)]
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

    # -- the loop ----------------------------------------------------------------------------------------
    @property
    def obs_dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self.observations().items()}

    def episode_metrics(self, env_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-env metrics of episodes that end now (before their reset), e.g. success."""
        return {}

    def _reset_envs(self, env_ids: torch.Tensor) -> None:
        self.reset_idx(env_ids)
        self.sensors[env_ids] = self.sim.forward(env_ids).unsqueeze(1)
        self.update_state()

    def reset(self) -> dict[str, torch.Tensor]:
        self._reset_envs(torch.arange(self.num_envs))
        return self.observations()

    def action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        """Joint position targets per physics substep `[N, decimation, nu]`, with per-env action latency."""
        previous = self.targets
        self.targets = self.default_joint_pos + self.cfg.action_scale * actions
        substep = torch.arange(self.cfg.decimation).view(1, -1, 1)
        delayed = substep < self.action_delay.view(-1, 1, 1)
        return torch.where(delayed, previous.unsqueeze(1), self.targets.unsqueeze(1)).to(torch.float64)

    def step(self, actions: torch.Tensor):
        self.last_actions = self.actions
        self.actions = actions.detach().to(torch.float32).clamp(-self.cfg.clip_actions, self.cfg.clip_actions)
        if not torch.isfinite(self.actions).all():
            raise FloatingPointError("policy produced non-finite actions")
        self.sensors = self.sim.step(self.action_to_ctrl(self.actions))
        self.episode_step += 1
        self.update_state()
        terminated = self.terminated()
        truncated = self.episode_step >= self.max_episode_steps
        reward = self.compute_reward()
        self.after_step()
        info: dict[str, Any] = {"time_outs": truncated & ~terminated, "metrics": self.metrics()}
        done = terminated | truncated
        env_ids = done.nonzero().flatten()
        if len(env_ids) > 0:
            info["episode"] = {
                f"reward/{k}": (v[env_ids] / (self.episode_step[env_ids] * self.dt)).mean().item()
                for k, v in self.episode_sums.items()
            }
            info["episode"]["episode_length_s"] = (self.episode_step[env_ids] * self.dt).float().mean().item()
            info["episode"]["survival"] = (~terminated[env_ids]).float().mean().item()
            ended = self.episode_metrics(env_ids)
            info["episode"].update({k: v.float().mean().item() for k, v in ended.items()})
            info["ended"] = {"env_ids": env_ids, "terminated": terminated[env_ids],
                             "length_s": self.episode_step[env_ids] * self.dt, **ended}
            self._reset_envs(env_ids)
        return self.observations(), reward, terminated, truncated, info

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
        reward = torch.zeros(self.num_envs)
        for term, fn in self._reward_fns.items():
            value = fn() * (self.cfg.rewards[term] * self.dt)
            self.episode_sums[term] += value
            reward += value
        if self.cfg.only_positive_rewards:
            reward = reward.clamp(min=0.0)
        return reward

    def _clear_episode(self, env_ids: torch.Tensor) -> None:
        self.episode_step[env_ids] = 0
        self.actions[env_ids] = 0.0
        self.last_actions[env_ids] = 0.0
        self.targets[env_ids] = self.default_joint_pos
        lo, hi = self.cfg.action_delay_substeps
        self.action_delay[env_ids] = torch.randint(lo, hi + 1, (len(env_ids),), generator=self.generator)
        for v in self.episode_sums.values():
            v[env_ids] = 0.0

    def close(self) -> None:
        self.sim.close()
