"""The ROS 2 teleop node (rclpy): teleoperate a real arm through ros2_control and record demonstrations.

    ros2 launch robolearn teleop.launch.py robot:=panda device:=spacemouse dataset:=/data/panda-demos

In:  joint states (`sensor_msgs/JointState`, mapped by name), an optional camera (`sensor_msgs/Image`, rgb8 or bgr8)
     recorded as `observation.images.camera`; the teleop device is read locally (keyboard, SpaceMouse, gamepad,
     leader arm).
Out: ros2_control position targets (Float64MultiArray on the profile's command topic, or a one-point
     JointTrajectory), the same messages the deploy node sends.
A thin adapter: following the device (IK, safety layer, damping on faults) is `robolearn.teleop.arm_teleop`,
recording is its `record_arm_teleop`, both tested without ROS against the MuJoCo twin.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robolearn.errors import RobolearnError
from robolearn.ros.node import RclpyRobot, import_rclpy, run_guarded

__all__ = ["main"]


def run_teleop_node(args: list[str] | None) -> None:
    rclpy = import_rclpy()
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from robolearn.deploy.profile import load_profile
    from robolearn.teleop.arm_teleop import ArmTeleop, record_arm_teleop
    from robolearn.teleop.devices import make_device

    rclpy.init(args=args)
    node = Node("robolearn_teleop")
    robot_name = node.declare_parameter("robot", "").value
    device_name = node.declare_parameter("device", "spacemouse").value
    device_path = node.declare_parameter("device_path", "").value
    dataset = node.declare_parameter("dataset", "").value
    fps = int(node.declare_parameter("fps", 30).value)
    max_speed = float(node.declare_parameter("max_speed", 0.1).value)
    camera_topic = node.declare_parameter("camera_topic", "").value
    camera_height = int(node.declare_parameter("camera_height", 240).value)
    camera_width = int(node.declare_parameter("camera_width", 320).value)
    if not robot_name:
        raise RobolearnError("robolearn_teleop needs the parameter robot:=<hardware profile>")
    profile = load_profile(robot_name)
    robot = RclpyRobot(node, profile)
    latest: dict[str, tuple[np.ndarray, float] | None] = {"image": None}  # (rgb, receipt time.monotonic())

    def on_image(msg) -> None:
        if msg.encoding not in ("rgb8", "bgr8") or (msg.height, msg.width) != (camera_height, camera_width):
            node.get_logger().error(f"{camera_topic}: expected rgb8/bgr8 {camera_height}x{camera_width}, got "
                                    f"{msg.encoding} {msg.height}x{msg.width}", throttle_duration_sec=5.0)
            return
        image = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
        image = image.reshape(msg.height, msg.width, 3)
        latest["image"] = (image[..., ::-1].copy() if msg.encoding == "bgr8" else image.copy(), time.monotonic())

    if camera_topic:
        node.create_subscription(Image, camera_topic, on_image, qos_profile_sensor_data)
    device = make_device(device_name, **({"path": device_path} if device_path else {}))
    teleop = ArmTeleop(profile, robot, max_speed=max_speed)
    node.get_logger().info(f"teleop {profile.name} with {device_name} at {profile.control_hz:g} Hz"
                           + (f", recording {dataset} at {fps} fps" if dataset else "") + f"; {device.HELP}")
    done = threading.Event()

    def control() -> None:
        try:
            record_arm_teleop(teleop, device, duration=float("inf"), dataset=dataset or None, fps=fps,
                              camera=lambda: latest["image"],
                              camera_shape=(camera_height, camera_width) if camera_topic else None)
        finally:
            done.set()
            rclpy.shutdown()

    threading.Thread(target=control, name="robolearn-teleop", daemon=True).start()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        device.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main(args: list[str] | None = None) -> None:
    run_guarded(run_teleop_node, args)


if __name__ == "__main__":
    main()
