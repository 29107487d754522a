"""Raw-DDS transports (cyclonedds, no ROS install): a Unitree Go2 over `rt/lowcmd` / `rt/lowstate`, a ros2_control
robot over `rt/joint_states` / `rt/<controller>/commands`, a `cmd_vel` Twist source, an object pose source
(`PoseStamped`) and a planner's path source (`nav_msgs/Path`).

- Participants: `participant(domain_id, network_interface)`; `network_interface="lo"` gives loopback-only traffic
  (`loopback_config`: interface `lo`, no multicast, unicast peer 127.0.0.1), which these machines need because
  `lo` has no multicast flag. `use_loopback()` sets `CYCLONEDDS_URI` instead (for code that creates its own).
- QoS: `ros_default_qos()` (reliable, volatile, keep-last 10) and `sensor_data_qos()` (best effort, keep-last 5), as
  rclcpp's presets. Writers pin XCDR1, the representation ROS 2 and Unitree use. Readers of state are best effort
  (they match reliable and best-effort writers); command writers are reliable (forward_command_controller
  subscribes with the reliable system default; the Unitree SDK's writers are reliable too).
- Topic names: ROS `/x/y` is DDS `rt/x/y` (`dds_topic`); names that already start with `rt/` pass unchanged.

Readers never block: a listener (cyclonedds' receive thread) takes every sample on arrival, converts it and keeps
the latest with `time.monotonic()` at receipt; `read()` returns that. Bad samples (wrong CRC, malformed arrays)
are dropped and counted, and logged once per topic with what was expected.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from cyclonedds.core import DDSException, Listener
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from robolearn.deploy.interface import JointCommand, RobotInterface, RobotState
from robolearn.deploy.profile import HardwareProfile
from robolearn.errors import ConfigError
from robolearn.planning import ClearanceGrid, OccupancyGrid
from robolearn.ros.dds_types import (
    NUM_MOTORS,
    Float64MultiArray_,
    Imu_,
    JointState_,
    LowCmd_,
    LowState_,
    MultiArrayDimension_,
    MultiArrayLayout_,
    OccupancyGrid_,
    Path_,
    PoseStamped_,
    Twist_,
)
from robolearn.ros.joint_states import JointStateAssembler, position_targets
from robolearn.ros.unitree_crc import crc_ok, with_crc

__all__ = [
    "robot_from_profile",
    "GO2_JOINT_NAMES", "loopback_config", "interface_config", "use_loopback", "participant", "dds_topic",
    "ros_default_qos", "sensor_data_qos", "LatestReader", "make_writer", "UnitreeDdsRobot", "Ros2DdsRobot",
    "DdsTwistSource", "DdsPoseSource", "DdsPathSource", "DdsGridSource", "DdsClearanceSource", "pose_array",
    "path_waypoints", "occupancy_grid", "clearance_grid", "CLEARANCE_OPEN_CM", "DdsDomainError",
]

log = logging.getLogger("robolearn.dds")

# Unitree Go2 motor order (unitree_sdk2 / unitree_legged_const: FR_0..2, FL_0..2, RR_0..2, RL_0..2), URDF names.
GO2_JOINT_NAMES = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf")]

# --------------------------------------------------------------------------------------------- configuration


def interface_config(network_interface: str, domain_id: int | None = None) -> str:
    """Cyclone DDS XML config that binds to one network interface (e.g. `eth0` on a robot's computer).

    `lo` additionally turns multicast off and uses 127.0.0.1 as unicast discovery peer (loopback-only traffic)."""
    if not network_interface or not re.fullmatch(r"[\w.:-]+", network_interface):
        raise ValueError(f"DDS network interface: expected an interface name like 'lo' or 'eth0', "
                         f"got {network_interface!r}")
    domain = "any" if domain_id is None else str(_check_domain(domain_id))
    loop = network_interface == "lo"
    general = "<AllowMulticast>false</AllowMulticast>" if loop else ""
    discovery = ("<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>32"
                 "</MaxAutoParticipantIndex><Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery>") if loop else ""
    return (f'<CycloneDDS xmlns="https://cdds.io/config"><Domain id="{domain}"><General><Interfaces>'
            f'<NetworkInterface name="{network_interface}"/></Interfaces>{general}</General>{discovery}'
            f"</Domain></CycloneDDS>")


def loopback_config(domain_id: int | None = None) -> str:
    """Cyclone DDS XML config for loopback-only traffic (interface lo, no multicast, peer 127.0.0.1)."""
    return interface_config("lo", domain_id)


@contextlib.contextmanager
def use_loopback(domain_id: int | None = None) -> Iterator[str]:
    """Set `CYCLONEDDS_URI` to the loopback config inside the block (restored after); yields the config.

    It takes effect for domains created inside the block (this process, or children started in it)."""
    old = os.environ.get("CYCLONEDDS_URI")
    os.environ["CYCLONEDDS_URI"] = config = loopback_config(domain_id)
    try:
        yield config
    finally:
        if old is None:
            os.environ.pop("CYCLONEDDS_URI", None)
        else:
            os.environ["CYCLONEDDS_URI"] = old


def _check_domain(domain_id: int) -> int:
    if not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
        raise ValueError(f"DDS domain id: expected an integer in [0, 232], got {domain_id!r}")
    return domain_id


class DdsDomainError(ConfigError, ValueError):
    """A DDS domain cannot be opened as asked (already open on another interface, or the interface is unusable)."""


def _iface(name: str | None) -> str:
    return "the default interface (cyclonedds defaults / CYCLONEDDS_URI)" if name is None else f"interface {name!r}"


_participants: dict[int, tuple[str | None, DomainParticipant, Domain | None]] = {}
_participants_lock = threading.Lock()


def participant(domain_id: int = 0, network_interface: str | None = None) -> DomainParticipant:
    """The process's participant in `domain_id` (one per domain, shared by every reader and writer here).

    `network_interface`: None = cyclonedds defaults / `CYCLONEDDS_URI`; a name = bind to it (`lo` = loopback)."""
    _check_domain(domain_id)
    with _participants_lock:
        if domain_id in _participants:
            iface, dp, _ = _participants[domain_id]
            if iface != network_interface:
                raise DdsDomainError(f"DDS domain {domain_id} is already open on {_iface(iface)} in this process; "
                                     f"cannot also open it on {_iface(network_interface)} (one interface per domain "
                                     f"and process: give every DDS reader and writer the same network_interface)")
            return dp
        domain = None
        if network_interface is not None:
            try:
                domain = Domain(domain_id, interface_config(network_interface, domain_id))
            except DDSException as e:
                if e.code == DDSException.DDS_RETCODE_PRECONDITION_NOT_MET:
                    raise DdsDomainError(
                        f"DDS domain {domain_id} is already open in this process with another configuration "
                        f"(created outside robolearn.ros.dds.participant); cannot bind it to interface "
                        f"{network_interface!r}") from None
                raise DdsDomainError(
                    f"DDS domain {domain_id}: cannot use network interface {network_interface!r} "
                    f"({' '.join(str(e).split())}); is it an interface of this computer (`ip link` lists them)?"
                ) from None
        dp = DomainParticipant(domain_id)
        _participants[domain_id] = (network_interface, dp, domain)
        return dp


def dds_topic(name: str) -> str:
    """ROS topic `/x/y` -> DDS topic `rt/x/y`. A name that already starts with `rt/` is returned unchanged."""
    if name.startswith("rt/"):
        body = name[3:]
    else:
        body = name[1:] if name.startswith("/") else name
    if not re.fullmatch(r"[A-Za-z_~][\w~]*(/[A-Za-z_][\w]*)*", body or "-"):
        raise ValueError(f"topic {name!r}: expected a ROS name like '/joint_states' or '/ns/cmd_vel' "
                         f"(letters, digits, underscores, single '/' separators), or a DDS name 'rt/...'")
    return "rt/" + body


def ros_default_qos(depth: int = 10) -> Qos:
    """rclcpp's default QoS: reliable, volatile, keep-last `depth` (10)."""
    return Qos(Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)), Policy.Durability.Volatile,
               Policy.History.KeepLast(depth))


def sensor_data_qos(depth: int = 5) -> Qos:
    """rclcpp's sensor-data QoS: best effort, volatile, keep-last `depth` (5)."""
    return Qos(Policy.Reliability.BestEffort, Policy.Durability.Volatile, Policy.History.KeepLast(depth))


def _xcdr1(qos: Qos) -> Qos:
    return qos + Qos(Policy.DataRepresentation(use_cdrv0_representation=True))


def _delete(entity: object | None) -> None:
    """Delete a cyclonedds entity now (cyclonedds deletes on `__del__`; listeners keep cycles alive)."""
    if entity is not None:
        entity.__del__()


# ------------------------------------------------------------------------------------------- readers / writers

T = TypeVar("T", bound=IdlStruct)
R = TypeVar("R")


class _BadSample(ValueError):
    """A received sample that cannot be used (the message says which field and what was expected)."""


class LatestReader(Generic[T, R]):
    """Subscribes `topic` and keeps the latest sample, converted by `convert(sample, stamp)` in the receive thread.

    `convert` raises `ValueError` for a sample it rejects: it is counted in `rejected` and the first reason per
    reader is logged. `latest()` -> (converted, receipt stamp) or None; never blocks."""

    def __init__(self, dp: DomainParticipant, topic: str, data_type: type[T], convert: Callable[[T, float], R],
                 qos: Qos | None = None) -> None:
        self.topic_name = topic
        self.received = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._convert = convert
        self._lock = threading.Lock()
        self._latest: tuple[R, float] | None = None
        self._topic = Topic(dp, topic, data_type)
        self._listener = Listener(on_data_available=self._on_data)
        self._reader: DataReader | None = None  # the listener can fire while the DataReader is being built
        self._reader = DataReader(dp, self._topic, qos or sensor_data_qos(), self._listener)

    def _on_data(self, reader: DataReader | None) -> None:
        # cyclonedds may call the listener before the DataReader object is registered (data arriving during
        # construction) and pass None: take from our own reader, or leave the data for the next callback.
        reader = reader if reader is not None else self._reader
        if reader is None:
            return
        try:
            samples = reader.take(N=64)
        except Exception as e:  # noqa: BLE001 - a receive thread must not die; undecodable data is a bad sample
            samples = []
            self._reject(f"cannot decode a sample: {e}")
        for s in samples:
            if isinstance(s, InvalidSample):
                continue
            stamp = time.monotonic()
            try:
                value = self._convert(s, stamp)
            except ValueError as e:
                self._reject(str(e))
                continue
            with self._lock:
                self._latest = (value, stamp)
                self.received += 1

    def _reject(self, why: str) -> None:
        self.rejected += 1
        if self.last_error is None:
            log.error("%s: dropped a sample: %s", self.topic_name, why)
        self.last_error = why

    def latest(self) -> tuple[R, float] | None:
        with self._lock:
            return self._latest

    def close(self) -> None:
        reader, self._reader = self._reader, None
        _delete(reader)


def make_writer(dp: DomainParticipant, topic: str, data_type: type[IdlStruct], qos: Qos | None = None) -> DataWriter:
    """A writer on `topic` (DDS name) with `qos` (default: ROS default QoS), XCDR1 on the wire."""
    return DataWriter(dp, Topic(dp, topic, data_type), _xcdr1(qos or ros_default_qos()))


def _as_vector(name: str, value: np.ndarray | float, n: int) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.shape == ():
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"JointCommand.{name}: expected shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"JointCommand.{name}: non-finite values {a.tolist()}; refusing to send them to the motors")
    return a


def _command_arrays(cmd: JointCommand, n: int) -> tuple[np.ndarray, ...]:
    return tuple(_as_vector(k, getattr(cmd, k), n) for k in ("q", "dq", "kp", "kd", "tau"))


# ------------------------------------------------------------------------------------------------ Unitree Go2


class UnitreeDdsRobot(RobotInterface):
    """A Unitree Go2 (or its simulated twin) over raw DDS: `LowState_` in, `LowCmd_` out, CRC on both.

    Joint i of `joint_names` is motor i (the Go2 order `GO2_JOINT_NAMES`: FR, FL, RR, RL x hip, thigh, calf).
    States with a wrong CRC are dropped (`bad_crc` counts them). `write` sends mode 0x01 with q, dq, kp, kd, tau
    for the used motors (the rest stay off, mode 0) and the CRC. `RobotState.estop` stays False: the remote's
    buttons (`wireless_remote`) are not decoded here.
    """

    def __init__(self, joint_names: Sequence[str] = GO2_JOINT_NAMES, *, domain_id: int = 0,
                 network_interface: str | None = None, state_topic: str = "rt/lowstate",
                 command_topic: str = "rt/lowcmd", check_crc: bool = True) -> None:
        if not 0 < len(joint_names) <= NUM_MOTORS:
            raise ValueError(f"UnitreeDdsRobot: expected 1 to {NUM_MOTORS} joint names (motor order), "
                             f"got {len(joint_names)}")
        self.joint_names = list(joint_names)
        self.n = len(joint_names)
        self.check_crc = check_crc
        dp = participant(domain_id, network_interface)
        self.state_topic, self.command_topic = dds_topic(state_topic), dds_topic(command_topic)
        self._state = LatestReader(dp, self.state_topic, LowState_, self._to_state,
                                   Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1)))
        # Reliable keep-last 1, as the Unitree SDK's writers: matches reliable and best-effort readers and never
        # waits on history (keep-last replaces the unacknowledged sample).
        self._writer: DataWriter | None = make_writer(
            dp, self.command_topic, LowCmd_,
            Qos(Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=10)), Policy.History.KeepLast(1)))
        self._msg = LowCmd_()
        self.sent = 0

    @property
    def received(self) -> int:
        """States accepted so far."""
        return self._state.received

    @property
    def bad_crc(self) -> int:
        """States dropped: a wrong CRC, or an unusable IMU (not a unit quaternion, a non-finite gyroscope)."""
        return self._state.rejected

    @property
    def bad_samples(self) -> int:
        """States dropped (as `bad_crc`; the name `Ros2DdsRobot` uses)."""
        return self._state.rejected

    def waiting_for(self) -> str:
        """What `read()` is still waiting for (for a 'no robot state' message)."""
        dropped = f" ({self.bad_crc} dropped: {self._state.last_error})" if self.bad_crc else ""
        return f"robot state on {self.state_topic}{dropped}"

    def _to_state(self, m: LowState_, stamp: float) -> RobotState:
        if self.check_crc and not crc_ok(m):
            raise ValueError(f"wrong CRC {m.crc:#010x} (expected the CRC-32/MPEG-2 of the LowState_ C struct)")
        ms = m.motor_state[:self.n]
        imu = m.imu_state
        quat = _unit_quaternion(np.array(imu.quaternion, dtype=float), "LowState_.imu_state.quaternion (w, x, y, z)")
        gyro = _finite(np.array(imu.gyroscope, dtype=float), "LowState_.imu_state.gyroscope")
        return RobotState(stamp=stamp, q=np.array([s.q for s in ms]), dq=np.array([s.dq for s in ms]),
                          tau=np.array([s.tau_est for s in ms]), quat=quat, gyro=gyro)

    def read(self) -> RobotState | None:
        latest = self._state.latest()
        return None if latest is None else latest[0]

    def write(self, cmd: JointCommand) -> None:
        if self._writer is None:
            raise RuntimeError(f"UnitreeDdsRobot: write on {self.command_topic} after close()")
        q, dq, kp, kd, tau = _command_arrays(cmd, self.n)
        motors = self._msg.motor_cmd
        for i in range(self.n):
            c = motors[i]
            c.mode, c.q, c.dq, c.kp, c.kd, c.tau = 0x01, float(q[i]), float(dq[i]), float(kp[i]), float(kd[i]), \
                float(tau[i])
        self._writer.write(with_crc(self._msg))
        self.sent += 1

    def close(self) -> None:
        self._state.close()
        writer, self._writer = self._writer, None
        _delete(writer)


# --------------------------------------------------------------------------------- ros2_control over raw DDS


class Ros2DdsRobot(RobotInterface):
    """A ros2_control robot over raw DDS: `sensor_msgs/JointState` in (mapped BY NAME by `JointStateAssembler`, as
    the rclpy node does), `std_msgs/Float64MultiArray` position targets out (forward_command_controller, whose
    `joints` parameter must list the joints in `joint_names` order), optional `sensor_msgs/Imu`.

    Position-only: the controller's hardware applies its own gains, so kp, kd, dq and tau of a `JointCommand` are
    not sent; a joint commanded with kp = 0 (Damp, Passive) is sent its measured position (`position_targets`).
    """

    position_only = True

    def __init__(self, joint_names: Sequence[str], *, controller: str = "forward_position_controller",
                 command_topic: str | None = None, joint_states_topic: str = "/joint_states",
                 imu_topic: str | None = None, domain_id: int = 0, network_interface: str | None = None,
                 missing_joint_timeout: float = 1.0) -> None:
        self.state_topic = dds_topic(joint_states_topic)
        self.command_topic = dds_topic(command_topic or f"/{controller}/commands")
        self.joints = JointStateAssembler(joint_names, self.state_topic, missing_joint_timeout)
        self.joint_names = self.joints.joint_names
        self.n = len(self.joint_names)
        dp = participant(domain_id, network_interface)
        self._joints = LatestReader(dp, self.state_topic, JointState_, self._on_joint_state)
        self._imu = None if imu_topic is None else LatestReader(dp, dds_topic(imu_topic), Imu_, _imu_to_arrays)
        self._writer: DataWriter | None = make_writer(dp, self.command_topic, Float64MultiArray_)
        self._layout = MultiArrayLayout_(dim=[MultiArrayDimension_(label="joints", size=self.n, stride=self.n)])
        self.sent = 0

    def _on_joint_state(self, m: JointState_, stamp: float) -> None:
        self.joints.update(m.name, m.position, m.velocity, m.effort, stamp)

    @property
    def missing_joints(self) -> list[str]:
        """Configured joints not received yet."""
        return self.joints.missing_joints

    @property
    def received(self) -> int:
        return self._joints.received

    @property
    def bad_samples(self) -> int:
        return self._joints.rejected + (self._imu.rejected if self._imu else 0)

    def waiting_for(self) -> str:
        """What `read()` is still waiting for (for a 'no robot state' message): joint states, some joints, the IMU."""
        if self.received == 0:
            dropped = f" ({self._joints.rejected} dropped: {self._joints.last_error})" if self._joints.rejected else ""
            return f"robot state on {self.state_topic}{dropped}"
        if self.missing_joints:
            return f"state of joints {self.missing_joints} on {self.state_topic}"
        if self._imu is not None and self._imu.latest() is None:
            return f"IMU data on {self._imu.topic_name}"
        return f"robot state on {self.state_topic}"

    def read(self) -> RobotState | None:
        state = self.joints.state()
        if state is not None and self._imu is not None:
            imu = self._imu.latest()
            if imu is None:
                return None
            (state.quat, state.gyro), imu_stamp = imu
            state.stamp = min(state.stamp, imu_stamp)  # a silent IMU makes the state stale (the watchdog trips)
        return state

    def write(self, cmd: JointCommand) -> None:
        if self._writer is None:
            raise RuntimeError(f"Ros2DdsRobot: write on {self.command_topic} after close()")
        target = position_targets(cmd, self.joints.measured_q())
        if target is None:
            return  # nothing to hold yet
        self._writer.write(Float64MultiArray_(layout=self._layout, data=_as_vector("q", target, self.n).tolist()))
        self.sent += 1

    def close(self) -> None:
        self._joints.close()
        if self._imu is not None:
            self._imu.close()
        writer, self._writer = self._writer, None
        _delete(writer)


def robot_from_profile(profile: HardwareProfile) -> RobotInterface:
    """The DDS transport a hardware profile declares (`dds.protocol`: unitree or ros2)."""
    d = profile.dds
    iface = d.network_interface or None
    if d.protocol == "unitree":
        return UnitreeDdsRobot(profile.joint_names, domain_id=d.domain_id, network_interface=iface,
                               state_topic=d.state_topic or "rt/lowstate", command_topic=d.command_topic or "rt/lowcmd")
    return Ros2DdsRobot(profile.joint_names, command_topic=d.command_topic or None,
                        joint_states_topic=d.state_topic or profile.ros2.joint_states_topic,
                        imu_topic=d.imu_topic or profile.ros2.imu_topic or None, domain_id=d.domain_id,
                        network_interface=iface)


QUAT_NORM_TOLERANCE = 0.1  # |norm - 1| above this: not an orientation (zeros = "unknown", or garbage)


def _unit_quaternion(quat: np.ndarray, what: str) -> np.ndarray:
    """`quat` (w, x, y, z) normalised, or ValueError when its norm is not within QUAT_NORM_TOLERANCE of 1."""
    norm = float(np.linalg.norm(quat))
    if not abs(norm - 1.0) <= QUAT_NORM_TOLERANCE:  # also NaN
        raise ValueError(f"{what} = {quat.tolist()} is not a unit quaternion (norm {norm:.3g}, expected 1 "
                         f"+- {QUAT_NORM_TOLERANCE:g})")
    return quat / norm


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} = {values.tolist()} is not finite")
    return values


def _imu_to_arrays(m: Imu_, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    o, w = m.orientation, m.angular_velocity
    quat = _unit_quaternion(np.array([o.w, o.x, o.y, o.z]), "Imu_.orientation (w, x, y, z)")
    return quat, _finite(np.array([w.x, w.y, w.z]), "Imu_.angular_velocity")


# ------------------------------------------------------------------------------------------------- cmd_vel


class DdsTwistSource:
    """Velocity commands from a `geometry_msgs/Twist` topic (`/cmd_vel` -> `rt/cmd_vel`): the latest (vx, vy, wz)."""

    def __init__(self, topic: str = "/cmd_vel", *, domain_id: int = 0, network_interface: str | None = None) -> None:
        self.topic = dds_topic(topic)
        self._reader = LatestReader(participant(domain_id, network_interface), self.topic, Twist_, _twist_to_array)

    @property
    def received(self) -> int:
        """Commands accepted so far."""
        return self._reader.received

    @property
    def rejected(self) -> int:
        """Commands dropped (non-finite vx, vy or wz): the previous command stays, and ages."""
        return self._reader.rejected

    def read(self) -> tuple[np.ndarray, float] | None:
        """((vx, vy, wz), age in seconds) of the latest command, or None if none arrived."""
        latest = self._reader.latest()
        if latest is None:
            return None
        cmd, stamp = latest
        return cmd.copy(), time.monotonic() - stamp

    def close(self) -> None:
        self._reader.close()


class _StampedSource:
    """The latest accepted sample of one topic with its receipt stamp: `read() -> (value copy, stamp) | None`,
    counts of accepted and rejected samples, an optional header frame every sample must carry."""

    def __init__(self, topic: str, data_type: type, *, frame_id: str, domain_id: int,
                 network_interface: str | None) -> None:
        self.topic, self.frame_id = dds_topic(topic), frame_id
        self._polled_rejected = 0
        self._reader = LatestReader(participant(domain_id, network_interface), self.topic, data_type, self._to_array)

    def _to_array(self, m: Any, stamp: float) -> np.ndarray:
        raise NotImplementedError

    @property
    def received(self) -> int:
        """Samples accepted so far."""
        return self._reader.received

    @property
    def rejected(self) -> int:
        """Samples dropped (see the class): the previous one stays, and ages."""
        return self._reader.rejected

    def read(self) -> tuple[np.ndarray, float] | None:
        """(the latest accepted value, its receipt stamp on time.monotonic()), or None if none arrived."""
        latest = self._reader.latest()
        return None if latest is None else (latest[0].copy(), latest[1])

    def poll(self) -> tuple[np.ndarray, float] | None:
        """`read()`, but raising ValueError (the topic and the reason) when a sample was rejected since the previous
        poll: for a consumer that must stop on malformed input (the deploy runtime's path source)."""
        rejected = self._reader.rejected
        if rejected > self._polled_rejected:
            self._polled_rejected = rejected
            raise ValueError(f"{self.topic}: {self._reader.last_error}")
        return self.read()

    def close(self) -> None:
        self._reader.close()


class DdsPoseSource(_StampedSource):
    """A tracked object's pose from a `geometry_msgs/PoseStamped` topic (motion capture, fiducials, a pose estimator
    publishing in the robot's base frame): the deploy runtime's object pose source, `read() -> ((x, y, z, qw, qx,
    qy, qz), receipt stamp) | None`. A sample with a non-finite or zero quaternion, or (with `frame_id`) another
    frame, is rejected and counted: the previous pose stays and ages, and the runtime damps once it is stale."""

    def __init__(self, topic: str, *, frame_id: str = "", domain_id: int = 0,
                 network_interface: str | None = None) -> None:
        super().__init__(topic, PoseStamped_, frame_id=frame_id, domain_id=domain_id,
                         network_interface=network_interface)

    def _to_array(self, m: PoseStamped_, stamp: float) -> np.ndarray:
        return pose_array(m, self.frame_id)


class DdsPathSource(_StampedSource):
    """Waypoints from a `nav_msgs/Path` topic (a global planner, e.g. Nav2's `/plan`): `read() -> ((x, y) waypoints
    [N, 2], receipt stamp) | None`. A path with no poses, a non-finite position, more than `max_points` poses, or
    (with `frame_id`) another header frame is rejected and counted: the previous path stays. The poses' own
    headers and orientations are not read."""

    def __init__(self, topic: str = "/plan", *, frame_id: str = "", max_points: int = 10000, domain_id: int = 0,
                 network_interface: str | None = None) -> None:
        if not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"DdsPathSource: max_points: expected an integer >= 1, got {max_points!r}")
        self.max_points = max_points
        super().__init__(topic, Path_, frame_id=frame_id, domain_id=domain_id, network_interface=network_interface)

    def _to_array(self, m: Path_, stamp: float) -> np.ndarray:
        return path_waypoints(m, self.frame_id, self.max_points)


class DdsGridSource(_StampedSource):
    """An occupancy grid from a `nav_msgs/OccupancyGrid` topic (a map server's `/map`, a local costmap): `read() ->
    (OccupancyGrid, receipt stamp) | None`, a cell occupied where its value is >= `occupied_threshold` (percent)
    or unknown (-1, as outside a map). A grid whose data does not fill width x height, with a resolution <= 0, a
    non-finite or rotated origin, or (with `frame_id`) another header frame is rejected and counted. The reader is
    best effort and volatile (it matches any publisher): a map latched once before it started (a map server's
    transient-local /map) does not reach it; costmaps, republished as they update, do."""

    def __init__(self, topic: str = "/map", *, frame_id: str = "", occupied_threshold: int = 50, domain_id: int = 0,
                 network_interface: str | None = None) -> None:
        if not 0 < occupied_threshold <= 100:
            raise ValueError(f"DdsGridSource: occupied_threshold: expected 1..100 (percent), got {occupied_threshold}")
        self.occupied_threshold = occupied_threshold
        super().__init__(topic, OccupancyGrid_, frame_id=frame_id, domain_id=domain_id,
                         network_interface=network_interface)

    def _to_array(self, m: OccupancyGrid_, stamp: float) -> OccupancyGrid:
        return occupancy_grid(m, self.frame_id, self.occupied_threshold)

    def read(self) -> tuple[OccupancyGrid, float] | None:
        latest = self._reader.latest()
        return latest  # an OccupancyGrid is not changed by its readers


class DdsClearanceSource(DdsGridSource):
    """Overhead clearance from a `nav_msgs/OccupancyGrid` topic whose cells hold it in cm (`clearance_grid`):
    `read() -> (ClearanceGrid, receipt stamp) | None`; malformed grids are rejected as by DdsGridSource."""

    def _to_array(self, m: OccupancyGrid_, stamp: float) -> ClearanceGrid:
        return clearance_grid(m, self.frame_id)


# Message -> value, for the DDS sources above and the rclpy node alike (rclpy messages have the same fields). Each
# raises ValueError naming what is wrong; with `frame_id`, a sample in another header frame is wrong.
def _check_frame(m: Any, frame_id: str) -> None:
    if frame_id and m.header.frame_id != frame_id:
        raise ValueError(f"{_type_name(m)} in frame {m.header.frame_id!r}, expected {frame_id!r}")


def _type_name(m: Any) -> str:
    return type(m).__name__.rstrip("_") + "_"  # PoseStamped (rclpy) and PoseStamped_ (DDS) read alike


def pose_array(m: Any, frame_id: str = "") -> np.ndarray:
    """geometry_msgs/PoseStamped -> (x, y, z, qw, qx, qy, qz), the quaternion normalized."""
    _check_frame(m, frame_id)
    p, q = m.pose.position, m.pose.orientation
    pose = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z])
    norm = np.linalg.norm(pose[3:])
    if not np.all(np.isfinite(pose)) or not norm > 1e-6:
        raise ValueError(f"PoseStamped_ pose {pose.tolist()} is not finite or has a zero quaternion")
    pose[3:] /= norm
    return pose


def path_waypoints(m: Any, frame_id: str = "", max_points: int = 10000) -> np.ndarray:
    """nav_msgs/Path -> (x, y) waypoints [N, 2] (1 <= N <= max_points, finite)."""
    _check_frame(m, frame_id)
    n = len(m.poses)
    if not 0 < n <= max_points:
        raise ValueError(f"Path_ with {n} poses, expected 1 to max_points = {max_points}")
    xy = np.array([(p.pose.position.x, p.pose.position.y) for p in m.poses], dtype=float)
    finite = np.isfinite(xy).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"Path_ pose {i} of {n}: position (x, y) = {xy[i].tolist()} is not finite")
    return xy


def occupancy_grid(m: Any, frame_id: str = "", occupied_threshold: int = 50) -> OccupancyGrid:
    """nav_msgs/OccupancyGrid -> OccupancyGrid: occupied where the value is >= occupied_threshold or unknown (-1)."""
    _check_frame(m, frame_id)
    info = m.info
    if not (info.width > 0 and info.height > 0 and len(m.data) == info.width * info.height):
        raise ValueError(f"OccupancyGrid_ data has {len(m.data)} cells, info says {info.width} x {info.height}")
    o, q = info.origin.position, info.origin.orientation
    if not (math.isfinite(info.resolution) and info.resolution > 0 and math.isfinite(o.x) and math.isfinite(o.y)):
        raise ValueError(f"OccupancyGrid_ resolution {info.resolution} or origin ({o.x}, {o.y}) is not valid")
    if abs(q.x) + abs(q.y) + abs(q.z) > 1e-6:
        raise ValueError("OccupancyGrid_ origin is rotated: only grids aligned with their frame are supported")
    data = np.asarray(m.data, dtype=np.int8).reshape(info.height, info.width)
    return OccupancyGrid((data >= occupied_threshold) | (data < 0), float(info.resolution), (o.x, o.y))


CLEARANCE_OPEN_CM = 127  # a clearance grid's cell value for "nothing overhead" (as is -1, unknown)


def clearance_grid(m: Any, frame_id: str = "") -> ClearanceGrid:
    """nav_msgs/OccupancyGrid of overhead clearance -> ClearanceGrid: each cell the clearance in cm (0..126),
    127 or -1 (unknown) nothing overhead (inf); other negative values are rejected."""
    occupancy = occupancy_grid(m, frame_id)  # the same checks of size, resolution, origin and frame
    data = np.asarray(m.data, dtype=np.int8).reshape(occupancy.shape).astype(np.int16)
    if (data < -1).any():
        raise ValueError(f"OccupancyGrid_ clearance cells must be 0..{CLEARANCE_OPEN_CM} cm or -1, got "
                         f"{int(data.min())}")
    clearance = np.where((data < 0) | (data >= CLEARANCE_OPEN_CM), np.inf, data / 100.0)
    return ClearanceGrid(clearance, occupancy.resolution, occupancy.origin)


def _twist_to_array(m: Twist_, stamp: float) -> np.ndarray:
    v = np.array([m.linear.x, m.linear.y, m.angular.z])
    if not np.all(np.isfinite(v)):
        raise ValueError(f"Twist_ (linear.x, linear.y, angular.z) = {v.tolist()} is not finite")
    return v
