"""The deploy runtime closes its loop over real DDS against a simulated robot in another process: Unitree
LowCmd/LowState with CRC (the Go2's own protocol) and ros2_control topics with ROS 2 wire types. Killing the
robot process stops the state stream: the watchdog damps."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.ros.dds import robot_from_profile


def wait_ready(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"robot server did not start: {proc.communicate()[1][-2000:]}")


@pytest.mark.parametrize("protocol", ["unitree", "ros2"])
def test_runtime_stands_and_runs_the_go2_over_dds_and_damps_when_the_robot_goes_silent(protocol, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    domain = random.randint(1, 200)
    data = merge(to_dict(load_profile("go2")), {
        "stand": {"duration_s": 0.5},
        "dds": {"protocol": protocol, "domain_id": domain, "network_interface": "lo", "imu_topic": "/imu"},
        # Robot process, runtime and DDS threads share 2 cores here: a state can be 100 ms late without the
        # robot being gone. The watchdog's exact timing is tested on the in-process robot (test_deploy.py).
        "safety": {"state_timeout_ms": 250},
    })
    profile = from_dict(HardwareProfile, data, where="test profile")
    server = subprocess.Popen([sys.executable, "-m", "robolearn.ros.dds_sim_server", "--robot", "go2", "--protocol",
                               protocol, "--rate", "500", "--domain-id", str(domain), "--start", "standing"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(server)
        robot = robot_from_profile(profile)
        rt = DeployRuntime(load_bundle("go2-flat"), profile, robot)
        t0 = time.monotonic()
        while rt.last_state is None and time.monotonic() - t0 < 5:
            rt.spin(0.05)
        assert rt.stand() == "stand"
        rt.spin(0.8)
        q = rt.last_state.q[rt.index]
        # The remote robot stands near the default pose (kp-20 position control sags ~0.4 rad under the rear
        # legs; a collapsed Go2 has its calves 1.2 rad away).
        assert np.abs(q - rt.default).max() < 0.5
        assert rt.run() == "run"
        rt.set_command([0.4, 0.0, 0.0])
        rt.spin(1.5)
        assert rt.mode == Mode.RUN, rt.trips
        assert rt.last_state.quat is not None and -rt.last_state.quat[0] < 0  # IMU over DDS: upright-ish quaternion
        assert len(rt.stats.policy_latency) > 20  # 75 at 50 Hz on an idle machine
        server.kill()  # the robot process dies
        server.wait()
        rt.spin(0.5)
        assert rt.mode == Mode.DAMP and "robot state is stale" in rt.trips[-1].reason
        assert any("robot state is stale" in r.message for r in caplog.records)
        rt.close()
        robot.close()
    finally:
        server.kill()
