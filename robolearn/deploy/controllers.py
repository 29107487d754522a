"""Low-level controllers beyond joint PD (which the robot's drives or `pd_torque` evaluate).

Cartesian impedance for arms: the end effector behaves like a spring-damper around a target pose,

    tau = J^T (K e - D J dq) + gravity/Coriolis + nullspace(k_n (q_n - q) - d_n dq)

with settable stiffness K (translational N/m, rotational N m/rad) and damping D (default from a damping
ratio, D = 2 zeta sqrt(K) per axis, as in the Franka examples). The command is pure torque (kp = kd = 0).
"""

from __future__ import annotations

import numpy as np

from robolearn.deploy.interface import JointCommand
from robolearn.deploy.profile import ImpedanceCfg
from robolearn.errors import ConfigError

__all__ = ["CartesianImpedance", "orientation_error"]


def orientation_error(rot: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector [3] (world frame, angle in [0, pi]) that turns `rot` into `target` (both 3x3)."""
    m = target @ rot.T
    trace = float(np.trace(m))
    # The quaternion of m, from its largest component (stable for any angle).
    if trace > max(m[0, 0], m[1, 1], m[2, 2]):
        w = 0.5 * np.sqrt(1.0 + trace)
        xyz = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (4.0 * w)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        xyz = np.zeros(3)
        xyz[i] = 0.5 * np.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 0.0))
        xyz[j] = (m[j, i] + m[i, j]) / (4.0 * xyz[i])
        xyz[k] = (m[k, i] + m[i, k]) / (4.0 * xyz[i])
        w = (m[k, j] - m[j, k]) / (4.0 * xyz[i])
    if w < 0:  # the shorter way round
        w, xyz = -w, -xyz
    sin_half = float(np.linalg.norm(xyz))
    if sin_half < 1e-15:
        return np.zeros(3)
    return xyz / sin_half * (2.0 * np.arctan2(sin_half, w))


class CartesianImpedance:
    """`kinematics`: the arm's model with `joint_names`, `update(q, dq)`, `ee_pose()`, `jacobian()` and
    `bias_torque()` (gravity + Coriolis), e.g. `robolearn.twin.kinematics.ArmKinematics` (MuJoCo)."""

    def __init__(self, kinematics, cfg: ImpedanceCfg | None = None,
                 q_nominal: np.ndarray | None = None) -> None:
        cfg = cfg or ImpedanceCfg()
        self.kin = kinematics
        n = len(kinematics.joint_names)
        self.q_nominal = np.zeros(n) if q_nominal is None else np.asarray(q_nominal, dtype=float)
        self.damping_ratio = cfg.damping_ratio
        self.set_stiffness(cfg.stiffness)
        self.nullspace_k = cfg.nullspace_stiffness
        self.target_pos: np.ndarray | None = None
        self.target_rot: np.ndarray | None = None

    def set_stiffness(self, stiffness: list[float] | np.ndarray,
                      damping: list[float] | np.ndarray | None = None) -> None:
        """Six stiffness values (x, y, z in N/m; rx, ry, rz in N m/rad); damping defaults to the damping ratio."""
        k = np.asarray(stiffness, dtype=float)
        if k.shape != (6,) or np.any(k < 0) or not np.all(np.isfinite(k)):
            raise ConfigError(f"impedance stiffness must be 6 non-negative numbers, got {k.tolist()}")
        self.K = k
        self.set_damping(2.0 * self.damping_ratio * np.sqrt(k) if damping is None else damping)

    def set_damping(self, damping: list[float] | np.ndarray) -> None:
        d = np.asarray(damping, dtype=float)
        if d.shape != (6,) or np.any(d < 0) or not np.all(np.isfinite(d)):
            raise ConfigError(f"impedance damping must be 6 non-negative numbers, got {d.tolist()}")
        self.D = d

    def set_target(self, pos: np.ndarray, rot: np.ndarray | None = None) -> None:
        self.target_pos = np.asarray(pos, dtype=float)
        if rot is not None:
            self.target_rot = np.asarray(rot, dtype=float).reshape(3, 3)

    def hold_current(self, q: np.ndarray) -> None:
        self.kin.update(q)
        self.target_pos, self.target_rot = self.kin.ee_pose()

    def command(self, q: np.ndarray, dq: np.ndarray) -> JointCommand:
        if self.target_pos is None:
            self.hold_current(q)
        self.kin.update(q, dq)
        pos, rot = self.kin.ee_pose()
        jac = self.kin.jacobian()
        err = np.concatenate([self.target_pos - pos,
                              orientation_error(rot, self.target_rot) if self.target_rot is not None else np.zeros(3)])
        twist = jac @ dq
        wrench = self.K * err - self.D * twist
        tau = jac.T @ wrench + self.kin.bias_torque()
        # Nullspace: pull toward the nominal posture without disturbing the end effector.
        proj = np.eye(len(q)) - jac.T @ np.linalg.pinv(jac.T)
        tau += proj @ (self.nullspace_k * (self.q_nominal - q) - 2.0 * np.sqrt(self.nullspace_k) * dq)
        n = len(q)
        return JointCommand(q=np.asarray(q, dtype=float).copy(), dq=np.zeros(n), kp=np.zeros(n), kd=np.zeros(n),
                            tau=tau)
