"""Arm kinematics and dynamics from the robot's model (MuJoCo, from the same URDF the policy trained on):
end-effector pose, its Jacobian, and the gravity + Coriolis torques for impedance control and teleop IK.

The deploy runtime does not use this: it computes end-effector observations with numpy from the kinematic chain
the bundle carries (`robolearn.deploy.kinematics.ChainKinematics`)."""

from __future__ import annotations

import mujoco
import numpy as np

from robolearn.errors import ConfigError
from robolearn.sim.robots.robot_cfg import load_robot_cfg
from robolearn.sim.scene import build_robot_scene, robot_info

__all__ = ["ArmKinematics"]


class ArmKinematics:
    """Fixed-base arm; joint arrays in `joint_names` order (default: the model's actuated joints)."""

    def __init__(self, robot: str, joint_names: list[str] | None = None, site: str | None = None) -> None:
        cfg = load_robot_cfg(robot)
        if cfg.floating_base:
            raise ConfigError(f"robot {robot}: arm kinematics needs a fixed-base robot")
        site = site or cfg.end_effector
        if site is None:
            raise ConfigError(f"robot {robot}: no end_effector site declared")
        self.model = build_robot_scene(cfg, timestep=0.002).compile()
        self.data = mujoco.MjData(self.model)
        info = robot_info(self.model, cfg)
        names = list(info.joint_names)
        self.joint_names = list(joint_names) if joint_names is not None else names
        unknown = [j for j in self.joint_names if j not in names]
        if unknown:
            raise ConfigError(f"robot {robot}: joints {unknown} are not in the model; it has {names}")
        order = [names.index(j) for j in self.joint_names]
        self.qpos_adr = info.qpos_adr[order]
        self.dof_adr = info.qvel_adr[order]
        self.site = self.model.site(site).id

    def update(self, q: np.ndarray, dq: np.ndarray | None = None) -> None:
        d = self.data
        d.qpos[self.qpos_adr] = q
        d.qvel[:] = 0.0
        if dq is not None:
            d.qvel[self.dof_adr] = dq
        mujoco.mj_forward(self.model, d)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position [3], rotation matrix [3, 3]) of the end-effector site in the base frame, after `update`."""
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def jacobian(self) -> np.ndarray:
        """[6, n]: linear rows then angular rows, columns in `joint_names` order, after `update`."""
        jp = np.zeros((3, self.model.nv))
        jr = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jp, jr, self.site)
        return np.vstack([jp, jr])[:, self.dof_adr]

    def bias_torque(self) -> np.ndarray:
        """Gravity + Coriolis/centrifugal joint torques at the last `update` state, less the gravity the robot's
        drives already cancel (`gravity_compensation` in the robot declaration, e.g. Franka)."""
        return (self.data.qfrc_bias - self.data.qfrc_gravcomp)[self.dof_adr].copy()

    def fk(self, q: np.ndarray) -> np.ndarray:
        self.update(q)
        return self.ee_pose()[0]
