"""Arm reaching: move the end effector to a random target in the workspace. A quick task for smoke tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import torch

from robolearn.errors import ConfigError
from robolearn.sim.math import sample_uniform
from robolearn.sim.tasks.base import ObsTermCfg, Task, TaskCfg

__all__ = ["ReachCfg", "ReachTask"]


@dataclass(kw_only=True)
class ReachCfg(TaskCfg):
    target_low: tuple[float, float, float] = (0.3, -0.3, 0.2)  # m, in the robot base frame
    target_high: tuple[float, float, float] = (0.6, 0.3, 0.6)
    success_distance: float = 0.02  # m, end effector to target at the end of the episode
    init_joint_noise: float = 0.2  # rad
    precision_scale: float = 0.05  # m, width of the 1 - tanh(d / scale) precision reward
    rewards: dict[str, float] = field(default_factory=lambda: {"distance": -1.0, "precision": 1.0})


class ReachTask(Task):
    """Policy observations: joint positions (relative to default), joint velocities, end-effector position,
    target position, target minus end effector, last action. Privileged: the same, without noise."""

    cfg_cls = ReachCfg
    cfg: ReachCfg

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        ee = self.robot_cfg.end_effector
        if ee is None:
            raise ConfigError(f"task reach needs a robot with an end_effector site; {self.robot_cfg.name} has none")
        spec.add_sensor(name="ee_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objtype=mujoco.mjtObj.mjOBJ_SITE,
                        objname=ee)
        if render:
            target = spec.worldbody.add_body(name="target", mocap=True)
            target.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], rgba=[0.9, 0.2, 0.2, 0.8],
                            contype=0, conaffinity=0)

    def setup(self) -> None:
        dev = self.device
        self._ee_cols = self.sensor("ee_pos")
        self.target = torch.zeros(self.num_envs, 3, device=dev)
        self._target_box = (torch.tensor(self.cfg.target_low, device=dev), torch.tensor(self.cfg.target_high,
                                                                                         device=dev))

    def reset_idx(self, mask: torch.Tensor) -> None:
        n, g, c, dev = self.num_envs, self.generator, self.cfg, self.device
        lo, hi = self._target_box
        target = lo + (hi - lo) * torch.rand((n, 3), generator=g, device=dev)
        self.target = torch.where(mask.unsqueeze(1), target, self.target)
        noise = sample_uniform(-c.init_joint_noise, c.init_joint_noise, (n, self.num_actions), g)
        full = torch.zeros(n, self.model.nq, dtype=torch.float64, device=dev)
        full[:, self._qpos_adr] = (self.default_joint_pos + noise).double()
        self.sim.set_state(mask, full, torch.zeros(n, self.model.nv, dtype=torch.float64, device=dev))
        self._clear_episode(mask)

    def update_state(self) -> None:
        self.joint_pos = self.sim.qpos[:, self._qpos_adr].float()
        self.joint_vel = self.sim.qvel[:, self._qvel_adr].float()
        self.ee_pos = self.sensors[:, -1, self._ee_cols].float()
        self.distance = (self.target - self.ee_pos).norm(dim=1)

    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        policy = [ObsTermCfg(term="joint_pos"), ObsTermCfg(term="joint_vel", scale=0.1), ObsTermCfg(term="ee_pos"),
                  ObsTermCfg(term="target_pos"), ObsTermCfg(term="target_error"), ObsTermCfg(term="last_action")]
        return {"policy": policy, "privileged": [ObsTermCfg(group="policy")]}

    def _obs_ee_pos(self) -> torch.Tensor:
        """End-effector position in the base frame (m)."""
        return self.ee_pos

    def _obs_target_pos(self) -> torch.Tensor:
        return self.target

    def _obs_target_error(self) -> torch.Tensor:
        """Target minus end effector (m)."""
        return self.target - self.ee_pos

    def terminated(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def command_ranges(self) -> dict[str, tuple[float, float]]:
        lo, hi = self.cfg.target_low, self.cfg.target_high
        return {f"target_{axis}": (lo[i], hi[i]) for i, axis in enumerate("xyz")}

    def mocap_positions(self, env: int) -> dict[str, object]:
        return {"target": self.target[env].cpu().numpy()}

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"ee_distance": self.distance}

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        return {"success": (self.distance < self.cfg.success_distance).float(), "final_distance": self.distance}

    def _reward_distance(self) -> torch.Tensor:
        return self.distance

    def _reward_precision(self) -> torch.Tensor:
        return 1.0 - torch.tanh(self.distance / self.cfg.precision_scale)

    def _reward_joint_vel(self) -> torch.Tensor:
        return self.joint_vel.square().sum(dim=1)
