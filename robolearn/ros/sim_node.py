"""A simulated robot as a ROS 2 node: the MuJoCo twin behind ros2_control-like topics (sim2real rehearsal).

    ros2 launch robolearn sim.launch.py robot:=go2 policy:=go2-flat

Publishes `sensor_msgs/JointState` (and `sensor_msgs/Imu` for legged robots) at the profile's control rate,
takes position targets (`std_msgs/Float64MultiArray`, robot joint order) on the profile's command topic and
tracks them with the robot's declared PD gains at physics rate, as a ros2_control position interface would.
Physics runs in real time in its own thread. A thin adapter over `SimRobot`; rclpy is imported at start.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robolearn.deploy.interface import JointCommand
from robolearn.errors import RobolearnError
from robolearn.ros.node import import_rclpy, run_guarded

__all__ = ["main"]


def _run(args: list[str] | None) -> None:
    rclpy = import_rclpy()
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray

    from robolearn.deploy.profile import load_profile
    from robolearn.twin.sim_robot import SimRobot

    rclpy.init(args=args)
    node = Node("robolearn_sim")
    robot_name = node.declare_parameter("robot", "").value
    if not robot_name:
        raise RobolearnError("robolearn_sim needs the parameter robot:=<profile>")
    profile = load_profile(robot_name)
    ros = profile.ros2
    sim = SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=profile.joint_names, start=profile.sim.start,
                   start_pose=profile.sim.start_pose, lockstep=False)
    n = len(sim.joint_names)
    joint_pub = node.create_publisher(JointState, ros.joint_states_topic, qos_profile_sensor_data)
    imu_pub = node.create_publisher(Imu, ros.imu_topic, qos_profile_sensor_data) if ros.imu_topic else None

    def on_command(msg) -> None:
        if len(msg.data) != n:
            node.get_logger().error(f"{ros.command_topic}: {len(msg.data)} targets for {n} joints; ignored",
                                    throttle_duration_sec=5.0)
            return
        sim.write(JointCommand(q=np.asarray(msg.data, dtype=float), dq=np.zeros(n), kp=sim.kp, kd=sim.kd,
                               tau=np.zeros(n)))

    node.create_subscription(Float64MultiArray, ros.command_topic, on_command, 10)
    stop = threading.Event()

    def physics() -> None:
        dt, deadline = 1.0 / profile.control_hz, time.perf_counter()
        while not stop.is_set():
            sim.advance()
            state = sim.read()
            stamp = node.get_clock().now().to_msg()
            joint_pub.publish(JointState(header=_header(stamp), name=sim.joint_names, position=state.q.tolist(),
                                         velocity=state.dq.tolist(), effort=state.tau.tolist()))
            if imu_pub is not None and state.quat is not None:
                imu = Imu(header=_header(stamp, "imu"))
                imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z = state.quat.tolist()
                imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = state.gyro.tolist()
                imu_pub.publish(imu)
            deadline += dt
            time.sleep(max(0.0, deadline - time.perf_counter()))

    def _header(stamp, frame: str = "base"):
        from std_msgs.msg import Header

        return Header(stamp=stamp, frame_id=frame)

    thread = threading.Thread(target=physics, name="robolearn-sim", daemon=True)
    thread.start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(timeout=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main(args: list[str] | None = None) -> None:
    run_guarded(_run, args)


if __name__ == "__main__":
    main()
