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
from typing import Any, ClassVar, Literal

import mujoco
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends import make_backend
from robolearn.sim.math import grid_points
from robolearn.sim.robots.robot_cfg import RobotCfg, load_robot_cfg
from robolearn.sim.scene import RobotInfo, build_robot_scene, robot_info

__all__ = ["ObsTermCfg", "TaskCfg", "Task"]


@dataclass(kw_only=True)
class ScanGridCfg:
    """A grid of sample points around the base, aligned with its yaw: `size` m along its forward (x) and left (y)
    axes, centered on it, a point every `resolution` m, x-major (a height scan, an occupancy scan)."""

    key: ClassVar[str] = "scan"  # the field's name in a task YAML, for errors
    size: tuple[float, float] = (1.6, 1.0)
    resolution: float = 0.1

    def __post_init__(self) -> None:
        if self.resolution <= 0 or min(self.size) < 0:
            raise ConfigError(f"{self.key}.resolution must be > 0 and {self.key}.size >= 0, got "
                              f"{self.resolution}, {list(self.size)}")

    def points(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[K, 2] (x, y) of the points in the base's yaw frame."""
        return grid_points(self.size, self.resolution, device)


@dataclass(kw_only=True)
class ObsTermCfg:
    """One entry of an observation group: a term of the task (`term`: the method `_obs_<term>`, [N, d]) or every
    entry of a group defined before this one (`group`, e.g. the critic's group starts with the policy's)."""

    term: str = ""
    group: str = ""
    scale: float | list[float] = 1.0  # multiplies the term (one number, or one per dimension)
    noise: float = 0.0  # uniform noise half-width in the term's own units (before `scale`), x the task's noise_scale
    clean: bool = False  # with `group`: that group's values without its noise

    def __post_init__(self) -> None:
        if bool(self.term) == bool(self.group):
            raise ConfigError(f"observation entry {self.term or self.group or '{}'}: give either term: NAME or "
                              "group: NAME")
        if self.noise < 0:
            raise ConfigError(f"observation term {self.term}: noise must be >= 0, got {self.noise}")


@dataclass(kw_only=True)
class TaskCfg:
    robot: str
    sim_dt: float = 0.005  # s, physics step (PD runs at this rate)
    decimation: int = 4  # physics steps per policy step
    episode_length_s: float = 20.0
    action_scale: float = 0.25  # joint target = default pose + action_scale * action
    clip_actions: float = 10.0
    action_delay_substeps: tuple[int, int] = (0, 0)  # latency, in physics steps, sampled per episode
    # The deploy runtime's path from an action to the joint target (robolearn.deploy.runtime and safety), trained
    # with so that a policy does not meet it first on a robot; copy the numbers from the robot's hardware profile
    # (`safety:`). `deploy_targets`: between policy steps the target moves linearly from the last target to the new
    # one, is clamped into the joint range and moves at most `max_target_rate` rad/s; a new target beyond the
    # range by more than `target_limit_margin` rad ends the episode as a failure (the runtime damps on it).
    deploy_targets: bool = False
    # `joint_range`: each action is also clamped so that its target (default + scale x action) lies inside the joint
    # range (Isaac Lab's per-joint action clip); exported with the bundle (`action.bounds`), so a policy that pushes
    # hard toward a target saturates at the range instead of asking the runtime for targets it trips on.
    action_bounds: Literal["none", "joint_range"] = "none"
    max_target_rate: float = 0.0  # rad/s, with deploy_targets (0: no rate limit)
    target_limit_margin: float = 0.5  # rad, with deploy_targets
    # Observation groups, each an ordered list of terms; a group given here replaces the task type's default of
    # that name (`policy` is what a real robot measures, `privileged` what the critic or a teacher reads).
    observations: dict[str, list[ObsTermCfg]] = field(default_factory=dict)
    noise_scale: float = 1.0  # multiplies every observation term's noise (0: noise-free observations)
    rewards: dict[str, float] = field(default_factory=dict)  # reward term -> weight (scaled by policy dt)
    only_positive_rewards: bool = False
    costs: dict[str, float] = field(default_factory=dict)  # cost term -> weight (>= 0): a per-step safety signal

    def __post_init__(self) -> None:
        if self.sim_dt <= 0 or self.decimation < 1:
            raise ConfigError(f"sim_dt must be > 0 and decimation >= 1, got {self.sim_dt}, {self.decimation}")
        lo, hi = self.action_delay_substeps
        if not 0 <= lo <= hi < self.decimation:
            raise ConfigError(f"action_delay_substeps must satisfy 0 <= low <= high < decimation, got {lo}, {hi}")
        if self.max_target_rate < 0 or self.target_limit_margin < 0:
            raise ConfigError(f"max_target_rate and target_limit_margin must be >= 0, got {self.max_target_rate}, "
                              f"{self.target_limit_margin}")
        negative = [k for k, w in self.costs.items() if w < 0]
        if negative:
            raise ConfigError(f"costs.{negative[0]}: a cost weight must be >= 0 (costs count what is unsafe; "
                              f"a reward term penalizes), got {self.costs[negative[0]]}")
        if self.noise_scale < 0:
            raise ConfigError(f"noise_scale must be >= 0, got {self.noise_scale}")


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
        self.target_fault = torch.zeros(num_envs, dtype=torch.bool, device=dev)  # deploy_targets: would trip
        # the joint impedance of each env relative to its own gains (the safety filter lowers it, set_gain_scale)
        self.gain_scale = torch.ones(num_envs, device=dev)
        self._gains_scaled = False  # set_gain_scale was called: resets restore the gains (others skip that work)
        self._nominal_gains = tuple(torch.as_tensor(getattr(self.model, f), dtype=torch.float64, device=dev).clone()
                                    for f in ("actuator_gainprm", "actuator_biasprm"))
        self.commanded_targets = self.targets  # default + scale x action, before any clamp or rate limit
        self.action_low, self.action_high = self._action_bounds()  # [A] each: how step() clamps an action
        self._reward_fns = self._terms("reward", cfg.rewards)
        self._cost_fns = self._terms("cost", cfg.costs)
        self._cost_weights = torch.tensor([[w] for w in cfg.costs.values()], device=dev).view(-1, 1)
        self.episode_costs = torch.zeros(len(cfg.costs), num_envs, device=dev)
        # weight x dt per term [R, 1]; the terms' sums over the running episode [R, N] (one row per term)
        self._reward_scale = torch.tensor([[w * self.dt] for w in cfg.rewards.values()], device=dev).view(-1, 1)
        self.episode_sums = torch.zeros(len(cfg.rewards), num_envs, device=dev)
        self.sensors = torch.zeros(num_envs, cfg.decimation, self.model.nsensordata, dtype=torch.float64, device=dev)
        self._stat_keys: list[str] = []  # names of the rows of `_stat_sums` (set when the first episodes end)
        self._stat_sums = torch.zeros(0, device=dev)  # per-episode statistics summed over ended episodes
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=dev)  # a non-finite action since `check`
        self.terminated_now = torch.zeros(num_envs, dtype=torch.bool, device=dev)  # this step's failures
        # Skip masked work (resets, command resamples, pushes) when its mask is empty: a free check on the CPU; on
        # a GPU it would be a host sync per step, so there the masked ops always run (an empty mask changes nothing).
        self.skip_empty_masks = self.device.type == "cpu"
        self.setup()
        self._obs_groups = self._observation_groups()
        self._obs_spec: dict[str, Any] | None = None  # term dims, scales and noise as tensors: made at first use
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

    # -- observations: groups of named terms --------------------------------------------------------------
    @abstractmethod
    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        """The task type's observation groups ({group: entries}); `cfg.observations` replaces groups by name."""

    def _terms(self, kind: str, names: dict[str, Any]) -> dict[str, Any]:
        """{name: bound method `_<kind>_<name>`} for the terms a config names; unknown names are one-line errors."""
        fns = {}
        for term in names:
            fn = getattr(self, f"_{kind}_{term}", None)
            if fn is None:
                prefix = f"_{kind}_"
                valid = sorted(n[len(prefix):] for n in dir(self) if n.startswith(prefix))
                raise ConfigError(f"task {self.name}: unknown {kind} term {term!r}; valid terms: {', '.join(valid)}")
            fns[term] = fn
        return fns

    def _observation_groups(self) -> dict[str, list[ObsTermCfg]]:
        groups = {**self.default_observations(), **self.cfg.observations}
        for required in ("policy", "privileged"):
            if required not in groups:
                raise ConfigError(f"task {self.name}: observations need a {required!r} group; groups: "
                                  f"{', '.join(groups)}")
        seen: set[str] = set()
        for name, entries in groups.items():
            if not entries:
                raise ConfigError(f"task {self.name}: observation group {name!r} is empty")
            for e in entries:
                if e.group and e.group not in seen:
                    raise ConfigError(f"task {self.name}: observation group {name!r} includes group {e.group!r}, "
                                      f"which must come before it; groups in order: {', '.join(groups)}")
            self._terms("obs", {e.term: 0 for e in entries if e.term})
            seen.add(name)
        return groups

    def _group_spec(self, values: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Per group, from the first values seen: the column scales [D] and noise amplitudes [D] (1 and 0 for the
        columns of an included group, which arrive scaled and noised by that group)."""
        spec: dict[str, Any] = {}
        for name, entries in self._obs_groups.items():
            scales, noises = [], []
            for e in entries:
                if e.group:
                    width = spec[e.group]["scale"].numel()
                    scales.append(torch.ones(width, device=self.device))
                    noises.append(torch.zeros(width, device=self.device))
                    continue
                dim = values[e.term].shape[1]
                scale = torch.as_tensor(e.scale, dtype=torch.float32, device=self.device)
                if scale.numel() not in (1, dim):
                    raise ConfigError(f"task {self.name}: observation term {e.term} has {dim} values but "
                                      f"{scale.numel()} scales")
                scale = scale.expand(dim)
                scales.append(scale)
                noises.append(scale.abs() * (e.noise * self.cfg.noise_scale))
            noise = torch.cat(noises)
            spec[name] = {"scale": torch.cat(scales), "noise": noise, "noisy": bool((noise > 0).any())}
        return spec

    def observation_terms(self) -> dict[str, torch.Tensor]:
        """Every observation term the groups use, unscaled, [N, d] each (the method `_obs_<term>`)."""
        terms = dict.fromkeys(e.term for entries in self._obs_groups.values() for e in entries if e.term)
        return {term: self._obs_term(term) for term in terms}

    def observations(self) -> dict[str, torch.Tensor]:
        """{group: [N, D]}: each group's entries concatenated in order, terms scaled, plus the terms' noise."""
        values = self.observation_terms()
        if self._obs_spec is None:
            self._obs_spec = self._group_spec(values)
        clean: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for name, entries in self._obs_groups.items():
            spec = self._obs_spec[name]
            parts = [values[e.term] if e.term else (clean[e.group] if e.clean else out[e.group]) for e in entries]
            value = torch.cat(parts, dim=1) * spec["scale"]
            clean[name] = value
            if spec["noisy"]:
                uniform = torch.rand(value.shape, generator=self.generator, device=self.device)
                value = value + (2 * uniform - 1) * spec["noise"]
            out[name] = value
        return out

    def policy_terms(self, group: str = "policy") -> list[tuple[str, torch.Tensor, float | list[float]]]:
        """The `policy` group (or another group of terms: a frozen skill's) as named terms `(name, unscaled value
        [N, d], scale)`, in order (noise-free).

        The names are the contract with the deploy runtime, which rebuilds the same vector from what a
        robot measures (see robolearn.deploy.observations): base_ang_vel (IMU gyro, body frame),
        projected_gravity (unit gravity in the body frame), velocity_command (vx, vy, wz), joint_pos (q minus
        the default pose), joint_vel, last_action, ee_pos (end effector in the base frame), target_pos,
        target_error (target_pos - ee_pos)."""
        entries = self._obs_groups[group]
        if any(e.group for e in entries):
            raise ConfigError(f"task {self.name}: the {group} group must list terms, not include other groups")
        return [(e.term, self._obs_term(e.term), e.scale) for e in entries]

    def _obs_term(self, term: str) -> torch.Tensor:
        value = getattr(self, f"_obs_{term}")()
        return (value if value.dim() == 2 else value.unsqueeze(1)).float()

    def clean_policy_obs(self) -> torch.Tensor:
        """`policy` observations without noise: the terms scaled and concatenated."""
        return torch.cat([v * torch.as_tensor(s, dtype=v.dtype, device=v.device) for _, v, s in self.policy_terms()],
                         dim=1)

    def policy_obs_layout(self, group: str = "policy") -> list[dict[str, Any]]:
        """[{name, dim, scale: [dim floats]}] of the `policy` group (or `group`): what an exported bundle declares."""
        layout = []
        for name, value, scale in self.policy_terms(group):
            dim = value.shape[1]
            scale_list = [float(x) for x in torch.as_tensor(scale, dtype=torch.float64, device="cpu").expand(dim)]
            layout.append({"name": name, "dim": dim, "scale": scale_list})
        return layout

    def observation_columns(self, group: str) -> list[str]:
        """A name per column of observation group `group`, in order: `term[i]`, and `included/term[i]` for the
        columns of an included group. Two tasks' groups can be matched column by column by name."""
        values = self.observation_terms()
        columns: list[str] = []
        for e in self._obs_groups[group]:
            if e.group:
                columns += [f"{e.group}/{c}" for c in self.observation_columns(e.group)]
            else:
                columns += [f"{e.term}[{i}]" for i in range(values[e.term].shape[1])]
        return columns

    @abstractmethod
    def terminated(self) -> torch.Tensor:
        """[N] bool: failure (not time-outs)."""

    def after_step(self) -> None:  # noqa: B027 - optional hook
        """Commands, pushes and curricula, once per policy step before resets."""

    def mocap_positions(self, env: int) -> dict[str, Any]:
        """{mocap body name: position [3]} of env `env`: markers (targets, goals) that renderers place."""
        return {}

    def geom_positions(self, env: int) -> dict[str, Any]:
        """{geom name: position [3]} of the geoms that env `env` moved from their compiled place (obstacles laid out
        per env), for renderers."""
        return {}

    def video_view(self) -> dict[str, Any] | None:
        """A fixed camera for videos ({lookat: [x, y, z], distance, azimuth, elevation}), or None: the camera
        follows the robot."""
        return None

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

    @property
    def has_costs(self) -> bool:
        """Whether the task declares cost terms (its cost is not always zero)."""
        return bool(self._cost_fns)

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

    def _action_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-action (low, high): +-clip_actions, narrowed with `action_bounds: joint_range` to the actions whose
        targets lie inside the joint range."""
        cfg, dev = self.cfg, self.device
        low = torch.full((self.num_actions,), -float(cfg.clip_actions), device=dev)
        high = -low
        if cfg.action_bounds == "joint_range":
            joints = len(self.default_joint_pos)
            if self.num_actions != joints:
                raise ConfigError(f"action_bounds: joint_range needs one action per joint ({joints}), but task "
                                  f"{type(self).__name__} has {self.num_actions} actions")
            lo, hi = self._target_range[:, 0], self._target_range[:, 1]
            low = torch.maximum(low, (lo - self.default_joint_pos) / cfg.action_scale)
            high = torch.minimum(high, (hi - self.default_joint_pos) / cfg.action_scale)
        return low, high

    def desynchronize_episodes(self) -> None:
        """Start every env at a random step of its first episode (which then ends sooner, as a time-out), so that a
        rollout of a few steps covers all phases of an episode instead of the same few steps in every env (rsl_rl's
        `init_at_random_ep_len`). Tasks whose state follows the episode step (a moving target) jump there."""
        self.episode_step = torch.randint(0, self.max_episode_steps, (self.num_envs,), generator=self.generator,
                                          device=self.device)

    def measured_action(self) -> torch.Tensor:
        """[N, A]: the action whose joint targets are the measured joint positions (it holds the joints where they
        are; a joint impedance then pushes with no force beyond damping and gravity compensation). The safety
        filter's candidates can shrink a command toward it (`shrink_toward: measured`)."""
        if self.num_actions != len(self.default_joint_pos) or type(self).action_to_ctrl is not Task.action_to_ctrl:
            raise ConfigError(f"task {self.name}: its actions are not joint position targets (default + "
                              f"action_scale x action), so no action holds the measured pose; use "
                              f"shrink_toward: default")
        return (self.joint_pos - self.default_joint_pos) / self.cfg.action_scale

    def set_gain_scale(self, scale: torch.Tensor) -> None:
        """Scale each env's joint impedance, the position actuators' stiffness and damping, to `scale` [N] times its
        own gains (randomized motor strength included): the safety filter lowers it while the risk is high, as the
        deploy runtime scales its PD gains (deploy/safety_filter.py). Only the envs whose scale changed are written;
        a new episode starts at 1."""
        scale = scale.to(self.device, torch.float32)
        self._gains_scaled = True
        changed = scale != self.gain_scale
        self.gain_scale = scale
        if not self.any_set(changed):
            return
        n = self.num_envs
        s = scale.double()
        strength = getattr(self, "motor_strength", None)  # locomotion's randomized motor strength
        if strength is not None:
            s = s * strength.double()
        gain, bias = (g.expand(n, -1, -1).clone() for g in self._nominal_gains)
        gain[:, :, 0] *= s[:, None]
        bias[:, :, 1:3] *= s[:, None, None]  # -kp and -kd of MuJoCo's position actuator
        self.sim.set_model_field("actuator_gainprm", changed, gain)
        self.sim.set_model_field("actuator_biasprm", changed, bias)

    def action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        """Joint position targets per physics substep `[N, decimation, nu]`, with per-env action latency (or, with
        `deploy_targets`, the deploy runtime's interpolated, clamped and rate-limited targets)."""
        previous = self.targets
        target = self.default_joint_pos + self.cfg.action_scale * actions
        self.commanded_targets = target
        if self.cfg.deploy_targets:
            return self._deploy_targets(previous, target)
        self.targets = target
        delayed = self._substep < self.action_delay.view(-1, 1, 1)
        return torch.where(delayed, previous.unsqueeze(1), self.targets.unsqueeze(1)).to(torch.float64)

    def _deploy_targets(self, previous: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The runtime's targets between two policy steps: linear from `previous` to `target`, clamped into the
        joint range, then rate-limited (a straight path clamped to a box moves monotonically, so the sequential
        rate limit is a clamp of the displacement at substep i to rate x dt x i)."""
        cfg, lo, hi = self.cfg, self._target_range[:, 0], self._target_range[:, 1]
        margin = cfg.target_limit_margin
        self.target_fault = ((target < lo - margin) | (target > hi + margin)).any(dim=1)
        i = (self._substep + 1).float()  # [1, D, 1]: substeps 1..D
        path = previous.unsqueeze(1) + (target - previous).unsqueeze(1) * (i / cfg.decimation)
        path = torch.minimum(torch.maximum(path, lo), hi)
        if cfg.max_target_rate > 0:
            reach = cfg.max_target_rate * cfg.sim_dt * i
            path = previous.unsqueeze(1) + torch.minimum(torch.maximum(path - previous.unsqueeze(1), -reach), reach)
        self.targets = path[:, -1]
        return path.to(torch.float64)

    def step(self, actions: torch.Tensor):
        """Advance every env one policy step: `(obs, reward, cost, terminated, truncated, info)`, each [N] (obs a dict
        of groups). `cost` is the weighted sum of the cost terms (>= 0; zeros without any). `info`: `time_outs` [N]
        (truncated, not failed), `metrics` (per-env step metrics), `costs` ({term: [N]} unweighted), `ended` ({`mask`
        [N]: envs whose episode ended this step (they were reset), `terminated`, `length_s` and the
        `episode_metrics`, all [N] and meaningful where `mask` is set})."""
        self.last_actions = self.actions
        actions = actions.detach().to(self.device, torch.float32)
        finite = torch.isfinite(actions)
        self._nonfinite |= ~finite.all()
        self.actions = torch.where(finite, actions, 0.0).clamp(self.action_low, self.action_high)
        self.sensors = self.sim.step(self.action_to_ctrl(self.actions))
        self.episode_step += 1
        self.update_state()
        terminated = self.terminated()
        if self.cfg.deploy_targets:  # a target the deploy runtime would trip on ends the episode as a failure
            terminated = terminated | self.target_fault
        self.terminated_now = terminated  # for the `termination` reward and `fall` cost terms
        truncated = self.episode_step >= self.max_episode_steps
        reward = self.compute_reward()
        cost, costs = self.compute_cost(terminated)
        self.after_step()
        done = terminated | truncated
        ended = {"mask": done, "terminated": terminated, "length_s": self.episode_step * self.dt,
                 **{k: v.clone() for k, v in self.episode_metrics().items()}}
        info: dict[str, Any] = {"time_outs": truncated & ~terminated, "metrics": self.metrics(), "costs": costs,
                                "ended": ended}
        if self.any_set(done):
            self._sum_episode_stats(ended)
            self._reset_envs(done)
        return self.observations(), reward, cost, terminated, truncated, info

    def compute_cost(self, terminated: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted sum of the cost terms [N], {term: unweighted value [N]}); per-episode sums in `episode_costs`.
        Cost terms see `self.terminated_now` (this step's failures) for terms such as `fall`."""
        if not self._cost_fns:
            return torch.zeros(self.num_envs, device=self.device), {}
        self.terminated_now = terminated
        values = torch.stack([fn().float() for fn in self._cost_fns.values()])  # [C, N]
        self.episode_costs = self.episode_costs + values * self._cost_weights
        return (values * self._cost_weights).sum(dim=0), dict(zip(self._cost_fns, values, strict=True))

    def _sum_episode_stats(self, ended: dict[str, torch.Tensor]) -> None:
        """Add the episodes that end now to the device-side sums that `episode_stats` reads: one row per
        statistic, summed over the ended envs in a few kernels."""
        done, length_s = ended["mask"], ended["length_s"]
        extra = [k for k in ended if k not in ("mask", "terminated", "length_s")]
        rows = torch.cat([
            self.episode_sums / length_s.clamp(min=self.dt),  # reward terms per second of episode [R, N]
            self.episode_costs,  # weighted cost terms summed over the episode [C, N]
            torch.stack([self.episode_costs.sum(dim=0), length_s, (~ended["terminated"]).float(), done.float(),
                         *(ended[k].float() for k in extra)]),
        ])
        totals = torch.where(done, rows, 0.0).sum(dim=1)
        keys = [*(f"reward/{k}" for k in self._reward_fns), *(f"cost/{k}" for k in self._cost_fns), "cost",
                "episode_length_s", "survival", "episodes", *extra]
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

    def state_dict(self) -> dict[str, Any]:
        """What a resumed training run needs besides the algorithm's state (a curriculum, running statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (a resume)."""
        del state  # nothing to restore by default

    def check(self) -> None:
        """Raise on what went wrong since the last check: non-finite actions (they were zeroed meanwhile) or a
        backend fault. A host sync: the training loop calls it once per iteration."""
        if bool(self._nonfinite):
            self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
            raise FloatingPointError("policy produced non-finite actions (NaN or inf; they were replaced by 0)")
        self.sim.check()

    # -- terms every task has ------------------------------------------------------------------------------
    def _obs_joint_pos(self) -> torch.Tensor:
        """Joint positions relative to the default pose (rad), policy joint order."""
        return self.joint_pos - self.default_joint_pos

    def _obs_joint_vel(self) -> torch.Tensor:
        """Joint velocities (rad/s)."""
        return self.joint_vel

    def _obs_last_action(self) -> torch.Tensor:
        """The action of the last step as applied (clipped to clip_actions)."""
        return self.actions

    def _cost_joint_limit(self) -> torch.Tensor:
        """Joints within 5% of their range's ends (count): a joint near its mechanical stop."""
        lo, hi = self._target_range[:, 0], self._target_range[:, 1]
        margin = 0.05 * (hi - lo)
        return ((self.joint_pos < lo + margin) | (self.joint_pos > hi - margin)).float().sum(dim=1)

    def _cost_fall(self) -> torch.Tensor:
        """1 on the step an episode fails (the task's termination: a fall, a block off the table)."""
        return self.terminated_now.float()

    def _reward_termination(self) -> torch.Tensor:
        """1 on the step an episode fails (any task; with a negative weight, ending an episode early never pays
        where the other terms are mostly penalties)."""
        return self.terminated_now.float()

    def _reward_action_rate(self) -> torch.Tensor:
        """Squared change of the action between policy steps (any task)."""
        return (self.actions - self.last_actions).square().sum(dim=1)

    def _reward_target_limits(self) -> torch.Tensor:
        """How far (rad) the joint targets reach beyond the joint ranges. In simulation such targets only
        saturate the PD; on a robot the deploy safety layer treats them as a fault, so train them away."""
        below = (self._target_range[:, 0] - self.commanded_targets).clamp(min=0)
        above = (self.commanded_targets - self._target_range[:, 1]).clamp(min=0)
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
        self.episode_costs = torch.where(mask, 0.0, self.episode_costs)
        if self._gains_scaled and self.any_set(mask & (self.gain_scale != 1.0)):  # a new episode: full impedance
            self.set_gain_scale(torch.where(mask, 1.0, self.gain_scale))

    def close(self) -> None:
        self.sim.close()
