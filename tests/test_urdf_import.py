"""Robot import from example-robot-data URDFs, and the errors a user sees for broken descriptions."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from robolearn.errors import ConfigError, RobotImportError
from robolearn.sim.robots.robot_cfg import load_robot_cfg
from robolearn.sim.robots.urdf_import import (
    CollisionRule,
    UrdfImportOptions,
    load_urdf_spec,
    resolve_urdf_path,
)
from robolearn.sim.scene import build_robot_scene, robot_info

GO2_URDF = "example-robot-data:go2_description/urdf/go2.urdf"


def _mesh_extent(path: Path) -> np.ndarray:
    """Axis-aligned size of an STL mesh, read by MuJoCo itself."""
    spec = mujoco.MjSpec()
    spec.add_mesh(name="m", file=str(path))
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname="m")
    model = spec.compile()
    verts = model.mesh_vert
    return verts.max(axis=0) - verts.min(axis=0)


def test_go2_imports_with_actuators_sites_and_primitives():
    robot = load_robot_cfg("go2")
    model = build_robot_scene(robot, timestep=0.005).compile()
    info = robot_info(model, robot)
    assert model.nq == 19 and model.nv == 18 and model.nu == 12  # free base + 12 joints
    assert info.joint_names[0] == "FL_hip_joint" and len(info.joint_names) == 12
    np.testing.assert_allclose(info.effort_limit, [23.7, 23.7, 45.43] * 4)
    np.testing.assert_allclose(info.kp, 20.0)
    np.testing.assert_allclose(info.kd, 0.5)
    for foot in robot.feet:
        assert model.site(foot).bodyid[0] == model.body(foot.replace("foot", "calf")).id
    types = {model.geom(i).name: model.geom_type[i] for i in range(model.ngeom)}
    feet = [n for n in types if n.endswith("foot_convex")]
    assert len(feet) == 4 and all(types[n] == mujoco.mjtGeom.mjGEOM_SPHERE for n in feet)
    assert not any(types[n] == mujoco.mjtGeom.mjGEOM_MESH for n in types), "no mesh collisions in the sim model"


def test_fitted_foot_sphere_keeps_the_mesh_size():
    urdf = resolve_urdf_path(GO2_URDF)
    extent = _mesh_extent(urdf.parent.parent / "collisions" / "foot_convex.stl")
    model = build_robot_scene(load_robot_cfg("go2"), timestep=0.005).compile()
    radius = model.geom("FL_foot/foot_convex").size[0]
    assert radius == pytest.approx(extent.max() / 2, rel=0.05)
    assert 0.018 < radius < 0.026  # the Go2 foot is a ~2.2 cm radius ball


def test_panda_imports_with_locked_fingers_and_end_effector():
    robot = load_robot_cfg("panda")
    model = build_robot_scene(robot, timestep=0.005).compile()
    assert model.nu == 7 and model.nq == 7
    assert model.site("ee").id >= 0


def test_render_model_adds_visual_meshes_but_keeps_the_joint_layout():
    robot = load_robot_cfg("go2")
    sim = build_robot_scene(robot, timestep=0.005).compile()
    render = build_robot_scene(robot, timestep=0.005, render=True).compile()
    assert render.nq == sim.nq and render.nv == sim.nv and render.nu == sim.nu
    assert render.ngeom > sim.ngeom
    visual = [i for i in range(render.ngeom) if render.geom(i).name.endswith("/visual")]
    assert visual and all(render.geom_contype[i] == 0 and render.geom_conaffinity[i] == 0 for i in visual)


def test_missing_urdf_file_names_the_path(tmp_path):
    with pytest.raises(RobotImportError, match="URDF file not found: .*nothere.urdf"):
        resolve_urdf_path(str(tmp_path / "nothere.urdf"))


def _write_urdf(path: Path, mesh: str) -> Path:
    path.write_text(f"""<robot name="bad">
  <link name="base"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/>
  </inertial><collision><geometry><mesh filename="{mesh}"/></geometry></collision></link>
  <link name="arm"><inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/>
  </inertial></link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="arm"/><axis xyz="0 0 1"/>
  <limit lower="-1" upper="1" effort="5" velocity="3"/></joint>
</robot>""")
    return path


def test_missing_mesh_names_mesh_and_link(tmp_path):
    urdf = _write_urdf(tmp_path / "bad.urdf", "package://nopkg/meshes/base.stl")
    expected = r"bad.urdf: mesh 'package://nopkg/meshes/base.stl' of link 'base' not found"
    with pytest.raises(RobotImportError, match=expected):
        load_urdf_spec(urdf, UrdfImportOptions())


def test_package_uri_resolves_through_an_ancestor_folder(tmp_path):
    src = resolve_urdf_path(GO2_URDF).parent.parent / "collisions" / "foot_convex.stl"
    pkg = tmp_path / "my_robot"
    (pkg / "meshes").mkdir(parents=True)
    (pkg / "meshes" / "foot.stl").write_bytes(src.read_bytes())
    (pkg / "urdf").mkdir()
    urdf = _write_urdf(pkg / "urdf" / "r.urdf", "package://my_robot/meshes/foot.stl")
    spec = load_urdf_spec(urdf, UrdfImportOptions(collision=[CollisionRule("foot", "sphere")]))
    model = spec.compile()
    assert model.nq == 8  # free joint + j1
    assert model.geom_type[0] == mujoco.mjtGeom.mjGEOM_SPHERE


def test_dae_collision_mesh_is_rejected_clearly(tmp_path):
    (tmp_path / "m.dae").write_text("<COLLADA/>")
    urdf = _write_urdf(tmp_path / "r.urdf", "m.dae")
    with pytest.raises(RobotImportError, match=r"is \.dae; MuJoCo reads \.stl, \.obj and \.msh"):
        load_urdf_spec(urdf, UrdfImportOptions())


def test_malformed_urdf_and_unknown_joint(tmp_path):
    bad = tmp_path / "broken.urdf"
    bad.write_text("<robot><link name='a'>")
    with pytest.raises(RobotImportError, match="broken.urdf: not valid XML"):
        load_urdf_spec(bad, UrdfImportOptions())
    urdf = resolve_urdf_path(GO2_URDF)
    with pytest.raises(RobotImportError, match="locked joint 'no_joint' is not in the URDF"):
        load_urdf_spec(urdf, UrdfImportOptions(locked_joints=["no_joint"]))
    with pytest.raises(RobotImportError, match="site 'toe' refers to link 'no_link'"):
        load_urdf_spec(urdf, UrdfImportOptions(sites={"toe": "no_link"}))


def test_unknown_robot_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown robot 'spot'; valid robots: go2, panda"):
        load_robot_cfg("spot")


def test_unknown_collision_shape():
    with pytest.raises(RobotImportError, match="unknown shape 'cone'"):
        CollisionRule("foot", "cone")
