"""The ROS 2 side that cannot run here (no ROS 2 on these machines): launch files, nodes and package files
are well-formed and consistent; the JointState mapping the nodes use is tested for real."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from robolearn.deploy.interface import JointCommand
from robolearn.ros.joint_states import JointStateAssembler, position_targets

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def launch_nodes(path: Path) -> tuple[set[str], list[str]]:
    """(declared launch arguments, executables of launch_ros Nodes) from the file's AST."""
    tree = ast.parse(path.read_text(), filename=str(path))
    args, executables = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            args.add(node.args[0].value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in node.keywords}
            assert kw["package"].value == "robolearn"
            executables.append(kw["executable"].value)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    return args, executables


@pytest.mark.parametrize(("name", "required_args", "executables"), [
    ("deploy.launch.py", {"robot", "policy", "auto_stand"}, ["robolearn_deploy"]),
    ("sim.launch.py", {"robot", "policy"}, ["robolearn_sim", "robolearn_deploy"]),
    ("teleop.launch.py", {"robot", "device", "dataset", "camera_topic"}, ["robolearn_teleop"]),
])
def test_launch_files_declare_arguments_and_start_installed_executables(name, required_args, executables):
    args, found = launch_nodes(ROOT / "launch" / name)
    assert required_args <= args
    assert found == executables
    for exe in found:
        module, _, func = SCRIPTS[exe].partition(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_package_xml_declares_every_ros_package_the_nodes_import():
    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().findall("exec_depend")}
    ros_packages = {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs", "trajectory_msgs", "nav_msgs",
                    "builtin_interfaces", "launch", "launch_ros"}
    imported = set()
    nodes = [*(ROOT / "robolearn" / "ros").glob("*node.py"), ROOT / "robolearn" / "ros" / "navigation.py"]
    for path in [*nodes, *(ROOT / "launch").glob("*.launch.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                imported |= {n.split(".")[0] for n in names if n and n.split(".")[0] in ros_packages}
    assert imported and imported <= declared, imported - declared


def test_launch_files_are_installed_by_setup_py():
    out = subprocess.run([sys.executable, "-c", "import runpy, setuptools; setuptools.setup = lambda **kw: "
                          "print(kw['data_files']); runpy.run_path('setup.py')"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert "launch/deploy.launch.py" in out.stdout and "launch/sim.launch.py" in out.stdout
    assert "launch/teleop.launch.py" in out.stdout
    assert "hardware/go2.yaml" in out.stdout and "policies/bundles/go2-flat/policy.onnx" in out.stdout


@pytest.mark.parametrize("command", [
    ["-m", "robolearn.ros.node"],
    ["-m", "robolearn.ros.teleop_node"],
    ["-m", "robolearn.cli", "deploy", "--robot", "go2", "--policy", "go2-flat", "--transport", "ros2"],
])
def test_node_without_ros_says_what_to_do(command):
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "rclpy is not importable: source your ROS 2 installation" in out.stderr


def test_joint_states_are_mapped_by_name_across_messages():
    names = ["a", "b", "c"]
    js = JointStateAssembler(names, "/joint_states", missing_joint_timeout=0.0)
    js.update(["c", "x", "a"], [3.0, 9.0, 1.0], [30.0, 90.0, 10.0], [], stamp=1.0)
    assert js.state() is None and js.missing_joints == ["b"]  # b has not arrived
    js.update(["b"], [2.0], [20.0], [0.5], stamp=2.0)
    state = js.state()
    assert state.q.tolist() == [1.0, 2.0, 3.0] and state.dq.tolist() == [10.0, 20.0, 30.0]
    assert state.stamp == 1.0  # the oldest joint: a silent publisher makes the state stale
    assert state.tau is None  # effort not published for every joint
    with pytest.raises(ValueError, match=r"/joint_states: JointState.velocity has 1 values for 2 names"):
        js.update(["a", "b"], [1.0, 2.0], [1.0], [], stamp=3.0)


def test_position_interface_holds_damped_joints():
    cmd = JointCommand(q=np.array([1.0, 2.0]), dq=np.zeros(2), kp=np.array([20.0, 0.0]), kd=np.ones(2),
                       tau=np.zeros(2))
    assert position_targets(cmd, np.array([np.nan, np.nan])) is None
    assert position_targets(cmd, np.array([0.5, 0.7])).tolist() == [1.0, 0.7]
