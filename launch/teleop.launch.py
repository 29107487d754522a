"""Teleoperate a real arm through ros2_control and record demonstrations (LeRobot v3 dataset).

    ros2 launch robolearn teleop.launch.py robot:=panda device:=spacemouse dataset:=/data/panda-demos \
        camera_topic:=/camera/color/image_raw

The arm follows the device through IK and the deploy safety layer; any fault damps it. Device keys/buttons save,
discard and re-record episodes (listed in the node's log at start).
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("robot", description="hardware profile of the arm: panda, so100 or a YAML path"),
        DeclareLaunchArgument("device", default_value="spacemouse", description="keyboard | spacemouse | gamepad"),
        DeclareLaunchArgument("device_path", default_value="", description="device node; default: discover"),
        DeclareLaunchArgument("dataset", default_value="", description="dataset folder to record into (empty: none)"),
        DeclareLaunchArgument("fps", default_value="30", description="recording rate"),
        DeclareLaunchArgument("max_speed", default_value="0.1", description="end-effector speed at full input, m/s"),
        DeclareLaunchArgument("camera_topic", default_value="", description="sensor_msgs/Image to record"),
    ]
    teleop = Node(
        package="robolearn",
        executable="robolearn_teleop",
        name="robolearn_teleop",
        output="screen",
        emulate_tty=True,  # the keyboard device needs a terminal
        parameters=[{name: LaunchConfiguration(name) for name in
                     ("robot", "device", "device_path", "dataset", "fps", "max_speed", "camera_topic")}],
    )
    return LaunchDescription([*args, teleop])
