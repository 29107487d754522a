"""DDS wire types for raw-DDS transport (cyclonedds, no ROS install): ROS 2 messages and Unitree Go2 low-level messages.

Every struct is FINAL (XCDR1 on the wire), as ROS 2 (rmw_cyclonedds / rmw_fastrtps) and the Unitree SDK2 use.
DDS type names follow the ROS 2 convention `pkg::msg::dds_::T_` (`pkg/msg/T` in ROS), and field order and types
are those of the `.msg` definitions:

- ROS 2 (ros2/common_interfaces, rcl_interfaces): `builtin_interfaces/Time`, `std_msgs/Header`,
  `sensor_msgs/JointState`, `geometry_msgs/{Vector3,Quaternion,Twist,Point,Pose,PoseStamped}`, `sensor_msgs/Imu`,
  `std_msgs/{MultiArrayDimension,MultiArrayLayout,Float64MultiArray}`, `nav_msgs/{Path,MapMetaData,OccupancyGrid}`.
- Unitree Go2 (`unitree_go/msg`, as in unitree_sdk2 / unitree_sdk2_python): `MotorCmd`, `MotorState`, `BmsCmd`,
  `BmsState`, `IMUState`, `LowCmd` (20 motor commands), `LowState` (20 motor states).

Field annotations must stay real objects (no `from __future__ import annotations`): cyclonedds reads them.
Hot path (500 Hz): `LowCmd_` and `LowState_` (de)serialize through precompiled `struct` layouts (about 10x faster
than cyclonedds' generic Python serializer, byte-identical XCDR1 little-endian output; anything else falls back to
the generic one). The same flat value order also packs the C struct the Unitree CRC runs over (`unitree_crc`).
Every field has a default, so `LowCmd_()` is a zeroed command with 20 motors and `JointState_()` an empty message.
"""

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import array, float32, float64, int8, int16, int32, sequence, uint8, uint16, uint32

__all__ = [
    "Time_", "Header_", "JointState_", "Vector3_", "Quaternion_", "Imu_", "Twist_", "Point_", "Pose_", "PoseStamped_",
    "Path_", "MapMetaData_", "OccupancyGrid_", "MultiArrayDimension_", "MultiArrayLayout_", "Float64MultiArray_",
    "MotorCmd_", "MotorState_", "BmsCmd_", "BmsState_", "IMUState_", "LowCmd_", "LowState_",
    "NUM_MOTORS", "dds_type_name",
    "LOWCMD_C_LAYOUT", "LOWSTATE_C_LAYOUT", "LOWCMD_CDR_LAYOUT", "LOWSTATE_CDR_LAYOUT",
    "lowcmd_values", "lowstate_values", "lowcmd_from_values", "lowstate_from_values",
]

NUM_MOTORS = 20  # motor slots in unitree_go LowCmd_/LowState_ (a Go2 uses the first 12)


def _zeros(n: int, value: float | int = 0) -> Callable[[], list]:
    """A dataclass default factory: a fresh list of n values."""
    return lambda: [value] * n


def dds_type_name(cls: type[IdlStruct]) -> str:
    """The type name announced on the wire, e.g. `sensor_msgs::msg::dds_::JointState_`."""
    return cls.__idl_typename__.replace(".", "::")


# ----------------------------------------------------------------------------------------------------- ROS 2


@dataclass
@final
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """builtin_interfaces/Time: int32 sec, uint32 nanosec."""

    sec: int32 = 0
    nanosec: uint32 = 0

    @classmethod
    def from_seconds(cls, t: float) -> "Time_":
        sec = int(t // 1)
        return cls(sec=sec, nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9


@dataclass
@final
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """std_msgs/Header: builtin_interfaces/Time stamp, string frame_id."""

    stamp: Time_ = field(default_factory=Time_)
    frame_id: str = ""


@dataclass
@final
class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    """sensor_msgs/JointState: header, string[] name, float64[] position, velocity, effort (each empty or len(name))."""

    header: Header_ = field(default_factory=Header_)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
@final
class Vector3_(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    """geometry_msgs/Vector3: float64 x, y, z."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@final
class Quaternion_(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    """geometry_msgs/Quaternion: float64 x, y, z, w (identity by default, as in ROS). Note the (x, y, z, w) order."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@dataclass
@final
class Imu_(IdlStruct, typename="sensor_msgs::msg::dds_::Imu_"):
    """sensor_msgs/Imu: header, orientation + float64[9] covariance, angular_velocity + covariance,
    linear_acceleration + covariance (row-major 3x3; element 0 = -1 means "no estimate")."""

    header: Header_ = field(default_factory=Header_)
    orientation: Quaternion_ = field(default_factory=Quaternion_)
    orientation_covariance: array[float64, 9] = field(default_factory=_zeros(9, 0.0))
    angular_velocity: Vector3_ = field(default_factory=Vector3_)
    angular_velocity_covariance: array[float64, 9] = field(default_factory=_zeros(9, 0.0))
    linear_acceleration: Vector3_ = field(default_factory=Vector3_)
    linear_acceleration_covariance: array[float64, 9] = field(default_factory=_zeros(9, 0.0))


@dataclass
@final
class Twist_(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    """geometry_msgs/Twist: Vector3 linear, Vector3 angular."""

    linear: Vector3_ = field(default_factory=Vector3_)
    angular: Vector3_ = field(default_factory=Vector3_)


@dataclass
@final
class Point_(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    """geometry_msgs/Point: float64 x, y, z."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@final
class Pose_(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    """geometry_msgs/Pose: Point position, Quaternion orientation."""

    position: Point_ = field(default_factory=Point_)
    orientation: Quaternion_ = field(default_factory=Quaternion_)


@dataclass
@final
class PoseStamped_(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    """geometry_msgs/PoseStamped: Header header, Pose pose (a tracked object, a goal)."""

    header: Header_ = field(default_factory=Header_)
    pose: Pose_ = field(default_factory=Pose_)


@dataclass
@final
class Path_(IdlStruct, typename="nav_msgs::msg::dds_::Path_"):
    """nav_msgs/Path: Header header, PoseStamped[] poses (waypoints, e.g. a global planner's `/plan`)."""

    header: Header_ = field(default_factory=Header_)
    poses: sequence[PoseStamped_] = field(default_factory=list)


@dataclass
@final
class MapMetaData_(IdlStruct, typename="nav_msgs::msg::dds_::MapMetaData_"):
    """nav_msgs/MapMetaData: Time map_load_time, float32 resolution (m/cell), uint32 width, uint32 height (cells),
    Pose origin (the corner of cell (0, 0) in the map's frame)."""

    map_load_time: Time_ = field(default_factory=Time_)
    resolution: float32 = 0.0
    width: uint32 = 0
    height: uint32 = 0
    origin: Pose_ = field(default_factory=Pose_)


@dataclass
@final
class OccupancyGrid_(IdlStruct, typename="nav_msgs::msg::dds_::OccupancyGrid_"):
    """nav_msgs/OccupancyGrid: Header header, MapMetaData info, int8[] data (row-major from the origin, x along a
    row; 0..100 occupancy probability in percent, -1 unknown): a map server's `/map`, a costmap."""

    header: Header_ = field(default_factory=Header_)
    info: MapMetaData_ = field(default_factory=MapMetaData_)
    data: sequence[int8] = field(default_factory=list)


@dataclass
@final
class MultiArrayDimension_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    """std_msgs/MultiArrayDimension: string label, uint32 size, uint32 stride."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
@final
class MultiArrayLayout_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    """std_msgs/MultiArrayLayout: MultiArrayDimension[] dim, uint32 data_offset."""

    dim: sequence[MultiArrayDimension_] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
@final
class Float64MultiArray_(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    """std_msgs/Float64MultiArray: MultiArrayLayout layout, float64[] data (what forward_command_controller takes)."""

    layout: MultiArrayLayout_ = field(default_factory=MultiArrayLayout_)
    data: sequence[float64] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- Unitree Go2


@dataclass
@final
class MotorCmd_(IdlStruct, typename="unitree_go::msg::dds_::MotorCmd_"):
    """unitree_go/MotorCmd: mode (0x01 = servo/FOC, 0x00 = off), q, dq, tau, kp, kd, uint32[3] reserve.

    C layout: 36 bytes (mode, 3 padding bytes, 5 float32, 3 uint32)."""

    mode: uint8 = 0
    q: float32 = 0.0
    dq: float32 = 0.0
    tau: float32 = 0.0
    kp: float32 = 0.0
    kd: float32 = 0.0
    reserve: array[uint32, 3] = field(default_factory=_zeros(3))


@dataclass
@final
class MotorState_(IdlStruct, typename="unitree_go::msg::dds_::MotorState_"):
    """unitree_go/MotorState: mode, q, dq, ddq, tau_est, q_raw, dq_raw, ddq_raw, temperature, lost, uint32[2] reserve.

    C layout: 48 bytes."""

    mode: uint8 = 0
    q: float32 = 0.0
    dq: float32 = 0.0
    ddq: float32 = 0.0
    tau_est: float32 = 0.0
    q_raw: float32 = 0.0
    dq_raw: float32 = 0.0
    ddq_raw: float32 = 0.0
    temperature: uint8 = 0
    lost: uint32 = 0
    reserve: array[uint32, 2] = field(default_factory=_zeros(2))


@dataclass
@final
class BmsCmd_(IdlStruct, typename="unitree_go::msg::dds_::BmsCmd_"):
    """unitree_go/BmsCmd: uint8 off, uint8[3] reserve (4 bytes)."""

    off: uint8 = 0
    reserve: array[uint8, 3] = field(default_factory=_zeros(3))


@dataclass
@final
class BmsState_(IdlStruct, typename="unitree_go::msg::dds_::BmsState_"):
    """unitree_go/BmsState: version_high, version_low, status, soc, int32 current, uint16 cycle, uint8[2] bq_ntc,
    uint8[2] mcu_ntc, uint16[15] cell_vol (C layout: 44 bytes)."""

    version_high: uint8 = 0
    version_low: uint8 = 0
    status: uint8 = 0
    soc: uint8 = 0
    current: int32 = 0
    cycle: uint16 = 0
    bq_ntc: array[uint8, 2] = field(default_factory=_zeros(2))
    mcu_ntc: array[uint8, 2] = field(default_factory=_zeros(2))
    cell_vol: array[uint16, 15] = field(default_factory=_zeros(15))


@dataclass
@final
class IMUState_(IdlStruct, typename="unitree_go::msg::dds_::IMUState_"):
    """unitree_go/IMUState: float32[4] quaternion (w, x, y, z), float32[3] gyroscope (rad/s, body),
    float32[3] accelerometer, float32[3] rpy, uint8 temperature (C layout: 56 bytes)."""

    quaternion: array[float32, 4] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0])
    gyroscope: array[float32, 3] = field(default_factory=_zeros(3, 0.0))
    accelerometer: array[float32, 3] = field(default_factory=_zeros(3, 0.0))
    rpy: array[float32, 3] = field(default_factory=_zeros(3, 0.0))
    temperature: uint8 = 0


@dataclass
@final
class LowCmd_(IdlStruct, typename="unitree_go::msg::dds_::LowCmd_"):
    """unitree_go/LowCmd, sent on `rt/lowcmd`. head = (0xFE, 0xEF), level_flag = 0xFF (low level);
    `crc` = CRC-32/MPEG-2 of the C struct (812 bytes) without its last word (see `unitree_crc`)."""

    head: array[uint8, 2] = field(default_factory=lambda: [0xFE, 0xEF])
    level_flag: uint8 = 0xFF
    frame_reserve: uint8 = 0
    sn: array[uint32, 2] = field(default_factory=_zeros(2))
    version: array[uint32, 2] = field(default_factory=_zeros(2))
    bandwidth: uint16 = 0
    motor_cmd: array[MotorCmd_, NUM_MOTORS] = field(default_factory=lambda: [MotorCmd_() for _ in range(NUM_MOTORS)])
    bms_cmd: BmsCmd_ = field(default_factory=BmsCmd_)
    wireless_remote: array[uint8, 40] = field(default_factory=_zeros(40))
    led: array[uint8, 12] = field(default_factory=_zeros(12))
    fan: array[uint8, 2] = field(default_factory=_zeros(2))
    gpio: uint8 = 0
    reserve: uint32 = 0
    crc: uint32 = 0


@dataclass
@final
class LowState_(IdlStruct, typename="unitree_go::msg::dds_::LowState_"):
    """unitree_go/LowState, received on `rt/lowstate` (C layout: 1180 bytes, last word = crc)."""

    head: array[uint8, 2] = field(default_factory=lambda: [0xFE, 0xEF])
    level_flag: uint8 = 0xFF
    frame_reserve: uint8 = 0
    sn: array[uint32, 2] = field(default_factory=_zeros(2))
    version: array[uint32, 2] = field(default_factory=_zeros(2))
    bandwidth: uint16 = 0
    imu_state: IMUState_ = field(default_factory=IMUState_)
    motor_state: array[MotorState_, NUM_MOTORS] = field(
        default_factory=lambda: [MotorState_() for _ in range(NUM_MOTORS)])
    bms_state: BmsState_ = field(default_factory=BmsState_)
    foot_force: array[int16, 4] = field(default_factory=_zeros(4))
    foot_force_est: array[int16, 4] = field(default_factory=_zeros(4))
    tick: uint32 = 0
    wireless_remote: array[uint8, 40] = field(default_factory=_zeros(40))
    bit_flag: uint8 = 0
    adc_reel: float32 = 0.0
    temperature_ntc1: uint8 = 0
    temperature_ntc2: uint8 = 0
    power_v: float32 = 0.0
    power_a: float32 = 0.0
    fan_frequency: array[uint16, 4] = field(default_factory=_zeros(4))
    reserve: uint32 = 0
    crc: uint32 = 0


# --------------------------------------------------------------------- fixed layouts of LowCmd_ and LowState_
# One flat value order per message, two paddings: the C struct of unitree_sdk2 (what the CRC covers; nested structs
# aligned to 4 with trailing padding) and XCDR1 (each primitive aligned to its own size from the start of the
# body, no struct padding). Verified against the SDK's sizes (812 / 1180 bytes) and cyclonedds' serializer (tests).

_MOTOR_CMD = "5f3I"  # q dq tau kp kd, reserve[3] (after the mode byte and its padding)
_MOTOR_STATE = "7fB3xI2I"  # q dq ddq tau_est q_raw dq_raw ddq_raw, temperature, lost, reserve[2]
_HEADER = "<4B4IH"  # head[2] level_flag frame_reserve, sn[2] version[2], bandwidth
_LOWCMD_TAIL = "4B55B"  # bms_cmd (off, reserve[3]); wireless_remote[40] led[12] fan[2] gpio
_LOWSTATE_TAIL = "4BiH4B15H" "8hI41B3xf2B2x2f4H2I"  # bms_state; foot forces, tick, remote, bit_flag, ... crc

LOWCMD_C_LAYOUT = struct.Struct(_HEADER + "2x" + ("B3x" + _MOTOR_CMD) * NUM_MOTORS + _LOWCMD_TAIL + "x2I")
LOWSTATE_C_LAYOUT = struct.Struct(
    _HEADER + "2x" + "13fB3x" + ("B3x" + _MOTOR_STATE) * NUM_MOTORS + _LOWSTATE_TAIL)
LOWCMD_CDR_LAYOUT = struct.Struct(
    _HEADER + "Bx" + _MOTOR_CMD + ("B3x" + _MOTOR_CMD) * (NUM_MOTORS - 1) + _LOWCMD_TAIL + "x2I")
LOWSTATE_CDR_LAYOUT = struct.Struct(
    _HEADER + "2x13fB" + "B2x" + _MOTOR_STATE + ("B3x" + _MOTOR_STATE) * (NUM_MOTORS - 1) + _LOWSTATE_TAIL)
_XCDR1_LE = b"\x00\x01\x00\x00"  # encapsulation header: CDR little-endian (XCDR1), no options


def lowcmd_values(m: LowCmd_) -> list:
    """The fields of a LowCmd_ in declaration order, flattened (the order both LOWCMD_*_LAYOUT pack)."""
    v = [*m.head, m.level_flag, m.frame_reserve, *m.sn, *m.version, m.bandwidth]
    for c in m.motor_cmd:
        v += (c.mode, c.q, c.dq, c.tau, c.kp, c.kd, *c.reserve)
    b = m.bms_cmd
    v += (b.off, *b.reserve, *m.wireless_remote, *m.led, *m.fan, m.gpio, m.reserve, m.crc)
    return v


def lowcmd_from_values(v: tuple) -> LowCmd_:
    """Inverse of `lowcmd_values`."""
    motors = [MotorCmd_(v[i], v[i + 1], v[i + 2], v[i + 3], v[i + 4], v[i + 5], [v[i + 6], v[i + 7], v[i + 8]])
              for i in range(9, 9 + 9 * NUM_MOTORS, 9)]
    t = 9 + 9 * NUM_MOTORS
    return LowCmd_(head=[v[0], v[1]], level_flag=v[2], frame_reserve=v[3], sn=[v[4], v[5]], version=[v[6], v[7]],
                   bandwidth=v[8], motor_cmd=motors, bms_cmd=BmsCmd_(v[t], list(v[t + 1:t + 4])),
                   wireless_remote=list(v[t + 4:t + 44]), led=list(v[t + 44:t + 56]), fan=list(v[t + 56:t + 58]),
                   gpio=v[t + 58], reserve=v[t + 59], crc=v[t + 60])


def lowstate_values(m: LowState_) -> list:
    """The fields of a LowState_ in declaration order, flattened (the order both LOWSTATE_*_LAYOUT pack)."""
    i = m.imu_state
    v = [*m.head, m.level_flag, m.frame_reserve, *m.sn, *m.version, m.bandwidth,
         *i.quaternion, *i.gyroscope, *i.accelerometer, *i.rpy, i.temperature]
    for s in m.motor_state:
        v += (s.mode, s.q, s.dq, s.ddq, s.tau_est, s.q_raw, s.dq_raw, s.ddq_raw, s.temperature, s.lost, *s.reserve)
    b = m.bms_state
    v += (b.version_high, b.version_low, b.status, b.soc, b.current, b.cycle, *b.bq_ntc, *b.mcu_ntc, *b.cell_vol,
          *m.foot_force, *m.foot_force_est, m.tick, *m.wireless_remote, m.bit_flag, m.adc_reel,
          m.temperature_ntc1, m.temperature_ntc2, m.power_v, m.power_a, *m.fan_frequency, m.reserve, m.crc)
    return v


def lowstate_from_values(v: tuple) -> LowState_:
    """Inverse of `lowstate_values`."""
    imu = IMUState_(list(v[9:13]), list(v[13:16]), list(v[16:19]), list(v[19:22]), v[22])
    motors = [MotorState_(*v[k:k + 10], [v[k + 10], v[k + 11]]) for k in range(23, 23 + 12 * NUM_MOTORS, 12)]
    t = 23 + 12 * NUM_MOTORS
    bms = BmsState_(v[t], v[t + 1], v[t + 2], v[t + 3], v[t + 4], v[t + 5], list(v[t + 6:t + 8]),
                    list(v[t + 8:t + 10]), list(v[t + 10:t + 25]))
    t += 25
    return LowState_(head=[v[0], v[1]], level_flag=v[2], frame_reserve=v[3], sn=[v[4], v[5]], version=[v[6], v[7]],
                     bandwidth=v[8], imu_state=imu, motor_state=motors, bms_state=bms, foot_force=list(v[t:t + 4]),
                     foot_force_est=list(v[t + 4:t + 8]), tick=v[t + 8], wireless_remote=list(v[t + 9:t + 49]),
                     bit_flag=v[t + 49], adc_reel=v[t + 50], temperature_ntc1=v[t + 51], temperature_ntc2=v[t + 52],
                     power_v=v[t + 53], power_a=v[t + 54], fan_frequency=list(v[t + 55:t + 59]), reserve=v[t + 59],
                     crc=v[t + 60])


def _fast_serialize(values: Callable[[IdlStruct], list], layout: struct.Struct,
                    generic: Callable[..., bytes]) -> Callable[..., bytes]:
    """`IdlStruct.serialize` with a fast path for the default call (XCDR1, native little-endian, new buffer)."""

    def serialize(self: IdlStruct, buffer: object = None, endianness: object = None,
                  use_version_2: bool | None = None) -> bytes:
        if buffer is None and endianness is None and not use_version_2:
            try:
                return _XCDR1_LE + layout.pack(*values(self))
            except (struct.error, OverflowError) as e:
                raise ValueError(f"{type(self).__name__}: a field is out of range for its IDL type ({e})") from e
        return generic(self, buffer=buffer, endianness=endianness, use_version_2=use_version_2)
    return serialize


def _fast_deserialize(from_values: Callable[[tuple], IdlStruct], layout: struct.Struct,
                      generic: classmethod) -> classmethod:
    """`IdlStruct.deserialize` with a fast path for XCDR1 little-endian data (what we and the SDKs write)."""

    def deserialize(cls: type, data: bytes, has_header: bool = True, use_version_2: bool | None = None) -> IdlStruct:
        if has_header and not use_version_2 and data[:2] == _XCDR1_LE[:2] and len(data) >= 4 + layout.size:
            return from_values(layout.unpack_from(data, 4))
        return generic.__func__(cls, data, has_header=has_header, use_version_2=use_version_2)
    return classmethod(deserialize)


LowCmd_.serialize = _fast_serialize(lowcmd_values, LOWCMD_CDR_LAYOUT, IdlStruct.serialize)
LowCmd_.deserialize = _fast_deserialize(lowcmd_from_values, LOWCMD_CDR_LAYOUT, IdlStruct.deserialize)
LowState_.serialize = _fast_serialize(lowstate_values, LOWSTATE_CDR_LAYOUT, IdlStruct.serialize)
LowState_.deserialize = _fast_deserialize(lowstate_from_values, LOWSTATE_CDR_LAYOUT, IdlStruct.deserialize)
