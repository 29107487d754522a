"""A simulated robot PROCESS on DDS: rehearse a deployment against the same topics and types as the real robot.

    python -m robolearn.ros.dds_sim_server --robot go2 --protocol unitree --rate 500 [--domain-id 0]

- `--protocol unitree`: publishes `rt/lowstate` (`LowState_`, with CRC) and applies `rt/lowcmd` (`LowCmd_`):
  motor i is joint i of the Go2 motor order (FR, FL, RR, RL); mode 0x01 runs the motor-driver PD, any other mode
  is zero torque. Commands with a wrong CRC are rejected (counted, not applied), as the robot does.
- `--protocol ros2`: publishes `rt/joint_states` (`JointState_`, names in ALPHABETICAL order on purpose, so
  clients must map by name) and `rt/imu` (`Imu_`), and applies `rt/<controller>/commands` (`Float64MultiArray_`,
  position targets in the robot's joint order) with the robot's PD gains, like a ros2_control position interface.
  Until the first command it holds the start pose.

Physics steps in real time at `--rate` (the latest command applies to every step). The process prints `ready`
on stdout once it publishes, and exits cleanly (0) on SIGTERM or SIGINT, printing its counters.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from robolearn.deploy.interface import JointCommand
from robolearn.deploy.profile import load_profile
from robolearn.errors import RobolearnError
from robolearn.ros.dds import LatestReader, dds_topic, make_writer, participant
from robolearn.ros.dds_types import (
    NUM_MOTORS,
    Float64MultiArray_,
    Header_,
    Imu_,
    JointState_,
    LowCmd_,
    LowState_,
    Quaternion_,
    Time_,
    Vector3_,
)
from robolearn.ros.unitree_crc import crc_ok, with_crc
from robolearn.twin.sim_robot import SimRobot

__all__ = ["DdsSimServer", "main"]


def _rpy(quat: np.ndarray) -> list[float]:
    w, x, y, z = quat
    return [math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)),
            math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x)))),
            math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))]


class DdsSimServer:
    """Steps a `SimRobot` (lockstep off) and bridges it to DDS with the Unitree or ros2_control protocol."""

    def __init__(self, robot: str = "go2", protocol: str = "unitree", rate: float = 500.0, *, domain_id: int = 0,
                 network_interface: str | None = "lo", start: str | None = None,
                 controller: str = "forward_position_controller", imu_topic: str | None = None) -> None:
        if protocol not in ("unitree", "ros2"):
            raise ValueError(f"protocol: expected 'unitree' or 'ros2', got {protocol!r}")
        if not 1.0 <= rate <= 5000.0:
            raise ValueError(f"rate: expected 1 to 5000 Hz, got {rate}")
        self.protocol, self.rate, self.dt = protocol, rate, 1.0 / rate
        profile = load_profile(robot)  # the robot's joint order (motor order for Unitree) and start pose
        # ros2: the IMU where the robot's profile says the runtime will read it (dds.imu_topic, else ros2.imu_topic)
        imu_topic = imu_topic or profile.dds.imu_topic or profile.ros2.imu_topic or "/imu"
        self.imu_topic = imu_topic
        self.sim = SimRobot(profile.model, self.dt, joint_names=profile.joint_names, start=start or profile.sim.start,
                            start_pose=profile.sim.start_pose, lockstep=False)
        self.n = len(self.sim.joint_names)
        if protocol == "unitree" and self.n > NUM_MOTORS:
            raise ValueError(f"robot {robot} has {self.n} joints; a LowCmd_ carries {NUM_MOTORS}")
        self.steps = self.commands = self.rejected = self.overruns = 0
        dp = participant(domain_id, network_interface)
        if protocol == "unitree":
            self._cmd_reader = LatestReader(dp, "rt/lowcmd", LowCmd_, self._from_lowcmd)
            self._state_writer = make_writer(dp, "rt/lowstate", LowState_)
            self._lowstate = LowState_()
            self._imu_writer = None
        else:
            self._kp, self._kd = self.sim.kp, self.sim.kd  # the robot's declared gains, like ros2_control PD
            self._cmd_reader = LatestReader(dp, dds_topic(f"/{controller}/commands"), Float64MultiArray_,
                                            self._from_positions)
            self._state_writer = make_writer(dp, "rt/joint_states", JointState_)
            self._imu_writer = make_writer(dp, dds_topic(imu_topic), Imu_) if self.sim.floating_base else None
            self._order = sorted(range(self.n), key=lambda i: self.sim.joint_names[i])
            self._names = [self.sim.joint_names[i] for i in self._order]
            q0 = self.sim.read().q
            self.sim.write(JointCommand(q=q0, dq=np.zeros(self.n), kp=self._kp, kd=self._kd, tau=np.zeros(self.n)))
        self._applied: object | None = None

    # -- commands in --------------------------------------------------------------------------------------
    def _from_lowcmd(self, m: LowCmd_, stamp: float) -> JointCommand:
        if not crc_ok(m):
            raise ValueError(f"wrong CRC {m.crc:#010x}; command rejected")
        on = np.array([c.mode == 0x01 for c in m.motor_cmd[:self.n]], dtype=float)
        motors = m.motor_cmd[:self.n]
        return JointCommand(q=np.array([c.q for c in motors]), dq=np.array([c.dq for c in motors]) * on,
                            kp=np.array([c.kp for c in motors]) * on, kd=np.array([c.kd for c in motors]) * on,
                            tau=np.array([c.tau for c in motors]) * on)

    def _from_positions(self, m: Float64MultiArray_, stamp: float) -> JointCommand:
        if len(m.data) != self.n:
            raise ValueError(f"Float64MultiArray_.data has {len(m.data)} values; expected {self.n} position "
                             f"targets in the order {self.sim.joint_names}")
        q = np.asarray(m.data, dtype=float)
        if not np.all(np.isfinite(q)):
            raise ValueError(f"Float64MultiArray_.data is not finite: {q.tolist()}")
        return JointCommand(q=q, dq=np.zeros(self.n), kp=self._kp, kd=self._kd, tau=np.zeros(self.n))

    # -- state out ----------------------------------------------------------------------------------------
    def _publish(self) -> None:
        s = self.sim.read()
        if self.protocol == "unitree":
            m = self._lowstate
            m.tick = int(self.steps * self.dt * 1000) & 0xFFFFFFFF
            for i, ms in enumerate(m.motor_state[:self.n]):
                ms.mode, ms.q, ms.dq, ms.tau_est = 0x01, float(s.q[i]), float(s.dq[i]), float(s.tau[i])
            if s.quat is not None:
                m.imu_state.quaternion = s.quat.tolist()
                m.imu_state.gyroscope = s.gyro.tolist()
                m.imu_state.rpy = _rpy(s.quat)
            self._state_writer.write(with_crc(m))
            return
        o = self._order
        header = Header_(stamp=Time_.from_seconds(time.time()), frame_id="")
        self._state_writer.write(JointState_(header=header, name=self._names, position=s.q[o].tolist(),
                                             velocity=s.dq[o].tolist(), effort=s.tau[o].tolist()))
        if self._imu_writer is not None and s.quat is not None:
            w, x, y, z = s.quat.tolist()
            self._imu_writer.write(Imu_(header=Header_(stamp=header.stamp, frame_id="imu_link"),
                                        orientation=Quaternion_(x=x, y=y, z=z, w=w),
                                        angular_velocity=Vector3_(*s.gyro.tolist())))

    # -- loop ---------------------------------------------------------------------------------------------
    def step(self) -> None:
        """Apply the latest command, advance physics by one period, publish the state."""
        latest = self._cmd_reader.latest()
        if latest is not None and latest[0] is not self._applied:
            self._applied = latest[0]
            self.sim.write(latest[0])
        self.sim.advance()
        self.steps += 1
        self._publish()

    def run(self, stop: threading.Event, duration: float | None = None,
            on_ready: Callable[[], None] | None = None) -> None:
        """Step in real time until `stop` is set (or `duration` s passed)."""
        self._publish()
        if on_ready is not None:
            on_ready()
        t0 = next_t = time.monotonic()
        while not stop.is_set() and (duration is None or next_t - t0 < duration):
            next_t += self.dt
            self.step()
            delay = next_t - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -10 * self.dt:  # far behind (a stall): do not try to catch up in a burst
                self.overruns += 1
                next_t = time.monotonic()

    @property
    def counters(self) -> dict[str, int]:
        return {"steps": self.steps, "commands": self._cmd_reader.received, "rejected": self._cmd_reader.rejected,
                "overruns": self.overruns}

    def close(self) -> None:
        self._cmd_reader.close()
        for w in (self._state_writer, self._imu_writer):
            if w is not None:
                w.__del__()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robolearn.ros.dds_sim_server",
                                description="Simulated robot process speaking Unitree LowCmd/LowState or "
                                            "ros2_control topics over raw DDS.")
    p.add_argument("--robot", default="go2", help="hardware profile (hardware/<robot>.yaml; default go2)")
    p.add_argument("--protocol", choices=("unitree", "ros2"), default="unitree")
    p.add_argument("--rate", type=float, default=500.0, help="state rate and physics control rate, Hz")
    p.add_argument("--domain-id", type=int, default=0)
    p.add_argument("--network-interface", default="lo",
                   help="interface to bind (lo = loopback only, the default); 'default' = cyclonedds defaults")
    p.add_argument("--start", choices=("lying", "standing"), default=None, help="default: the profile's sim.start")
    p.add_argument("--controller", default="forward_position_controller", help="ros2: commands topic namespace")
    p.add_argument("--imu-topic", default=None,
                   help="ros2: sensor_msgs/Imu topic (default: the profile's dds.imu_topic or ros2.imu_topic)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: SIGTERM)")
    args = p.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = DdsSimServer(args.robot, args.protocol, args.rate, domain_id=args.domain_id,
                              network_interface=None if args.network_interface == "default" else args.network_interface,
                              start=args.start, controller=args.controller, imu_topic=args.imu_topic)
    except (RobolearnError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        server.run(stop, args.duration, on_ready=lambda: print("ready", flush=True))
    finally:
        server.close()
    print(" ".join(f"{k}={v}" for k, v in server.counters.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
