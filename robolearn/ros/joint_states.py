"""sensor_msgs/JointState -> `RobotState`, whatever carries it (rclpy or raw DDS).

Joints are mapped BY NAME: ros2_control's joint_state_broadcaster does not publish in the robot's order, and
several broadcasters may each publish part of the joints. A joint's latest value is kept; the state's stamp
is that of the OLDEST joint, so a silent publisher makes the state stale (the runtime's watchdog trips).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from robolearn.deploy.interface import JointCommand, RobotState
from robolearn.errors import ConfigError

__all__ = ["JointStateAssembler", "position_targets"]

log = logging.getLogger("robolearn.ros")


class JointStateAssembler:
    def __init__(self, joint_names: Sequence[str], topic: str = "/joint_states",
                 missing_joint_timeout: float = 1.0) -> None:
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ConfigError(f"{topic}: expected distinct joint names, got {list(joint_names)}")
        self.joint_names = list(joint_names)
        self.topic = topic
        self.n = len(self.joint_names)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self.missing_joint_timeout = missing_joint_timeout
        self._q = np.full(self.n, np.nan)
        self._dq = np.full(self.n, np.nan)
        self._tau = np.full(self.n, np.nan)
        self._stamps = np.full(self.n, -np.inf)
        self._first_msg: float | None = None
        self._reported_missing = False
        self._maps: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def update(self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float],
               effort: Sequence[float], stamp: float | None = None) -> None:
        """One JointState message; raises ValueError (the caller drops and counts it) when malformed."""
        stamp = time.monotonic() if stamp is None else stamp
        names = tuple(names)
        k = len(names)
        for field_name, values in (("position", position), ("velocity", velocity)):
            if len(values) != k:
                raise ValueError(f"{self.topic}: JointState.{field_name} has {len(values)} values for {k} names "
                                 f"(the deploy runtime needs position and velocity for every named joint)")
        if names not in self._maps:
            src = [j for j, name in enumerate(names) if name in self._index]
            self._maps[names] = (np.array(src, dtype=int), np.array([self._index[names[j]] for j in src], dtype=int))
        src, dst = self._maps[names]
        with self._lock:
            if self._first_msg is None:
                self._first_msg = stamp
            self._q[dst] = np.asarray(position, dtype=float)[src]
            self._dq[dst] = np.asarray(velocity, dtype=float)[src]
            self._tau[dst] = np.asarray(effort, dtype=float)[src] if len(effort) == k else np.nan
            self._stamps[dst] = stamp

    @property
    def missing_joints(self) -> list[str]:
        with self._lock:
            return [j for j, s in zip(self.joint_names, self._stamps, strict=True) if s == -np.inf]

    def measured_q(self) -> np.ndarray:
        with self._lock:
            return self._q.copy()

    def state(self) -> RobotState | None:
        """The assembled state, or None until every configured joint has arrived (logged once after a timeout)."""
        with self._lock:
            if self._first_msg is None:
                return None
            if np.isinf(self._stamps).any():
                if not self._reported_missing and time.monotonic() - self._first_msg > self.missing_joint_timeout:
                    self._reported_missing = True
                    seen = sorted({n for names in self._maps for n in names})
                    log.error("%s: joints %s never arrived (in %.1f s); names on the topic: %s", self.topic,
                              [j for j, s in zip(self.joint_names, self._stamps, strict=True) if s == -np.inf],
                              self.missing_joint_timeout, seen)
                return None
            return RobotState(stamp=float(self._stamps.min()), q=self._q.copy(), dq=self._dq.copy(),
                              tau=None if np.isnan(self._tau).any() else self._tau.copy())


def position_targets(cmd: JointCommand, measured_q: np.ndarray) -> np.ndarray | None:
    """Targets for a position-only interface (ros2_control forward/trajectory controllers). A joint with kp = 0
    (Damp, Passive) cannot be expressed: it is sent its measured position (hold). None before any state."""
    target = np.asarray(cmd.q, dtype=float)
    hold = np.asarray(cmd.kp) <= 0.0
    if hold.any():
        if np.isnan(measured_q[hold]).any():
            return None
        target = np.where(hold, measured_q, target)
    return target
