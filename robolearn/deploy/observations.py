"""Rebuild a policy's observation vector from what the robot measures, as the bundle's layout declares.

Each term name has one definition here, matching the training task's term of the same name
(`Task.policy_terms`); the export test checks the two agree on the same simulator state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robolearn.deploy.bundle import BundleManifest
from robolearn.errors import BundleError

__all__ = ["Measurement", "ObservationBuilder", "TERMS", "projected_gravity"]


@dataclass
class Measurement:
    """One policy step's inputs, joints in POLICY order."""

    q: np.ndarray
    dq: np.ndarray
    command: np.ndarray  # velocity command (vx, vy, wz) or target position (arms)
    last_action: np.ndarray
    quat: np.ndarray | None = None  # (w, x, y, z)
    gyro: np.ndarray | None = None
    ee_pos: np.ndarray | None = None


def projected_gravity(quat: np.ndarray) -> np.ndarray:
    """World gravity direction (0, 0, -1) in the body frame of the unit quaternion (w, x, y, z)."""
    w, x, y, z = quat
    return np.array([-2.0 * (x * z - w * y), -2.0 * (y * z + w * x), -(1.0 - 2.0 * (x * x + y * y))])


def _need(value: np.ndarray | None, what: str) -> np.ndarray:
    if value is None:
        raise BundleError(f"the policy observes {what}, but the robot state has none (no IMU or kinematics)")
    return value


TERMS: dict[str, Callable[[Measurement, np.ndarray], np.ndarray]] = {
    "base_ang_vel": lambda m, d: _need(m.gyro, "base_ang_vel (IMU gyro)"),
    "projected_gravity": lambda m, d: projected_gravity(_need(m.quat, "projected_gravity (IMU orientation)")),
    "velocity_command": lambda m, d: m.command[:3],
    "joint_pos": lambda m, d: m.q - d,
    "joint_vel": lambda m, d: m.dq,
    "last_action": lambda m, d: m.last_action,
    "ee_pos": lambda m, d: _need(m.ee_pos, "ee_pos (forward kinematics)"),
    "target_pos": lambda m, d: m.command[:3],
    "target_error": lambda m, d: m.command[:3] - _need(m.ee_pos, "target_error (forward kinematics)"),
}


class ObservationBuilder:
    """`build(measurement) -> obs [obs_dim]` (float32), stacking `history` frames oldest first."""

    def __init__(self, manifest: BundleManifest) -> None:
        unknown = [t.name for t in manifest.observation if t.name not in TERMS]
        if unknown:
            raise BundleError(f"observation terms {unknown} in the bundle cannot be measured on a robot; "
                              f"known terms: {', '.join(TERMS)}")
        self.terms = [(TERMS[t.name], np.asarray(t.scale), t.dim, t.name) for t in manifest.observation]
        self.default_pos = np.asarray(manifest.joints.default_pos)
        self.history = manifest.policy.history
        self.frames: deque[np.ndarray] = deque(maxlen=self.history)
        self.needs_kinematics = any(t.name in ("ee_pos", "target_error") for t in manifest.observation)

    def frame(self, m: Measurement) -> np.ndarray:
        parts = []
        for fn, scale, dim, name in self.terms:
            value = np.asarray(fn(m, self.default_pos), dtype=np.float64)
            if value.shape != (dim,):
                raise BundleError(f"observation term {name!r}: measured {value.shape}, the bundle expects ({dim},)")
            parts.append(value * scale)
        return np.concatenate(parts).astype(np.float32)

    def build(self, m: Measurement) -> np.ndarray:
        frame = self.frame(m)
        if not self.frames:
            self.frames.extend([frame] * self.history)  # a fresh start repeats the first frame
        else:
            self.frames.append(frame)
        return np.concatenate(self.frames)

    def reset(self) -> None:
        self.frames.clear()
