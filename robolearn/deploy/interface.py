"""What the deploy runtime exchanges with a robot, whatever the transport (simulated, ROS 2, raw DDS).

Joint arrays are in the robot's joint order (`RobotInterface.joint_names`); the runtime maps them to the
policy's order by name. A `JointCommand` has motor-driver semantics (Unitree LowCmd, ros2_control PD):

    torque = kp * (q - q_measured) + kd * (dq - dq_measured) + tau

so Damp is `kp = 0, kd > 0`, Passive is all zeros, and a robot whose drives take only torques evaluates the
formula itself (`pd_torque`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

__all__ = ["RobotState", "JointCommand", "RobotInterface", "pd_torque"]


@dataclass
class RobotState:
    """One reading of the robot. `stamp` is `time.monotonic()` when the reading was taken or received."""

    stamp: float
    q: np.ndarray  # [n] rad
    dq: np.ndarray  # [n] rad/s
    tau: np.ndarray | None = None  # [n] N m, measured or estimated joint torque
    quat: np.ndarray | None = None  # [4] base orientation (w, x, y, z), world <- body (legged robots)
    gyro: np.ndarray | None = None  # [3] base angular velocity, body frame, rad/s
    estop: bool = False  # the robot's own e-stop / remote stop is pressed


@dataclass
class JointCommand:
    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> JointCommand:
        return cls(*(np.zeros(n) for _ in range(5)))

    @classmethod
    def damping(cls, q: np.ndarray, kd: np.ndarray | float) -> JointCommand:
        n = len(q)
        return cls(q=np.array(q, dtype=float), dq=np.zeros(n), kp=np.zeros(n), kd=np.broadcast_to(kd, (n,)).copy(),
                   tau=np.zeros(n))


def pd_torque(cmd: JointCommand, q: np.ndarray, dq: np.ndarray, limit: np.ndarray | None = None) -> np.ndarray:
    """The torque a motor driver applies for `cmd` at measured (q, dq), clipped to +-limit."""
    tau = cmd.kp * (cmd.q - q) + cmd.kd * (cmd.dq - dq) + cmd.tau
    return np.clip(tau, -limit, limit) if limit is not None else tau


class RobotInterface(ABC):
    """A robot the runtime can read and command. Transports: simulated (MuJoCo), ROS 2 (rclpy), raw DDS.

    Subclasses set `joint_names` (robot order) before the runtime starts."""

    joint_names: list[str]

    @abstractmethod
    def read(self) -> RobotState | None:
        """The latest state, or None if none has arrived yet. Never blocks."""

    @abstractmethod
    def write(self, cmd: JointCommand) -> None:
        """Send one command. Never blocks."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the transport."""
