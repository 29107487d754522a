"""The ROS 2 deploy node (rclpy): a thin adapter over the tested deploy runtime.

    ros2 launch robolearn deploy.launch.py robot:=go2 policy:=/path/to/bundle
    ros2 run robolearn robolearn_deploy --ros-args -p robot:=go2 -p policy:=go2-flat

In:  joint states (`sensor_msgs/JointState`, mapped by name), an optional IMU (`sensor_msgs/Imu`),
     `/cmd_vel` (`geometry_msgs/Twist`; zeroed when older than `cmd_vel_timeout`); for a path follower (go2-nav)
     the base pose, map, and a path (`nav_msgs/Path`, Nav2's `/plan`) or goals (`robolearn.ros.navigation`).
Out: ros2_control position targets, `std_msgs/Float64MultiArray` on `/<controller>/commands`
     (forward_command_controller) or a one-point `trajectory_msgs/JointTrajectory`; `~/status` (String, 2 Hz).
Services (`std_srvs/Trigger`): `~/stand`, `~/run`, `~/stop`, `~/estop`, `~/reset`.
Topics and rates come from the hardware profile; the parameters `robot`, `policy`, `auto_stand`,
`cmd_vel_timeout` from the launch file. The control loop runs in its own thread at the profile's rate; the
ROS executor only moves messages. Everything that decides anything (safety, state machine, joint mapping)
is in robolearn.deploy and robolearn.ros.joint_states, which are tested without ROS.

rclpy is not on PyPI: this module imports it only when the node starts, and says so if it is missing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from robolearn.deploy.interface import JointCommand, RobotInterface, RobotState
from robolearn.deploy.profile import HardwareProfile
from robolearn.errors import RobolearnError
from robolearn.ros.joint_states import JointStateAssembler, position_targets

__all__ = ["RclpyRobot", "main"]

SERVICES = ("stand", "run", "stop", "estop", "reset")


def import_rclpy():
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise RobolearnError("rclpy is not importable: source your ROS 2 installation (e.g. "
                             "`source /opt/ros/jazzy/setup.bash`) before starting the node; without ROS use "
                             "`robolearn deploy --transport dds`") from None
    import rclpy

    return rclpy


class RclpyRobot(RobotInterface):
    """RobotInterface over rclpy subscriptions/publishers created on `node`. Position-only (ros2_control targets)."""

    position_only = True

    def __init__(self, node, profile: HardwareProfile) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        ros = profile.ros2
        self.node = node
        self.joint_names = list(profile.joint_names)
        self.joints = JointStateAssembler(self.joint_names, ros.joint_states_topic)
        self.control_dt = 1.0 / profile.control_hz
        self._imu: tuple[np.ndarray, np.ndarray] | None = None
        self.dropped = 0
        node.create_subscription(JointState, ros.joint_states_topic, self._on_joint_state, qos_profile_sensor_data)
        if ros.imu_topic:
            node.create_subscription(Imu, ros.imu_topic, self._on_imu, qos_profile_sensor_data)
        self.interface = ros.command_interface
        if self.interface == "position":
            self._msg_type, topic = Float64MultiArray, ros.command_topic
        else:
            self._msg_type, topic = JointTrajectory, ros.trajectory_topic
        self.publisher = node.create_publisher(self._msg_type, topic, 10)
        self.imu_required = bool(ros.imu_topic)

    def _on_joint_state(self, msg) -> None:
        try:
            self.joints.update(msg.name, msg.position, msg.velocity, msg.effort)
        except ValueError as exc:
            self.dropped += 1
            self.node.get_logger().error(str(exc), throttle_duration_sec=5.0)

    def _on_imu(self, msg) -> None:
        o, w = msg.orientation, msg.angular_velocity
        self._imu = (np.array([o.w, o.x, o.y, o.z]), np.array([w.x, w.y, w.z]))

    def read(self) -> RobotState | None:
        state = self.joints.state()
        if state is not None and self.imu_required:
            if self._imu is None:
                return None
            state.quat, state.gyro = self._imu
        return state

    def write(self, cmd: JointCommand) -> None:
        target = position_targets(cmd, self.joints.measured_q())
        if target is None:
            return
        if self.interface == "position":
            self.publisher.publish(self._msg_type(data=target.tolist()))
            return
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectoryPoint

        nanos = int(self.control_dt * 2e9)  # reach the target in two control periods
        point = JointTrajectoryPoint(positions=target.tolist(),
                                     time_from_start=Duration(sec=nanos // 10**9, nanosec=nanos % 10**9))
        self.publisher.publish(self._msg_type(joint_names=self.joint_names, points=[point]))


def run_node(args: list[str] | None) -> None:
    """Start the deploy node with ROS arguments (`--ros-args -p robot:=go2 -p policy:=...`) and spin it."""
    rclpy = import_rclpy()
    from geometry_msgs.msg import Twist
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from robolearn.deploy.bundle import load_bundle
    from robolearn.deploy.profile import load_profile
    from robolearn.deploy.runtime import DeployRuntime, Mode
    from robolearn.deploy.session import status_line

    rclpy.init(args=args)
    node = Node("robolearn_deploy")
    robot_name = node.declare_parameter("robot", "").value
    policy_path = node.declare_parameter("policy", "").value
    auto_stand = bool(node.declare_parameter("auto_stand", False).value)
    cmd_timeout = float(node.declare_parameter("cmd_vel_timeout", 0.5).value)
    if not robot_name or not policy_path:
        raise RobolearnError("robolearn_deploy needs the parameters robot:=<profile> and policy:=<bundle>")
    profile = load_profile(robot_name)
    bundle = load_bundle(policy_path)
    robot = RclpyRobot(node, profile)
    navigation = None
    if bundle.manifest.navigation is not None:  # a path follower: pose, map, path (Nav2's /plan) or goals
        from robolearn.ros.navigation import rclpy_navigation_link

        navigation = rclpy_navigation_link(node, profile, bundle.manifest.navigation).sources
    runtime = DeployRuntime(bundle, profile, robot, navigation=navigation)
    last_cmd = {"t": 0.0}

    def on_twist(msg) -> None:
        runtime.set_command([msg.linear.x, msg.linear.y, msg.angular.z])
        last_cmd["t"] = time.monotonic()

    node.create_subscription(Twist, profile.ros2.cmd_vel_topic, on_twist, 10)

    def service(action):
        def handle(request, response):
            message = getattr(runtime, action)() or str(runtime.mode)
            response.success = not str(message).startswith(("stand ignored", "run ignored", "reset"))
            response.message = f"{message}; mode {runtime.mode}"
            return response

        return handle

    for action in SERVICES:
        node.create_service(Trigger, f"~/{action}", service(action))
    status = node.create_publisher(String, "~/status", 10)

    def on_status() -> None:
        if last_cmd["t"] and time.monotonic() - last_cmd["t"] > cmd_timeout and np.any(runtime.command):
            runtime.set_command([0.0, 0.0, 0.0])  # a silent teleop source means stop walking, not keep going
        if auto_stand and runtime.mode == Mode.PASSIVE and runtime.last_state is not None and not runtime.trips:
            runtime.stand()
        status.publish(String(data=status_line(runtime)))

    node.create_timer(0.5, on_status)
    stop = threading.Event()
    loop = threading.Thread(target=runtime.spin, kwargs={"stop": stop}, name="robolearn-control", daemon=True)
    loop.start()
    node.get_logger().info(f"deploying {bundle.folder} on {profile.name}: control {profile.control_hz:g} Hz, "
                           f"policy {bundle.manifest.policy_hz:g} Hz; services ~/stand ~/run ~/stop ~/estop ~/reset")
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()  # damp for a moment before the loop ends
        time.sleep(0.3)
        stop.set()
        loop.join(timeout=1.0)
        runtime.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def run_guarded(run: Callable[[list[str] | None], None], args: list[str] | None) -> None:
    """Run a node; a RobolearnError (bad profile, bundle, missing rclpy) is one line on stderr and exit 2."""
    try:
        run(args)
    except RobolearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def main(args: list[str] | None = None) -> None:
    run_guarded(run_node, args)


if __name__ == "__main__":
    main()
