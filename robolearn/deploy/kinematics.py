"""Kinematics of an arm with numpy, from the kinematic chain a bundle carries (`robot_model.chain` in deploy.yaml):
the end-effector observations (`ee_pos`, `target_error`) of a policy, and the damped least-squares IK of an
end-effector action (`action.type: ee_delta` or `ee_target`), computed on the robot's computer without the simulator
or the URDF.

The chain lists the frames from the world frame the arm was trained in (its base link at the origin) to the end
effector, each in its parent's frame, as the training model (MuJoCo) placed them: a frame is its parent times
(pos, quat), then a rotation (revolute) or a translation (prismatic) along `axis` by the joint's position. The
last entry is the end-effector point on its link (no joint). The MuJoCo model behind the twin
(`robolearn.twin.kinematics.ArmKinematics`) computes the same positions; a test checks they agree to 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from robolearn.deploy.bundle import BundleManifest, KinematicLink
from robolearn.errors import BundleError

__all__ = ["ChainKinematics", "quat_to_mat", "mat_to_quat", "rotation_vector", "axis_angle_mat"]


def quat_to_mat(quat: Sequence[float]) -> np.ndarray:
    """Rotation matrix [3, 3] of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def mat_to_quat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix [3, 3]."""
    r = np.asarray(rot, dtype=float)
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.zeros(4)
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis times angle [3] (angle in [0, pi]) of a rotation matrix."""
    q = mat_to_quat(rot)
    s = np.linalg.norm(q[1:])
    if s < 1e-12:
        return 2.0 * q[1:]  # small angle: 2 * sin(a/2) * axis ~ a * axis
    return 2.0 * np.arctan2(s, q[0]) * q[1:] / s


def axis_angle_mat(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix [3, 3] by `angle` rad about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis
    s, c = math.sin(angle), math.cos(angle)
    t = 1.0 - c
    return np.array([[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                     [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                     [t * x * z - s * y, t * y * z + s * x, t * z * z + c]])


class ChainKinematics:
    """End-effector pose from joint positions given in `joint_names` order (the policy's, by default)."""

    def __init__(self, chain: Sequence[KinematicLink], joint_names: Sequence[str]) -> None:
        if not chain:
            raise BundleError("the kinematic chain is empty")
        names = list(joint_names)
        self.joint_names = names
        self._links = []
        for i, link in enumerate(chain):
            if link.joint is not None and link.joint not in names:
                raise BundleError(f"robot_model.chain[{i}] ({link.link}): joint {link.joint!r} is not one of the "
                                  f"policy's joints ({', '.join(names)})")
            axis = None
            if link.joint is not None:
                axis = np.asarray(link.axis, dtype=float)
                if axis.shape != (3,) or not np.linalg.norm(axis) > 0:
                    raise BundleError(f"robot_model.chain[{i}] ({link.link}).axis: expected a non-zero 3-vector, "
                                      f"got {link.axis}")
                axis = axis / np.linalg.norm(axis)
            self._links.append((np.asarray(link.pos, dtype=float), quat_to_mat(link.quat),
                                None if link.joint is None else names.index(link.joint), link.joint_type, axis))

    @classmethod
    def from_manifest(cls, manifest: BundleManifest) -> ChainKinematics:
        """The chain of a bundle, joints in the policy's order; a BundleError naming the field when it has none."""
        model = manifest.robot_model
        if model is None or not model.chain:
            raise BundleError(f"the policy ({manifest.task}) observes the end effector, but its bundle carries no "
                              f"kinematic chain (robot_model.chain): export it again with this robolearn")
        return cls(model.chain, manifest.joints.names)

    def ee_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position [3], rotation matrix [3, 3]) of the end effector in the base frame at joint positions `q`."""
        return self._forward(q)[:2]

    def _forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, np.ndarray, np.ndarray]]]:
        """(ee position, ee rotation, [(joint index, kind, joint origin, world axis)] along the chain)."""
        q = np.asarray(q, dtype=float)
        pos, rot = np.zeros(3), np.eye(3)
        joints = []
        for offset, local, joint, kind, axis in self._links:
            pos = pos + rot @ offset
            rot = rot @ local
            if joint is not None:
                joints.append((joint, kind, pos.copy(), rot @ axis))
                if kind == "prismatic":
                    pos = pos + rot @ (axis * q[joint])
                else:
                    rot = rot @ axis_angle_mat(axis, q[joint])
        return pos, rot, joints

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """[6, n] geometric Jacobian of the end-effector point (linear rows, then angular) in the base frame;
        columns in `joint_names` order (zero for joints off the chain, e.g. the fingers)."""
        pos, _, joints = self._forward(q)
        return self._jacobian(pos, joints)

    def _jacobian(self, pos: np.ndarray, joints: list[tuple[int, str, np.ndarray, np.ndarray]]) -> np.ndarray:
        jac = np.zeros((6, len(self.joint_names)))
        for joint, kind, origin, axis in joints:
            if kind == "prismatic":
                jac[:3, joint] = axis
            else:
                jac[:3, joint] = np.cross(axis, pos - origin)
                jac[3:, joint] = axis
        return jac

    def ik(self, q: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray, *, damping: float,
           iterations: int) -> np.ndarray:
        """Joint positions (all of `joint_names`; only the chain's move) that bring the end effector toward
        `target_pos` [3] with orientation `target_rot` [3, 3], from `q`: `iterations` damped least-squares steps
        dq = J^T (J J^T + damping^2 I)^-1 [position error; rotation vector error], as the training task's IK
        (`robolearn.sim.ik.dls_ik`) does on the MuJoCo model."""
        q = np.array(q, dtype=float)
        lam2 = damping**2
        for _ in range(iterations):
            pos, rot, joints = self._forward(q)
            err = np.concatenate([target_pos - pos, rotation_vector(target_rot @ rot.T)])
            jac = self._jacobian(pos, joints)
            q += jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
        return q

    def fk(self, q: np.ndarray) -> np.ndarray:
        """End-effector position [3] in the base frame, m."""
        return self.ee_pose(q)[0]
