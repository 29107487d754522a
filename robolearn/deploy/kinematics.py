"""Forward kinematics of an arm with numpy, from the kinematic chain a bundle carries (`robot_model.chain` in
deploy.yaml): the end-effector observations (`ee_pos`, `target_error`) of a policy, computed on the robot's
computer without the simulator or the URDF.

The chain lists the frames from the world frame the arm was trained in (its base link at the origin) to the end
effector, each in its parent's frame, as the training model (MuJoCo) placed them: a frame is its parent times
(pos, quat), then a rotation (revolute) or a translation (prismatic) along `axis` by the joint's position. The
last entry is the end-effector point on its link (no joint). The MuJoCo model behind the twin
(`robolearn.twin.kinematics.ArmKinematics`) computes the same positions; a test checks they agree to 1e-9.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robolearn.deploy.bundle import BundleManifest, KinematicLink
from robolearn.errors import BundleError

__all__ = ["ChainKinematics", "quat_to_mat", "axis_angle_mat"]


def quat_to_mat(quat: Sequence[float]) -> np.ndarray:
    """Rotation matrix [3, 3] of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def axis_angle_mat(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix [3, 3] by `angle` rad about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


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
        q = np.asarray(q, dtype=float)
        pos, rot = np.zeros(3), np.eye(3)
        for offset, local, joint, kind, axis in self._links:
            pos = pos + rot @ offset
            rot = rot @ local
            if joint is not None:
                if kind == "prismatic":
                    pos = pos + rot @ (axis * q[joint])
                else:
                    rot = rot @ axis_angle_mat(axis, q[joint])
        return pos, rot

    def fk(self, q: np.ndarray) -> np.ndarray:
        """End-effector position [3] in the base frame, m."""
        return self.ee_pose(q)[0]
