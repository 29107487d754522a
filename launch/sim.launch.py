"""Sim2real rehearsal over ROS 2: the MuJoCo twin as a node with ros2_control-like topics, plus the deploy node.

    ros2 launch robolearn sim.launch.py robot:=go2 policy:=go2-flat

Same topics, services and safety layer as deploy.launch.py; only the robot is simulated.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("robot", default_value="go2", description="hardware profile (its simulated twin)"),
        DeclareLaunchArgument("policy", default_value="go2-flat", description="policy bundle folder or name"),
        DeclareLaunchArgument("auto_stand", default_value="true", description="stand as soon as state arrives"),
    ]
    sim = Node(
        package="robolearn",
        executable="robolearn_sim",
        name="robolearn_sim",
        output="screen",
        parameters=[{"robot": LaunchConfiguration("robot")}],
    )
    deploy = Node(
        package="robolearn",
        executable="robolearn_deploy",
        name="robolearn_deploy",
        output="screen",
        parameters=[{
            "robot": LaunchConfiguration("robot"),
            "policy": LaunchConfiguration("policy"),
            "auto_stand": LaunchConfiguration("auto_stand"),
        }],
    )
    return LaunchDescription([*args, sim, deploy])
