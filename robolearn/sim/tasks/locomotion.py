"""Velocity-tracking locomotion on flat ground (legged_gym reward family) for any legged robot."""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.math import quat_rotate_inverse, sample_uniform, yaw_quat
from robolearn.sim.robots.robot_cfg import match_joints
from robolearn.sim.robots.urdf_import import resolve_urdf_path, urdf_velocity_limits
from robolearn.sim.tasks.base import ObsTermCfg, Task, TaskCfg

__all__ = ["CommandCfg", "RandomizationCfg", "LocomotionCfg", "LocomotionTask", "POLICY_OBSERVATIONS"]

Range = tuple[float, float]

# What a legged robot measures, scaled as legged_gym does, with its noise (uniform, in each term's own units).
POLICY_OBSERVATIONS = [
    ObsTermCfg(term="base_ang_vel", scale=0.25, noise=0.2),
    ObsTermCfg(term="projected_gravity", noise=0.05),
    ObsTermCfg(term="velocity_command", scale=[2.0, 2.0, 0.25]),
    ObsTermCfg(term="joint_pos", noise=0.01),
    ObsTermCfg(term="joint_vel", scale=0.05, noise=1.5),
    ObsTermCfg(term="last_action"),
]


@dataclass(kw_only=True)
class CommandCfg:
    lin_vel_x: Range = (-1.0, 1.0)  # m/s, body frame
    lin_vel_y: Range = (-0.5, 0.5)
    ang_vel_yaw: Range = (-1.0, 1.0)  # rad/s
    resample_time_s: float = 10.0
    min_norm: float = 0.1  # |v_xy| commands below this are zeroed (standing still is a command too)


@dataclass(kw_only=True)
class RandomizationCfg:
    friction: Range = (0.5, 1.25)
    added_base_mass: Range = (-1.0, 2.0)  # kg
    motor_strength: Range = (0.9, 1.1)  # scales PD gains and torque limits
    push_interval_s: float = 15.0  # 0 disables pushes
    push_velocity: float = 1.0  # m/s, max change of base xy velocity
    init_joint_noise: float = 0.1  # rad
    init_yaw: bool = True


@dataclass(kw_only=True)
class LocomotionCfg(TaskCfg):
    commands: CommandCfg = field(default_factory=CommandCfg)
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)
    tracking_sigma: float = 0.25
    base_height_target: float = 0.3
    feet_air_time_target: float = 0.5  # s
    pose_weights: dict[str, float] = field(default_factory=lambda: {".*": 1.0})  # joint regex -> weight in `pose`
    soft_joint_limit: float = 0.9  # fraction of the joint range before dof_pos_limits penalizes
    soft_velocity_limit: float = 0.9  # fraction of the URDF velocity limit before dof_vel_limits penalizes (the
    # deploy safety layer damps above the limit itself)
    terminate_on_velocity_limit: bool = False  # a joint faster than its URDF limit ends the episode as a failure,
    # as the deploy safety layer stops the robot there
    metric_settle_s: float = 1.0  # tracking errors are measured from this long after a command change
    max_tilt_cos: float = 0.5  # terminate when the body z axis is tilted more than acos(0.5) = 60 deg


class LocomotionTask(Task):
    """Policy observations (45 for 12 joints): base angular velocity, projected gravity, command (vx, vy, wz),
    joint positions relative to default, joint velocities, last action. No base linear velocity: a real
    robot does not measure it. Privileged adds true base linear velocity, base height, friction, added mass,
    motor strength and foot contacts."""

    cfg_cls = LocomotionCfg
    cfg: LocomotionCfg

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        if not self.robot_cfg.floating_base or not self.robot_cfg.feet:
            raise ConfigError(f"task locomotion needs a floating-base robot with feet; {self.robot_cfg.name} has none")
        base = spec.body(self.robot_cfg.base_link) if self.robot_cfg.base_link else spec.worldbody.first_body()
        # The body box is fitted to its mesh at compile time: read its size, position and orientation from a
        # compiled copy, then wrap it in a touch zone 2 cm larger.
        fitted = spec.copy().compile()
        body_id = fitted.body(base.name).id
        boxes = [g for g in range(fitted.ngeom) if fitted.geom_bodyid[g] == body_id
                 and fitted.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX]
        if not boxes:
            raise ConfigError(f"robot {self.robot_cfg.name}: base link {base.name!r} has no box collision geom "
                              f"for the base-contact termination (collision rule shape: box)")
        g = boxes[0]
        touch = base.add_site(
            name="base_touch", type=mujoco.mjtGeom.mjGEOM_BOX, pos=fitted.geom_pos[g], quat=fitted.geom_quat[g],
            size=fitted.geom_size[g] + 0.02, group=4,
        )
        spec.add_sensor(name="base_touch", type=mujoco.mjtSensor.mjSENS_TOUCH, objtype=mujoco.mjtObj.mjOBJ_SITE,
                        objname=touch.name)
        for foot in self.robot_cfg.feet:
            site = spec.site(foot)
            site.type = mujoco.mjtGeom.mjGEOM_SPHERE
            site.size = [0.045, 0, 0]
            spec.add_sensor(name=f"{foot}_touch", type=mujoco.mjtSensor.mjSENS_TOUCH,
                            objtype=mujoco.mjtObj.mjOBJ_SITE, objname=foot)
            spec.add_sensor(name=f"{foot}_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS,
                            objtype=mujoco.mjtObj.mjOBJ_SITE, objname=foot)
            spec.add_sensor(name=f"{foot}_vel", type=mujoco.mjtSensor.mjSENS_FRAMELINVEL,
                            objtype=mujoco.mjtObj.mjOBJ_SITE, objname=foot)
        for act in spec.actuators:
            spec.add_sensor(name=f"{act.name}_torque", type=mujoco.mjtSensor.mjSENS_ACTUATORFRC,
                            objtype=mujoco.mjtObj.mjOBJ_ACTUATOR, objname=act.name)

    def setup(self) -> None:
        n, nu, dev = self.num_envs, self.num_actions, self.device
        feet = self.robot_cfg.feet
        # sensor columns as index tensors on the device (a Python list would be copied to a GPU at every use)
        self._touch_cols = torch.tensor([self.sensor(f"{f}_touch").start for f in feet], device=dev)
        self._foot_vel_xy_cols = torch.tensor([self.sensor(f"{f}_vel").start + i for f in feet for i in (0, 1)],
                                              device=dev)
        self._base_touch_col = self.sensor("base_touch").start
        first_torque = self.sensor(f"{self.robot.joint_names[0]}_torque").start
        self._torque_cols = slice(first_torque, first_torque + nu)
        self.commands = torch.zeros(n, 3, device=dev)
        self.feet_air_time = torch.zeros(n, len(feet), device=dev)
        self.last_contacts = torch.zeros(n, len(feet), dtype=torch.bool, device=dev)
        self.last_joint_vel = torch.zeros(n, nu, device=dev)
        # Randomized physical parameters (privileged): friction, added mass, motor strength.
        self.friction = torch.ones(n, device=dev)
        self.added_mass = torch.zeros(n, device=dev)
        self.motor_strength = torch.ones(n, device=dev)
        m = self.model
        self._base_body = m.body(self.robot_cfg.base_link).id if self.robot_cfg.base_link else 1
        self._nominal = {name: torch.as_tensor(getattr(m, name), dtype=torch.float64, device=dev).clone()
                         for name in ("geom_friction", "body_mass", "actuator_gainprm", "actuator_biasprm",
                                      "actuator_forcerange")}
        lo, hi = self.robot.joint_range[:, 0], self.robot.joint_range[:, 1]
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * self.cfg.soft_joint_limit
        self.soft_limits = torch.tensor(np.stack([mid - half, mid + half], axis=1), dtype=torch.float32, device=dev)
        self._torque_limit = self._nominal["actuator_forcerange"][:, 1].float()  # N m, nominal motor strength
        urdf = urdf_velocity_limits(resolve_urdf_path(self.robot_cfg.urdf, relative_to=self.robot_cfg.folder))
        self._velocity_limit = torch.tensor([urdf.get(j, float("inf")) for j in self.robot.joint_names],
                                            dtype=torch.float32, device=dev)  # rad/s, the URDF's <limit velocity>
        self._push_every = int(round(self.cfg.randomization.push_interval_s / self.dt))
        self._resample_every = max(1, int(round(self.cfg.commands.resample_time_s / self.dt)))
        self.pose_weights = torch.tensor(
            match_joints(self.cfg.pose_weights, list(self.robot.joint_names), f"task {self.name}: pose_weights"),
            dtype=torch.float32, device=dev)
        self._gravity = torch.tensor([0.0, 0.0, -1.0], device=dev).expand(n, 3)

    # -- resets and randomization ----------------------------------------------------------------------
    def _randomize(self, mask: torch.Tensor) -> None:
        """Friction, added base mass and motor strength of the envs in `mask`, drawn anew and written into the
        backend's per-env model fields (values for every env; the backend keeps the masked rows)."""
        r, n, g = self.cfg.randomization, self.num_envs, self.generator
        self.friction = torch.where(mask, sample_uniform(*r.friction, (n,), g), self.friction)
        self.added_mass = torch.where(mask, sample_uniform(*r.added_base_mass, (n,), g), self.added_mass)
        self.motor_strength = torch.where(mask, sample_uniform(*r.motor_strength, (n,), g), self.motor_strength)
        f, dm, s = (t.double() for t in (self.friction, self.added_mass, self.motor_strength))
        nom = self._nominal
        friction = nom["geom_friction"].expand(n, -1, -1).clone()
        friction[:, :, 0] = f[:, None]
        mass = nom["body_mass"].expand(n, -1).clone()
        mass[:, self._base_body] += dm
        gain = nom["actuator_gainprm"].expand(n, -1, -1).clone()
        gain[:, :, 0] *= s[:, None]
        bias = nom["actuator_biasprm"].expand(n, -1, -1).clone()
        bias[:, :, 1:3] *= s[:, None, None]
        forcerange = nom["actuator_forcerange"] * s[:, None, None]
        for name, values in (("geom_friction", friction), ("body_mass", mass), ("actuator_gainprm", gain),
                             ("actuator_biasprm", bias), ("actuator_forcerange", forcerange)):
            self.sim.set_model_field(name, mask, values)

    def _resample_commands(self, mask: torch.Tensor) -> None:
        c, n, g = self.cfg.commands, self.num_envs, self.generator
        cmd = torch.stack([sample_uniform(*c.lin_vel_x, (n,), g), sample_uniform(*c.lin_vel_y, (n,), g),
                           sample_uniform(*c.ang_vel_yaw, (n,), g)], dim=1)
        cmd[:, :2] *= (cmd[:, :2].norm(dim=1, keepdim=True) >= c.min_norm).float()
        self.commands = torch.where(mask.unsqueeze(1), cmd, self.commands)

    def initial_qpos(self, mask: torch.Tensor) -> torch.Tensor:
        """[N, nq] start poses (every env; the masked rows are used): base at `init_height` with a random yaw, joints
        at the default pose plus noise. Terrain tasks move the base onto their ground."""
        n, g, r = self.num_envs, self.generator, self.cfg.randomization
        qpos = torch.zeros(n, self.model.nq, dtype=torch.float64, device=self.device)
        qpos[:, 2] = self.robot_cfg.init_height
        yaw = sample_uniform(-np.pi, np.pi, (n,), g) if r.init_yaw else torch.zeros(n, device=self.device)
        qpos[:, 3:7] = yaw_quat(yaw).double()
        noise = sample_uniform(-r.init_joint_noise, r.init_joint_noise, (n, self.num_actions), g)
        qpos[:, self._qpos_adr] = (self.default_joint_pos + noise).double()
        return qpos

    def reset_idx(self, mask: torch.Tensor) -> None:
        self._randomize(mask)
        qpos = self.initial_qpos(mask)
        self.sim.set_state(mask, qpos, torch.zeros(self.num_envs, self.model.nv, dtype=torch.float64,
                                                   device=self.device))
        self._resample_commands(mask)
        rows = mask.unsqueeze(1)
        self.feet_air_time = torch.where(rows, 0.0, self.feet_air_time)
        self.last_contacts = self.last_contacts & ~rows
        self.last_joint_vel = torch.where(rows, 0.0, self.last_joint_vel)
        self._clear_episode(mask)

    # -- state -----------------------------------------------------------------------------------------
    def update_state(self) -> None:
        qpos, qvel = self.sim.qpos.float(), self.sim.qvel.float()
        self.base_quat = qpos[:, 3:7]
        self.base_height = qpos[:, 2]
        self.base_lin_vel = quat_rotate_inverse(self.base_quat, qvel[:, 0:3])  # body frame
        self.base_ang_vel = qvel[:, 3:6]  # MuJoCo free joint: angular velocity is already in the body frame
        self.projected_gravity = quat_rotate_inverse(self.base_quat, self._gravity)
        self.joint_pos = qpos[:, self._qpos_adr]
        self.joint_vel = qvel[:, self._qvel_adr]
        sensors = self.sensors.float()
        self.contacts = (sensors[:, :, self._touch_cols] > 1.0).any(dim=1)  # touched during any substep
        self.base_contact = sensors[:, :, self._base_touch_col].amax(dim=1) > 1.0
        self.torques = sensors[:, -1, self._torque_cols]
        self.feet_vel_xy = sensors[:, -1, self._foot_vel_xy_cols].view(self.num_envs, -1, 2)  # world frame

    def after_step(self) -> None:
        self.last_joint_vel = self.joint_vel
        resample = self.episode_step % self._resample_every == 0
        if self.any_set(resample):
            self._resample_commands(resample)
        if self._push_every > 0 and self.any_set(push := self.episode_step % self._push_every == 0):
            v = self.cfg.randomization.push_velocity
            kick = sample_uniform(-v, v, (self.num_envs, 2), self.generator).double() * push.unsqueeze(1)
            qvel = self.sim.qvel.double().clone()
            qvel[:, 0:2] += kick
            self.sim.set_state(push, self.sim.qpos.double().clone(), qvel)

    # -- observations ------------------------------------------------------------------------------------
    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        """policy: what the robot measures (45 numbers for 12 joints), with noise; privileged (critic, teacher):
        the same without noise, then true base velocity, base height, friction, added mass, motor strength, foot
        contacts."""
        return {"policy": list(POLICY_OBSERVATIONS),
                "privileged": [ObsTermCfg(group="policy", clean=True), ObsTermCfg(term="base_lin_vel", scale=2.0),
                               ObsTermCfg(term="base_height"), ObsTermCfg(term="friction"),
                               ObsTermCfg(term="added_mass"), ObsTermCfg(term="motor_strength"),
                               ObsTermCfg(term="foot_contacts")]}

    def _obs_base_ang_vel(self) -> torch.Tensor:
        """Base angular velocity in the body frame (rad/s): the IMU's gyro."""
        return self.base_ang_vel

    def _obs_projected_gravity(self) -> torch.Tensor:
        """Unit gravity vector in the body frame (z = -1 when upright)."""
        return self.projected_gravity

    def _obs_velocity_command(self) -> torch.Tensor:
        """The command (vx, vy in m/s, body frame; yaw rate in rad/s)."""
        return self.commands

    def _obs_base_lin_vel(self) -> torch.Tensor:
        """True base linear velocity in the body frame (m/s): privileged, a robot does not measure it."""
        return self.base_lin_vel

    def _obs_base_height(self) -> torch.Tensor:
        """Base height above the ground (m)."""
        return self.base_height

    def _obs_friction(self) -> torch.Tensor:
        return self.friction

    def _obs_added_mass(self) -> torch.Tensor:
        return self.added_mass

    def _obs_motor_strength(self) -> torch.Tensor:
        return self.motor_strength

    def _obs_foot_contacts(self) -> torch.Tensor:
        """1 for each foot that touched the ground during the step."""
        return self.contacts

    def terminated(self) -> torch.Tensor:
        tilted = self.projected_gravity[:, 2] > -self.cfg.max_tilt_cos
        if self.cfg.terminate_on_velocity_limit:
            return self.base_contact | tilted | (self.joint_vel.abs() > self._velocity_limit).any(dim=1)
        return self.base_contact | tilted

    def command_ranges(self) -> dict[str, tuple[float, float]]:
        c = self.cfg.commands
        return {"lin_vel_x": c.lin_vel_x, "lin_vel_y": c.lin_vel_y, "ang_vel_yaw": c.ang_vel_yaw}

    def metrics(self) -> dict[str, torch.Tensor]:
        """Tracking errors against the current command; NaN (left out) during the first `metric_settle_s`
        after a command changes, while the robot accelerates to it."""
        since_change = (self.episode_step % self._resample_every).float() * self.dt
        settled = torch.where(since_change >= self.cfg.metric_settle_s, 1.0, float("nan"))
        return {
            "lin_vel_x_error": (self.commands[:, 0] - self.base_lin_vel[:, 0]).abs() * settled,
            "lin_vel_xy_error": (self.commands[:, :2] - self.base_lin_vel[:, :2]).norm(dim=1) * settled,
            "ang_vel_error": (self.commands[:, 2] - self.base_ang_vel[:, 2]).abs() * settled,
            "base_height": self.base_height,  # a gait check: a crawling policy can still track velocity
            "feet_contact": self.contacts.float().mean(dim=1),  # fraction of feet on the ground
        }

    # -- reward terms (each [N], weighted by cfg.rewards and scaled by dt) ------------------------------
    def _reward_tracking_lin_vel(self) -> torch.Tensor:
        err = (self.commands[:, :2] - self.base_lin_vel[:, :2]).square().sum(dim=1)
        return torch.exp(-err / self.cfg.tracking_sigma)

    def _reward_tracking_ang_vel(self) -> torch.Tensor:
        err = (self.commands[:, 2] - self.base_ang_vel[:, 2]).square()
        return torch.exp(-err / self.cfg.tracking_sigma)

    def _reward_lin_vel_z(self) -> torch.Tensor:
        return self.base_lin_vel[:, 2].square()

    def _reward_ang_vel_xy(self) -> torch.Tensor:
        return self.base_ang_vel[:, :2].square().sum(dim=1)

    def _reward_orientation(self) -> torch.Tensor:
        return self.projected_gravity[:, :2].square().sum(dim=1)

    def _reward_base_height(self) -> torch.Tensor:
        return (self.base_height - self.cfg.base_height_target).square()

    def _reward_torques(self) -> torch.Tensor:
        return self.torques.square().sum(dim=1)

    def _reward_dof_acc(self) -> torch.Tensor:
        return ((self.joint_vel - self.last_joint_vel) / self.dt).square().sum(dim=1)

    def _reward_dof_pos_limits(self) -> torch.Tensor:
        below = (self.soft_limits[:, 0] - self.joint_pos).clamp(min=0)
        above = (self.joint_pos - self.soft_limits[:, 1]).clamp(min=0)
        return (below + above).sum(dim=1)

    def _reward_dof_vel_limits(self) -> torch.Tensor:
        """Joint speed beyond soft_velocity_limit x the URDF velocity limit (rad/s, summed over joints)."""
        return (self.joint_vel.abs() - self.cfg.soft_velocity_limit * self._velocity_limit).clamp(min=0).sum(dim=1)

    def _reward_feet_air_time(self) -> torch.Tensor:
        contact = self.contacts
        first_contact = (self.feet_air_time > 0) & (contact | self.last_contacts)
        self.feet_air_time += self.dt
        reward = ((self.feet_air_time - self.cfg.feet_air_time_target) * first_contact).sum(dim=1)
        self.feet_air_time *= ~(contact | self.last_contacts)
        self.last_contacts = contact
        return reward * (self.commands[:, :2].norm(dim=1) > self.cfg.commands.min_norm)

    def _reward_pose(self) -> torch.Tensor:
        """exp(-sum_j w_j (q_j - q0_j)^2): stay near the default stance (upright body, hips under the body)."""
        return torch.exp(-((self.joint_pos - self.default_joint_pos).square() * self.pose_weights).sum(dim=1))

    def _reward_feet_slip(self) -> torch.Tensor:
        """Squared horizontal speed of feet that touch the ground: step, do not slide."""
        return (self.feet_vel_xy.square().sum(dim=2) * self.contacts).sum(dim=1)

    def _reward_stand_still(self) -> torch.Tensor:
        still = self.commands[:, :2].norm(dim=1) < self.cfg.commands.min_norm
        return (self.joint_pos - self.default_joint_pos).abs().sum(dim=1) * still

    # -- cost terms (each [N], >= 0; weighted by cfg.costs, summed per episode) -------------------------
    def _cost_base_contact(self) -> torch.Tensor:
        """1 while the body touches the ground."""
        return self.base_contact.float()

    def _cost_joint_velocity(self) -> torch.Tensor:
        """Joints moving faster than their URDF velocity limit (count): what the deploy safety layer damps on."""
        return (self.joint_vel.abs() > self._velocity_limit).float().sum(dim=1)

    def _cost_torque_saturation(self) -> torch.Tensor:
        """Joints whose motor gave at least 95% of its torque limit (this env's motor strength) at the last substep."""
        limit = self._torque_limit * self.motor_strength.unsqueeze(1)
        return (self.torques.abs() >= 0.95 * limit).float().sum(dim=1)
