"""Raw-DDS transport: real cyclonedds traffic between processes on loopback (a random domain per test), the wire
types and their names, the Unitree CRC (checked against an independent bit-by-bit implementation of the SDK's
`crc32_core`), and the simulated robot server process."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np
import pytest
from cyclonedds.idl import IdlStruct
from cyclonedds.qos import Policy
from cyclonedds.topic import Topic
from dds_domain import new_domain

from robolearn.deploy.interface import JointCommand
from robolearn.ros import dds_types as T
from robolearn.ros.dds import (
    GO2_JOINT_NAMES,
    DdsTwistSource,
    LatestReader,
    Ros2DdsRobot,
    UnitreeDdsRobot,
    dds_topic,
    loopback_config,
    make_writer,
    participant,
    ros_default_qos,
    sensor_data_qos,
    use_loopback,
)
from robolearn.ros.unitree_crc import crc32_mpeg2, crc32_words, crc_ok, lowcmd_crc, pack_lowcmd, with_crc


@pytest.fixture
def domain() -> int:
    """A DDS domain id of its own (dds_domain.new_domain), so concurrent tests do not hear each other."""
    return new_domain()


def _child(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen, expected: str, timeout: float = 20.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"child did not print {expected!r}: {proc.communicate()[1][-2000:]}")


def _until(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.002)
    return False


def _result(proc: subprocess.Popen, timeout: float = 15.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- types, names


ROS_NAMES = {
    T.Time_: "builtin_interfaces::msg::dds_::Time_", T.Header_: "std_msgs::msg::dds_::Header_",
    T.JointState_: "sensor_msgs::msg::dds_::JointState_", T.Imu_: "sensor_msgs::msg::dds_::Imu_",
    T.Vector3_: "geometry_msgs::msg::dds_::Vector3_", T.Quaternion_: "geometry_msgs::msg::dds_::Quaternion_",
    T.Twist_: "geometry_msgs::msg::dds_::Twist_", T.Float64MultiArray_: "std_msgs::msg::dds_::Float64MultiArray_",
    T.MultiArrayLayout_: "std_msgs::msg::dds_::MultiArrayLayout_",
    T.MultiArrayDimension_: "std_msgs::msg::dds_::MultiArrayDimension_",
    T.LowCmd_: "unitree_go::msg::dds_::LowCmd_", T.LowState_: "unitree_go::msg::dds_::LowState_",
    T.MotorCmd_: "unitree_go::msg::dds_::MotorCmd_", T.MotorState_: "unitree_go::msg::dds_::MotorState_",
    T.BmsCmd_: "unitree_go::msg::dds_::BmsCmd_", T.BmsState_: "unitree_go::msg::dds_::BmsState_",
    T.IMUState_: "unitree_go::msg::dds_::IMUState_",
}


def test_type_names_final_xcdr1_and_ros_field_order(domain: int) -> None:
    dp = participant(domain, "lo")
    for cls, name in ROS_NAMES.items():
        assert T.dds_type_name(cls) == name
        assert cls.__idl_annotations__["extensibility"] == "final", cls
        assert cls().serialize()[:2] == b"\x00\x01", f"{name}: not XCDR1 little-endian"
    for cls in (T.JointState_, T.Imu_, T.Twist_, T.Float64MultiArray_, T.LowCmd_, T.LowState_):
        assert Topic(dp, f"rt/types_{cls.__name__}", cls).get_type_name() == ROS_NAMES[cls]
    # field order = the .msg definitions
    assert list(T.JointState_.__dataclass_fields__) == ["header", "name", "position", "velocity", "effort"]
    assert list(T.Imu_.__dataclass_fields__) == [
        "header", "orientation", "orientation_covariance", "angular_velocity", "angular_velocity_covariance",
        "linear_acceleration", "linear_acceleration_covariance"]
    assert list(T.Quaternion_.__dataclass_fields__) == ["x", "y", "z", "w"] and T.Quaternion_().w == 1.0
    assert list(T.MultiArrayDimension_.__dataclass_fields__) == ["label", "size", "stride"]
    # Imu_: 4-byte header, Header_ (8 + 4-byte length + "\0"), 3 x (doubles + 9 covariances) = 316 bytes
    assert len(T.Imu_().serialize()) == 4 + 8 + 5 + 3 + 8 * (4 + 9 + 3 + 9 + 3 + 9)
    assert len(T.LowCmd_().motor_cmd) == 20 and len(T.LowState_().motor_state) == 20
    assert T.Time_.from_seconds(12.25) == T.Time_(sec=12, nanosec=250_000_000)
    writer = make_writer(dp, "rt/types_writer", T.JointState_)
    assert Policy.DataRepresentation(use_cdrv0_representation=True) in writer.get_qos()


def test_topic_names_qos_and_loopback_config() -> None:
    assert dds_topic("/joint_states") == "rt/joint_states"
    assert dds_topic("/forward_position_controller/commands") == "rt/forward_position_controller/commands"
    assert dds_topic("cmd_vel") == "rt/cmd_vel" and dds_topic("rt/lowcmd") == "rt/lowcmd"
    for bad in ("", "/", "//x", "/x/", "/x y", "/1abc"):
        with pytest.raises(ValueError, match="expected a ROS name"):
            dds_topic(bad)
    ros, sensor = ros_default_qos(), sensor_data_qos()
    assert Policy.History.KeepLast(10) in ros and Policy.Durability.Volatile in ros
    assert isinstance(ros[Policy.Reliability], Policy.Reliability.Reliable)
    assert Policy.History.KeepLast(5) in sensor and Policy.Reliability.BestEffort in sensor
    cfg = loopback_config(7)
    for part in ('<Domain id="7">', '<NetworkInterface name="lo"/>', "<AllowMulticast>false</AllowMulticast>",
                 '<Peer address="127.0.0.1"/>'):
        assert part in cfg
    with use_loopback() as uri:
        assert os.environ["CYCLONEDDS_URI"] == uri and 'id="any"' in uri
    with pytest.raises(ValueError, match="domain id"):
        loopback_config(300)


# ------------------------------------------------------------------------------------------- CRC and layouts


def _crc32_core_reference(words: list[int]) -> int:
    """unitree_sdk2's crc32_core, bit by bit: MSB first over 32-bit words, poly 0x04C11DB7, init 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    for data in words:
        for bit in range(31, -1, -1):
            top = crc & 0x80000000
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
            if (data >> bit) & 1:
                crc ^= 0x04C11DB7
    return crc


def _f32(rng: random.Random) -> float:
    return struct.unpack("<f", struct.pack("<f", rng.uniform(-50, 50)))[0]


def _random_lowcmd(rng: random.Random) -> T.LowCmd_:
    u = rng.getrandbits
    return T.LowCmd_(
        head=[u(8), u(8)], level_flag=u(8), frame_reserve=u(8), sn=[u(32), u(32)], version=[u(32), u(32)],
        bandwidth=u(16), motor_cmd=[T.MotorCmd_(u(8), *(_f32(rng) for _ in range(5)), [u(32) for _ in range(3)])
                                    for _ in range(20)],
        bms_cmd=T.BmsCmd_(u(8), [u(8) for _ in range(3)]), wireless_remote=[u(8) for _ in range(40)],
        led=[u(8) for _ in range(12)], fan=[u(8), u(8)], gpio=u(8), reserve=u(32), crc=u(32))


def _random_lowstate(rng: random.Random) -> T.LowState_:
    u = rng.getrandbits

    def s16() -> int:
        return rng.randrange(-32768, 32768)

    return T.LowState_(
        head=[u(8), u(8)], level_flag=u(8), frame_reserve=u(8), sn=[u(32), u(32)], version=[u(32), u(32)],
        bandwidth=u(16),
        imu_state=T.IMUState_(*([_f32(rng) for _ in range(k)] for k in (4, 3, 3, 3)), u(8)),
        motor_state=[T.MotorState_(u(8), *(_f32(rng) for _ in range(7)), u(8), u(32), [u(32), u(32)])
                     for _ in range(20)],
        bms_state=T.BmsState_(u(8), u(8), u(8), u(8), rng.randrange(-2**31, 2**31), u(16), [u(8), u(8)],
                              [u(8), u(8)], [u(16) for _ in range(15)]),
        foot_force=[s16() for _ in range(4)], foot_force_est=[s16() for _ in range(4)], tick=u(32),
        wireless_remote=[u(8) for _ in range(40)], bit_flag=u(8), adc_reel=_f32(rng), temperature_ntc1=u(8),
        temperature_ntc2=u(8), power_v=_f32(rng), power_a=_f32(rng), fan_frequency=[u(16) for _ in range(4)],
        reserve=u(32), crc=u(32))


def test_crc_check_value_sdk_reference_and_sizes() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # CRC-32/MPEG-2 check value
    # C struct sizes of unitree_sdk2's unitree_go::msg::dds_::LowCmd_ / LowState_
    assert T.LOWCMD_C_LAYOUT.size == 812 and T.LOWSTATE_C_LAYOUT.size == 1180
    rng = random.Random(7)
    for make, values, layout in ((_random_lowcmd, T.lowcmd_values, T.LOWCMD_C_LAYOUT),
                                 (_random_lowstate, T.lowstate_values, T.LOWSTATE_C_LAYOUT)):
        for _ in range(3):
            msg = make(rng)
            packed = layout.pack(*values(msg))
            words = list(struct.unpack(f"<{len(packed) // 4 - 1}I", packed[:-4]))  # all but the crc word
            assert crc32_words(packed[:-4]) == _crc32_core_reference(words)
            assert not crc_ok(msg)
            assert crc_ok(with_crc(msg)) and msg.crc == _crc32_core_reference(words)
    # the crc covers every motor field; padding and layout: q of motor 0 sits at byte 28 of the C struct
    cmd = with_crc(T.LowCmd_())
    cmd.motor_cmd[19].kd = 1.0
    assert not crc_ok(cmd)
    cmd.motor_cmd[0].q = 1.5
    assert struct.unpack_from("<f", pack_lowcmd(cmd), 24 + 4)[0] == 1.5
    t0 = time.perf_counter()
    for _ in range(500):
        lowcmd_crc(cmd)
    per_msg_us = (time.perf_counter() - t0) / 500 * 1e6
    assert per_msg_us < 500, per_msg_us  # ~15 us here; generous bound for a loaded 2-core machine


def test_fast_codec_matches_cyclonedds_serializer() -> None:
    rng = random.Random(3)
    for make, cls, values in ((_random_lowcmd, T.LowCmd_, T.lowcmd_values),
                              (_random_lowstate, T.LowState_, T.lowstate_values)):
        for _ in range(3):
            msg = make(rng)
            fast = msg.serialize()
            assert fast == IdlStruct.serialize(msg)  # byte-identical to cyclonedds' generic XCDR1 serializer
            assert values(cls.deserialize(fast)) == values(msg)
            assert values(cls.__idl__.deserialize(fast)) == values(msg)
    with pytest.raises(ValueError, match="out of range"):
        T.LowCmd_(level_flag=256).serialize()
    with pytest.raises(ValueError, match="LowCmd_: a field is out of range"):
        with_crc(T.LowCmd_(motor_cmd=[T.MotorCmd_(kp=1e40)] * 20))


# ------------------------------------------------------------------------------- traffic between processes

ROS2_PEER = """
    import json, sys, time
    from robolearn.ros.dds import LatestReader, make_writer, participant
    from robolearn.ros.dds_types import (Float64MultiArray_, Header_, Imu_, JointState_, Quaternion_, Time_,
                                         Twist_, Vector3_)
    dp = participant(int(sys.argv[1]), "lo")
    js = make_writer(dp, "rt/joint_states", JointState_)
    twist = make_writer(dp, "rt/cmd_vel", Twist_)
    imu = make_writer(dp, "rt/imu", Imu_)
    cmds = LatestReader(dp, "rt/forward_position_controller/commands", Float64MultiArray_, lambda m, s: list(m.data))
    print("ready", flush=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and cmds.received < 3:
        # message order (b, c, a) is not the robot's order (a, b, c); a second broadcaster publishes d
        js.write(JointState_(header=Header_(stamp=Time_(sec=12, nanosec=345), frame_id="base"),
                             name=["b_joint", "c_joint", "a_joint"], position=[2.0, 3.0, 1.0],
                             velocity=[20.0, 30.0, 10.0], effort=[-2.0, -3.0, -1.0]))
        js.write(JointState_(name=["d_joint"], position=[4.0], velocity=[40.0], effort=[]))
        imu.write(Imu_(orientation=Quaternion_(x=0.0, y=0.0, z=0.6, w=0.8), angular_velocity=Vector3_(0.1, 0.2, 0.3)))
        twist.write(Twist_(linear=Vector3_(0.5, -0.25, 9.0), angular=Vector3_(7.0, 8.0, 0.75)))
        time.sleep(0.005)
    latest = cmds.latest()
    print(json.dumps({"received": cmds.received, "last": latest[0] if latest else None}), flush=True)
"""


def test_joint_state_and_commands_between_processes(domain: int) -> None:
    peer = _child(ROS2_PEER, domain)
    _wait_line(peer, "ready")
    try:
        dp = participant(domain, "lo")
        by_names: dict[tuple[str, ...], T.JointState_] = {}
        raw = LatestReader(dp, "rt/joint_states", T.JointState_, lambda m, s: by_names.setdefault(tuple(m.name), m))
        robot = Ros2DdsRobot(["a_joint", "b_joint", "c_joint", "d_joint"], imu_topic="/imu", domain_id=domain,
                             network_interface="lo")
        twist = DdsTwistSource("/cmd_vel", domain_id=domain, network_interface="lo")
        assert _until(lambda: len(by_names) == 2 and robot.read() is not None and twist.read() is not None)
        vel, age = twist.read()
        np.testing.assert_array_equal(vel, [0.5, -0.25, 0.75])  # (vx, vy, wz)
        assert 0.0 <= age < 1.0
        twist.close()
        msg = by_names[("b_joint", "c_joint", "a_joint")]
        assert msg.name == ["b_joint", "c_joint", "a_joint"] and msg.header.frame_id == "base"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
        assert msg.position == [2.0, 3.0, 1.0] and msg.velocity == [20.0, 30.0, 10.0]
        assert msg.effort == [-2.0, -3.0, -1.0]
        state = robot.read()
        np.testing.assert_array_equal(state.q, [1.0, 2.0, 3.0, 4.0])  # mapped by name into the robot's order
        np.testing.assert_array_equal(state.dq, [10.0, 20.0, 30.0, 40.0])
        assert state.tau is None  # d_joint's broadcaster publishes no effort
        np.testing.assert_allclose(state.quat, [0.8, 0.0, 0.0, 0.6])  # (w, x, y, z)
        np.testing.assert_allclose(state.gyro, [0.1, 0.2, 0.3])
        assert time.monotonic() - state.stamp < 1.0 and robot.bad_samples == 0
        # kp = 0 on c_joint (Damp) cannot be expressed on a position interface: it holds its measured position
        cmd = JointCommand(q=np.array([0.1, 0.2, 0.3, 0.4]), dq=np.zeros(4), kp=np.array([5.0, 5.0, 0.0, 5.0]),
                           kd=np.ones(4), tau=np.zeros(4))
        assert _until(lambda: robot.write(cmd) or peer.poll() is not None, timeout=10)
        result = _result(peer)
        assert result["received"] >= 3 and result["last"] == [0.1, 0.2, 3.0, 0.4]
        with pytest.raises(ValueError, match="JointCommand.q: non-finite"):
            robot.write(JointCommand(q=np.full(4, np.nan), dq=np.zeros(4), kp=np.ones(4), kd=np.ones(4),
                                     tau=np.zeros(4)))
        robot.close()
        raw.close()
    finally:
        peer.kill()


UNITREE_PEER = """
    import json, sys, time
    from robolearn.ros.dds import LatestReader, make_writer, participant
    from robolearn.ros.dds_types import LowCmd_, LowState_
    from robolearn.ros.unitree_crc import crc_ok, with_crc

    def on_cmd(m, stamp):
        if not crc_ok(m):
            raise ValueError("wrong CRC")
        return {"head": list(m.head), "level_flag": m.level_flag, "mode": [c.mode for c in m.motor_cmd],
                "q": [c.q for c in m.motor_cmd[:12]], "kp": [c.kp for c in m.motor_cmd[:12]],
                "kd": [c.kd for c in m.motor_cmd[:12]], "tau": [c.tau for c in m.motor_cmd[:12]]}

    dp = participant(int(sys.argv[1]), "lo")
    state = make_writer(dp, "rt/lowstate", LowState_)
    cmds = LatestReader(dp, "rt/lowcmd", LowCmd_, on_cmd)
    print("ready", flush=True)
    t0, i = time.monotonic(), 0
    while time.monotonic() - t0 < 10 and (cmds.received < 5 or cmds.rejected < 1):
        m = LowState_(tick=i)
        for k, s in enumerate(m.motor_state[:12]):
            s.q, s.dq, s.tau_est = 0.25 * k, -0.5 * k, 0.125 * k
        m.imu_state.quaternion = [0.8, 0.0, 0.0, 0.6]
        m.imu_state.gyroscope = [0.5, -0.25, 0.125]
        with_crc(m)
        if i % 2:
            m.crc ^= 0x1  # every other state is corrupted: the robot interface must drop it
            m.motor_state[0].q = 99.0
        state.write(m)
        i += 1
        time.sleep(0.002)
    latest = cmds.latest()
    print(json.dumps({"received": cmds.received, "rejected": cmds.rejected, "last": latest and latest[0]}))
"""


def test_unitree_lowcmd_lowstate_between_processes_with_crc(domain: int) -> None:
    peer = _child(UNITREE_PEER, domain)
    _wait_line(peer, "ready")
    try:
        robot = UnitreeDdsRobot(GO2_JOINT_NAMES, domain_id=domain, network_interface="lo")
        assert _until(lambda: robot.read() is not None and robot.bad_crc >= 2)
        state = robot.read()
        k = np.arange(12)
        np.testing.assert_array_equal(state.q, 0.25 * k)  # never the corrupted q = 99
        np.testing.assert_array_equal(state.dq, -0.5 * k)
        np.testing.assert_array_equal(state.tau, 0.125 * k)
        np.testing.assert_allclose(state.quat, [0.8, 0.0, 0.0, 0.6], rtol=1e-6)  # float32 on the wire
        np.testing.assert_array_equal(state.gyro, [0.5, -0.25, 0.125])
        assert robot.received >= 1
        cmd = JointCommand(q=0.5 * k, dq=np.zeros(12), kp=np.full(12, 20.0), kd=np.full(12, 0.5), tau=0.25 * k)
        bad = make_writer(participant(domain, "lo"), "rt/lowcmd", T.LowCmd_)
        corrupt = with_crc(T.LowCmd_())
        corrupt.crc ^= 0xFFFF

        def send() -> bool:
            robot.write(cmd)
            bad.write(corrupt)
            return peer.poll() is not None
        assert _until(send, timeout=10)
        result = _result(peer)
        assert result["received"] >= 5 and result["rejected"] >= 1
        last = result["last"]
        assert last["head"] == [0xFE, 0xEF] and last["level_flag"] == 0xFF
        assert last["mode"] == [1] * 12 + [0] * 8
        np.testing.assert_allclose(last["q"], 0.5 * k)
        np.testing.assert_allclose(last["kp"], 20.0)
        np.testing.assert_allclose(last["kd"], 0.5)
        np.testing.assert_allclose(last["tau"], 0.25 * k)
        with pytest.raises(ValueError, match=r"JointCommand.kp: expected shape \(12,\)"):
            robot.write(JointCommand(q=np.zeros(12), dq=np.zeros(12), kp=np.zeros(3), kd=np.zeros(12),
                                     tau=np.zeros(12)))
        robot.close()
    finally:
        peer.kill()


# ---------------------------------------------------------------------------------------- sim robot server


@pytest.mark.parametrize("protocol", ["unitree", "ros2"])
def test_sim_server_publishes_applies_and_stops_on_sigterm(domain: int, protocol: str) -> None:
    server = subprocess.Popen([sys.executable, "-m", "robolearn.ros.dds_sim_server", "--robot", "go2", "--protocol",
                               protocol, "--rate", "500", "--domain-id", str(domain)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(server, "ready", timeout=30)
        if protocol == "unitree":
            robot = UnitreeDdsRobot(GO2_JOINT_NAMES, domain_id=domain, network_interface="lo")
        else:
            robot = Ros2DdsRobot(GO2_JOINT_NAMES, imu_topic="/imu/data", domain_id=domain, network_interface="lo")
        t0 = time.monotonic()
        assert _until(lambda: robot.read() is not None, timeout=5)
        assert time.monotonic() - t0 < 2.0
        n0 = robot.received
        time.sleep(0.5)
        assert robot.received - n0 > 50  # 250 expected at 500 Hz; slack for a loaded 2-core machine
        state = robot.read()
        assert state.q.shape == (12,) and np.all(np.isfinite(state.q)) and state.quat is not None
        q_target = state.q + np.where(np.arange(12) % 3 == 0, 0.0, 0.2)
        cmd = JointCommand(q=q_target, dq=np.zeros(12), kp=np.full(12, 20.0), kd=np.full(12, 0.5), tau=np.zeros(12))
        start = robot.read().q.copy()
        assert _until(lambda: robot.write(cmd) or np.abs(robot.read().q - start).max() > 0.05, timeout=5)
        if protocol == "unitree":
            bad = make_writer(participant(domain, "lo"), "rt/lowcmd", T.LowCmd_)
            corrupt = with_crc(T.LowCmd_())
            corrupt.crc ^= 1
            for _ in range(20):
                bad.write(corrupt)
                time.sleep(0.005)
        robot.close()
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=10)
        assert server.returncode == 0, err[-2000:]
        counters = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
        assert int(counters["commands"]) > 0 and int(counters["steps"]) > 50
        if protocol == "unitree":
            assert int(counters["rejected"]) >= 1  # wrong CRC: counted, not applied
    finally:
        server.kill()


POSE_PEER = """
    import sys, time
    from robolearn.ros.dds import make_writer, participant
    from robolearn.ros.dds_types import Header_, Point_, Pose_, PoseStamped_, Quaternion_
    dp = participant(int(sys.argv[1]), "lo")
    w = make_writer(dp, "rt/block_pose", PoseStamped_)
    print("ready", flush=True)
    q = Quaternion_(x=0.0, y=0.0, z=0.6, w=0.8)
    for i in range(400):
        frame = "camera" if i % 2 else "panda_link0"  # every other sample in the wrong frame
        pose = Pose_(position=Point_(0.5, -0.1, 0.025), orientation=q)
        w.write(PoseStamped_(header=Header_(frame_id=frame), pose=pose))
        w.write(PoseStamped_(header=Header_(frame_id="panda_link0"),
                             pose=Pose_(position=Point_(float("nan"), 0.0, 0.0), orientation=q)))
        time.sleep(0.005)
"""


def test_object_pose_source_reads_pose_stamped_and_rejects_bad_samples(domain: int) -> None:
    """A tracker in another process publishes geometry_msgs/PoseStamped: the runtime's object source gets
    (x, y, z, qw, qx, qy, qz) in the base frame; NaN poses and poses in another frame are rejected."""
    from robolearn.ros.dds import DdsPoseSource

    source = DdsPoseSource("/block_pose", frame_id="panda_link0", domain_id=domain, network_interface="lo")
    peer = _child(POSE_PEER, domain)
    _wait_line(peer, "ready")
    try:
        assert _until(lambda: source.read() is not None and source.rejected > 4)
        pose, stamp = source.read()
        np.testing.assert_allclose(pose, [0.5, -0.1, 0.025, 0.8, 0.0, 0.0, 0.6])
        assert time.monotonic() - stamp < 1.0
        assert source.received > 0
    finally:
        peer.kill()
        source.close()


PATH_PEER = """
    import sys, time
    from robolearn.ros.dds import make_writer, participant
    from robolearn.ros.dds_types import Header_, Path_, Point_, Pose_, PoseStamped_

    def path(frame, *xy):
        poses = [PoseStamped_(header=Header_(frame_id=frame), pose=Pose_(position=Point_(x, y, 0.0))) for x, y in xy]
        return Path_(header=Header_(frame_id=frame), poses=poses)

    dp = participant(int(sys.argv[1]), "lo")
    w = make_writer(dp, "rt/plan", Path_)
    print("ready", flush=True)
    good = path("odom", (0.0, 0.0), (1.5, 0.25), (3.0, -1.0))
    bad = [path("odom"), path("odom", (0.0, 0.0), (float("nan"), 1.0)), path("map", (0.0, 0.0), (1.0, 1.0)),
           path("odom", *((0.1 * i, 0.0) for i in range(4)))]  # empty, NaN, another frame, over max_points
    for i in range(400):
        w.write(good)
        for m in bad:  # after the good one: if one were accepted, it would be the latest
            w.write(m)
        time.sleep(0.005)
"""


def test_path_source_reads_nav_msgs_path_and_rejects_bad_samples(domain: int) -> None:
    """A planner in another process publishes nav_msgs/Path: the path source gets the (x, y) waypoints in the
    expected frame; empty paths, NaN positions, another frame and too many poses are rejected and counted."""
    from robolearn.ros.dds import DdsPathSource

    assert T.dds_type_name(T.Path_) == "nav_msgs::msg::dds_::Path_"
    assert T.Path_.__idl_annotations__["extensibility"] == "final"
    source = DdsPathSource("/plan", frame_id="odom", max_points=3, domain_id=domain, network_interface="lo")
    peer = _child(PATH_PEER, domain)
    _wait_line(peer, "ready")
    try:
        assert _until(lambda: source.read() is not None and source.rejected >= 12)
        waypoints, stamp = source.read()
        np.testing.assert_array_equal(waypoints, [[0.0, 0.0], [1.5, 0.25], [3.0, -1.0]])
        assert waypoints.shape == (3, 2) and time.monotonic() - stamp < 1.0
        assert source.received > 0
        with pytest.raises(ValueError, match="max_points"):
            DdsPathSource("/plan", max_points=0, domain_id=domain, network_interface="lo")
    finally:
        peer.kill()
        source.close()
