"""Raw-DDS transports failing safe: real cyclonedds traffic on loopback (writers and readers in this process, a
random domain per test), the real deploy runtime on the simulated Go2 for the /cmd_vel timeout.

A stale /cmd_vel becomes a zero command; IMU samples that are not unit quaternions (or carry a non-finite gyro) and
non-finite Twists are dropped and counted; `read()` gives nothing until the IMU has arrived, and a silent IMU makes
the state stale; writing after close() is a clear error; a domain opened twice on different interfaces is a
one-line ConfigError."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from cyclonedds.domain import Domain
from dds_domain import new_domain

from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.interface import JointCommand
from robolearn.deploy.profile import load_profile
from robolearn.deploy.runtime import DeployRuntime
from robolearn.deploy.session import make_robot, run_session
from robolearn.errors import ConfigError
from robolearn.ros import dds_types as T
from robolearn.ros.dds import (
    GO2_JOINT_NAMES,
    DdsDomainError,
    DdsTwistSource,
    Ros2DdsRobot,
    UnitreeDdsRobot,
    loopback_config,
    make_writer,
    participant,
)
from robolearn.ros.unitree_crc import with_crc


@pytest.fixture
def domain() -> int:
    """A DDS domain id of its own above the other tests' range (1-200), so concurrent tests do not hear each other."""
    return new_domain(201, 232)


def _until(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.002)
    return False


def _twist(vx: float, vy: float, wz: float, **other: float) -> T.Twist_:
    return T.Twist_(linear=T.Vector3_(vx, vy, other.get("vz", 0.0)),
                    angular=T.Vector3_(other.get("wx", 0.0), other.get("wy", 0.0), wz))


def _imu(w: float, x: float, y: float, z: float, gyro=(0.1, 0.2, 0.3)) -> T.Imu_:
    return T.Imu_(orientation=T.Quaternion_(x=x, y=y, z=z, w=w), angular_velocity=T.Vector3_(*gyro))


def _rejected_after_writing(write: Callable[[], None], rejected: Callable[[], int]) -> bool:
    """Write a sample until the reader has dropped one more (best-effort readers: resend until it arrives)."""
    before = rejected()
    return _until(lambda: write() or rejected() > before, timeout=5)


def test_stale_cmd_vel_becomes_a_zero_command(domain):
    """/cmd_vel drives the runtime's command while fresh; once the source is silent for longer than the timeout
    the command is zero (stop), not the last velocity."""
    timeout = 0.4
    pub = make_writer(participant(domain, "lo"), "rt/cmd_vel", T.Twist_)
    twist = DdsTwistSource("/cmd_vel", domain_id=domain, network_interface="lo")
    profile = load_profile("go2")
    rt = DeployRuntime(load_bundle("go2-flat"), profile, make_robot(profile, "sim"))
    publishing = threading.Event()
    publishing.set()

    def publisher() -> None:
        while publishing.is_set():
            pub.write(_twist(0.4, -0.2, 0.3))
            time.sleep(0.01)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    try:
        assert _until(lambda: twist.read() is not None, timeout=5)
        run_session(rt, duration=0.2, auto=False, command_source=twist.read, command_timeout=timeout)
        np.testing.assert_allclose(rt.command, [0.4, -0.2, 0.3])  # fresh: the source drives the command
        publishing.clear()
        thread.join(timeout=2)
        assert _until(lambda: twist.read()[1] > timeout, timeout=5)
        run_session(rt, duration=0.1, auto=False, command_source=twist.read, command_timeout=timeout)
        np.testing.assert_array_equal(rt.command, np.zeros(3))  # stale: stop, not keep walking at 0.4 m/s
        assert twist.read()[0].tolist() == [0.4, -0.2, 0.3]  # the source still reports the old command, aged
    finally:
        publishing.clear()
        rt.close()
        rt.robot.close()
        twist.close()


def test_non_finite_twist_is_dropped_and_the_last_good_command_ages(domain):
    pub = make_writer(participant(domain, "lo"), "rt/cmd_vel", T.Twist_)
    twist = DdsTwistSource("/cmd_vel", domain_id=domain, network_interface="lo")
    try:
        assert twist.read() is None
        assert _until(lambda: pub.write(_twist(0.5, 0.0, -0.25)) or twist.received > 0, timeout=5)
        for bad in (_twist(np.nan, 0.0, 0.0), _twist(0.0, np.inf, 0.0), _twist(0.1, 0.0, -np.inf)):
            assert _rejected_after_writing(lambda b=bad: pub.write(b), lambda: twist.rejected)
            cmd, age = twist.read()
            assert cmd.tolist() == [0.5, 0.0, -0.25] and age >= 0.0  # the bad one never replaces it
        _, age1 = twist.read()
        time.sleep(0.05)
        assert twist.read()[1] > age1  # it ages, so the session's timeout turns it into a stop
    finally:
        twist.close()


def test_ros2_read_waits_for_the_imu_and_drops_bad_imu_samples(domain):
    dp = participant(domain, "lo")
    js, imu = make_writer(dp, "rt/joint_states", T.JointState_), make_writer(dp, "rt/imu", T.Imu_)
    robot = Ros2DdsRobot(["a_joint", "b_joint"], imu_topic="/imu", domain_id=domain, network_interface="lo")

    def joints() -> None:
        js.write(T.JointState_(name=["b_joint", "a_joint"], position=[0.2, 0.1], velocity=[2.0, 1.0], effort=[]))

    try:
        assert _until(lambda: joints() or robot.received >= 3, timeout=5)
        assert robot.missing_joints == [] and robot.joints.state() is not None
        assert robot.read() is None  # every joint is there, the IMU is not: no state without its orientation
        bad = [_imu(0.0, 0.0, 0.0, 0.0),  # all zeros ("orientation unknown")
               _imu(2.0, 0.0, 0.0, 0.0), _imu(0.5, 0.0, 0.0, 0.0), _imu(0.8, 0.0, 0.0, 0.8),  # norms 2, 0.5, 1.13
               _imu(np.nan, 0.0, 0.0, 1.0), _imu(1.0, 0.0, 0.0, 0.0, gyro=(0.0, np.nan, 0.0))]
        for sample in bad:
            assert _rejected_after_writing(lambda s=sample: imu.write(s), lambda: robot.bad_samples)
            assert robot.read() is None
        assert "not a unit quaternion" in robot._imu.last_error or "not finite" in robot._imu.last_error
        assert _until(lambda: imu.write(_imu(0.8 * 1.05, 0.0, 0.0, 0.6 * 1.05)) or robot.read() is not None, 5)
        state = robot.read()
        np.testing.assert_allclose(state.quat, [0.8, 0.0, 0.0, 0.6])  # normalised (w, x, y, z)
        np.testing.assert_allclose(state.gyro, [0.1, 0.2, 0.3])
        np.testing.assert_array_equal(state.q, [0.1, 0.2])  # by name
        # a bad sample after a good one: dropped, the good orientation stays
        assert _rejected_after_writing(lambda: imu.write(_imu(0.0, 0.0, 0.0, 0.0)), lambda: robot.bad_samples)
        np.testing.assert_allclose(robot.read().quat, [0.8, 0.0, 0.0, 0.6])
        # the IMU goes silent while the joints keep coming: the state's stamp is the IMU's, so it goes stale
        time.sleep(0.05)  # let samples still in flight arrive
        imu_stamp = robot._imu.latest()[1]
        n = robot.received
        assert _until(lambda: joints() or robot.received > n + 2, timeout=5)
        assert robot.joints.state().stamp > imu_stamp and robot.read().stamp == robot._imu.latest()[1] == imu_stamp
    finally:
        robot.close()


def test_unitree_state_with_a_non_unit_imu_quaternion_is_dropped(domain):
    pub = make_writer(participant(domain, "lo"), "rt/lowstate", T.LowState_)
    robot = UnitreeDdsRobot(GO2_JOINT_NAMES, domain_id=domain, network_interface="lo")

    def state(quat: list[float]) -> T.LowState_:
        m = T.LowState_()
        m.imu_state.quaternion = quat
        m.motor_state[0].q = 0.5
        return with_crc(m)  # a correct CRC: only the quaternion is wrong

    try:
        for quat in ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [np.nan, 0.0, 0.0, 1.0]):
            assert _rejected_after_writing(lambda q=quat: pub.write(state(q)), lambda: robot.bad_samples)
            assert robot.read() is None
        assert "not a unit quaternion" in robot._state.last_error
        assert _until(lambda: pub.write(state([0.0, 0.6, 0.0, 0.8])) or robot.read() is not None, timeout=5)
        np.testing.assert_allclose(robot.read().quat, [0.0, 0.6, 0.0, 0.8], rtol=1e-6)
        assert robot.read().q[0] == 0.5
    finally:
        robot.close()


def test_write_after_close_is_a_clear_error_and_close_is_idempotent(domain):
    cmd12 = JointCommand(q=np.zeros(12), dq=np.zeros(12), kp=np.full(12, 20.0), kd=np.ones(12), tau=np.zeros(12))
    unitree = UnitreeDdsRobot(GO2_JOINT_NAMES, domain_id=domain, network_interface="lo")
    unitree.write(cmd12)
    ros2 = Ros2DdsRobot(["a_joint", "b_joint"], domain_id=domain, network_interface="lo")
    twist = DdsTwistSource(domain_id=domain, network_interface="lo")
    cmd2 = JointCommand(q=np.zeros(2), dq=np.zeros(2), kp=np.ones(2), kd=np.ones(2), tau=np.zeros(2))
    for robot, cmd, topic in ((unitree, cmd12, "rt/lowcmd"), (ros2, cmd2, "rt/forward_position_controller/commands")):
        robot.close()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=f"{type(robot).__name__}: write on {topic} after close"):
            robot.write(cmd)
        assert time.monotonic() - t0 < 1.0  # an immediate error, not a hang on a deleted writer
        robot.close()  # a second close is harmless
        assert robot.read() is None
    twist.close()
    twist.close()
    assert twist.read() is None
    assert unitree.sent == 1


def test_domain_open_on_another_interface_is_a_one_line_config_error(domain):
    participant(domain, "lo")
    for other in (None, "eth0"):
        with pytest.raises(DdsDomainError) as err:
            participant(domain, other)
        message = str(err.value)
        assert "\n" not in message and isinstance(err.value, ConfigError)
        assert f"DDS domain {domain} is already open on interface 'lo' in this process" in message
        assert ("default interface" if other is None else "interface 'eth0'") in message
    with pytest.raises(DdsDomainError, match="already open on interface 'lo'"):
        Ros2DdsRobot(["a_joint"], domain_id=domain)  # the transports go through the same check
    assert participant(domain, "lo") is participant(domain, "lo")  # the same interface is fine

    # a domain this process opened outside participant(): cyclonedds refuses a second config
    other = new_domain(201, 232)
    held = Domain(other, loopback_config(other))
    with pytest.raises(DdsDomainError, match=f"DDS domain {other} is already open in this process with another "
                                             f"configuration") as err:
        participant(other, "lo")
    assert "\n" not in str(err.value)
    del held

    third = new_domain(201, 232)
    with pytest.raises(DdsDomainError, match="cannot use network interface 'nosuchif0'") as err:
        participant(third, "nosuchif0")
    assert "\n" not in str(err.value)
