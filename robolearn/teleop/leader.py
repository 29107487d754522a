"""Leader-follower teleop: a leader arm behind any `RobotInterface` (SimRobot twin, DDS, ROS 2) drives the follower.

The leader's joints are mapped BY NAME into the follower's joint order (`joint_names`); an optional leader joint
(`gripper_joint`, e.g. the handle of a GELLO/SO-100 leader) fills `gripper` by linear interpolation between its
open and closed positions. The leader is only read (never commanded), `read()` never blocks because
`RobotInterface.read()` does not, and `close()` closes the leader (the device owns the leader it is given).

Fail-safe: a leader reading older than `timeout` (default 0.2 s), none at all, or with a NaN in the mapped joints
gives `joint_pos=None, active=False`: the follower holds, it never jumps to a half-valid pose. Each such outage is
logged once as a warning (and its end once as info). `active` is true while the leader moved by more than
`move_threshold` rad within the last `active_window` seconds. Save/discard come from another device (keyboard).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from robolearn.deploy.interface import RobotInterface
from robolearn.errors import DeviceError
from robolearn.teleop.devices import TeleopCommand, TeleopDevice

__all__ = ["LeaderArm"]

log = logging.getLogger("robolearn.teleop")


class LeaderArm(TeleopDevice):
    """Leader joint positions (follower order) -> TeleopCommand.joint_pos."""

    name = "leader"
    HELP = "leader arm: move the leader, the follower follows (its gripper joint drives the gripper)"

    def __init__(self, leader: RobotInterface, joint_names: list[str], *, gripper_joint: str | None = None,
                 gripper_open: float | None = None, gripper_closed: float | None = None, timeout: float = 0.2,
                 move_threshold: float = 0.01, active_window: float = 0.3) -> None:
        names = list(getattr(leader, "joint_names", []) or [])
        missing = [j for j in joint_names if j not in names]
        if missing:
            raise DeviceError(f"leader arm: the follower's joints {missing} are not joints of the leader (it has "
                              f"{', '.join(names) or 'no joint names'})")
        if timeout <= 0 or move_threshold <= 0 or active_window <= 0:
            raise DeviceError(f"leader arm: timeout, move_threshold and active_window must be > 0, got {timeout}, "
                              f"{move_threshold}, {active_window}")
        self.leader: RobotInterface | None = leader
        self.joint_names = list(joint_names)
        self.index = np.array([names.index(j) for j in joint_names], dtype=int)
        self.gripper_index: int | None = None
        if gripper_joint is not None:
            if gripper_joint not in names:
                raise DeviceError(f"leader arm: gripper_joint {gripper_joint!r} is not a joint of the leader (it "
                                  f"has {', '.join(names)})")
            if gripper_open is None or gripper_closed is None or gripper_open == gripper_closed:
                raise DeviceError(f"leader arm: gripper_joint {gripper_joint!r} needs gripper_open and "
                                  f"gripper_closed (its positions, rad or m, open != closed)")
            self.gripper_index = names.index(gripper_joint)
        self.gripper_open, self.gripper_closed = gripper_open, gripper_closed
        self.timeout, self.move_threshold, self.active_window = timeout, move_threshold, active_window
        watched = list(self.index) + ([self.gripper_index] if self.gripper_index is not None else [])
        self._watched = np.array(sorted(set(watched)), dtype=int)
        self._anchor: np.ndarray | None = None  # leader pose at the last detected motion
        self._moved_at = -np.inf
        self._gripper = 0.0
        self._fault: str | None = None  # the reported outage, until the leader is fresh again

    def read(self) -> TeleopCommand:
        if self.leader is None:
            raise DeviceError("teleop leader: read() after close()")
        state = self.leader.read()
        now = time.monotonic()
        fault = None
        if state is None:
            fault = "no leader state yet"
        elif now - state.stamp > self.timeout:
            fault = f"leader state is {now - state.stamp:.2f} s old (timeout {self.timeout:g} s)"
        else:
            q = np.asarray(state.q, dtype=float)
            if not np.all(np.isfinite(q[self._watched])):
                fault = "leader state has NaN/inf joint positions"
        if fault is not None:
            if self._fault is None:
                log.warning("teleop leader: %s; the follower holds", fault)
            self._fault = fault
            self._anchor = None  # motion detection restarts from the pose the leader comes back with
            return TeleopCommand(twist=np.zeros(6), gripper=self._gripper, joint_pos=None, active=False)
        if self._fault is not None:
            log.info("teleop leader: state is fresh again")
            self._fault = None
        if self._anchor is None or np.max(np.abs(q[self._watched] - self._anchor)) > self.move_threshold:
            if self._anchor is not None:
                self._moved_at = now
            self._anchor = q[self._watched].copy()
        if self.gripper_index is not None:
            span = self.gripper_closed - self.gripper_open
            self._gripper = float(np.clip((q[self.gripper_index] - self.gripper_open) / span, 0.0, 1.0))
        return TeleopCommand(twist=np.zeros(6), gripper=self._gripper, joint_pos=q[self.index].copy(),
                             active=now - self._moved_at < self.active_window)

    def close(self) -> None:
        """Close the leader's transport: the device owns the leader it is given."""
        if self.leader is not None:
            self.leader.close()
            self.leader = None
