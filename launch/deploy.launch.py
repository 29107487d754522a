"""Deploy a policy bundle on a real robot through ros2_control.

    ros2 launch robolearn deploy.launch.py robot:=go2 policy:=/path/to/bundle [auto_stand:=false]

Then: `ros2 service call /robolearn_deploy/stand std_srvs/srv/Trigger`, `.../run`, `.../stop`, `.../estop`;
walk with `/cmd_vel`. The robot starts in Passive (zero torque) and damps on any fault or stop.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("robot", description="hardware profile: go2, panda, so100 or a YAML path"),
        DeclareLaunchArgument("policy", description="policy bundle folder (robolearn export) or shipped name"),
        DeclareLaunchArgument("auto_stand", default_value="false", description="stand as soon as state arrives"),
        DeclareLaunchArgument("cmd_vel_timeout", default_value="0.5", description="s before a silent /cmd_vel is 0"),
    ]
    deploy = Node(
        package="robolearn",
        executable="robolearn_deploy",
        name="robolearn_deploy",
        output="screen",
        parameters=[{
            "robot": LaunchConfiguration("robot"),
            "policy": LaunchConfiguration("policy"),
            "auto_stand": LaunchConfiguration("auto_stand"),
            "cmd_vel_timeout": LaunchConfiguration("cmd_vel_timeout"),
        }],
    )
    return LaunchDescription([*args, deploy])
