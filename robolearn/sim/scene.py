"""Build a simulation scene from a robot declaration: imported robot + floor + PD actuators + light."""

from __future__ import annotations

import re
from dataclasses import dataclass

import mujoco
import numpy as np

from robolearn.errors import ConfigError
from robolearn.sim.robots.robot_cfg import RobotCfg, match_joints
from robolearn.sim.robots.urdf_import import UrdfImportOptions, load_urdf_spec, resolve_urdf_path

__all__ = ["RobotInfo", "build_robot_scene", "robot_info"]

FLOOR = "floor"


@dataclass(frozen=True)
class RobotInfo:
    """What tasks need to know about a compiled robot model. Joint order = actuator order = policy order."""

    joint_names: tuple[str, ...]
    default_joint_pos: np.ndarray  # [nu]
    kp: np.ndarray  # [nu]
    kd: np.ndarray  # [nu]
    effort_limit: np.ndarray  # [nu]
    joint_range: np.ndarray  # [nu, 2]
    qpos_adr: np.ndarray  # [nu] indices into qpos
    qvel_adr: np.ndarray  # [nu] indices into qvel
    floating_base: bool


def build_robot_scene(robot: RobotCfg, *, timestep: float, render: bool = False) -> mujoco.MjSpec:
    """An MjSpec with the robot, a floor, one position actuator per joint (PD at physics rate) and a light."""
    urdf = resolve_urdf_path(robot.urdf, relative_to=robot.folder)
    spec = load_urdf_spec(
        urdf,
        UrdfImportOptions(
            floating_base=robot.floating_base,
            base_link=robot.base_link,
            locked_joints=robot.locked_joints,
            collision=robot.collision,
            sites=robot.sites,
            render_meshes=render,
            armature=robot.armature,
            joint_damping=robot.joint_damping,
            frictionloss=robot.frictionloss,
        ),
    )
    spec.modelname = robot.name
    spec.option.timestep = timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    if robot.gravity_compensation:  # MuJoCo applies the cancelling force as a passive force on every body
        for body in spec.bodies:
            if body.name != "world":
                body.gravcomp = 1.0
    # Robot geoms collide with the floor only (never with each other), or with nothing at all.
    robot_contype = 1 if robot.collide_with == "floor" else 0
    for geom in spec.geoms:
        if geom.contype or geom.conaffinity:
            geom.contype, geom.conaffinity = robot_contype, 0
    spec.worldbody.add_geom(
        name=FLOOR, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], contype=1, conaffinity=1,
        rgba=[0.35, 0.42, 0.5, 1.0], material="grid" if render else "",
    )
    if render:
        texture = spec.add_texture(
            name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
            rgb1=[0.45, 0.5, 0.56], rgb2=[0.32, 0.36, 0.42], width=512, height=512,
        )
        material = spec.add_material(name="grid", texrepeat=[8, 8], reflectance=0.0)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = texture.name
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.6, 0.6, 0.6]
        spec.visual.global_.offwidth = 640
        spec.visual.global_.offheight = 480
    spec.worldbody.add_light(pos=[0, 0, 3], dir=[0, 0, -1], castshadow=False)

    joints = [j for j in spec.joints if j.type in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)]
    for joint in joints:
        group = [g for g in robot.actuators if re.fullmatch(g.joints, joint.name)]
        if len(group) != 1:
            found = "no" if not group else "several"
            raise ConfigError(f"{robot.source}: joint {joint.name!r} matches {found} actuator groups")
        g = group[0]
        effort = g.effort_limit if g.effort_limit is not None else float(joint.actfrcrange[1])
        if effort <= 0:
            raise ConfigError(f"{robot.source}: joint {joint.name!r} has no effort limit; set effort_limit")
        act = spec.add_actuator(name=joint.name, target=joint.name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=g.kp, kv=g.kd)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-effort, effort]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
    return spec


def robot_info(model: mujoco.MjModel, robot: RobotCfg) -> RobotInfo:
    names = tuple(model.actuator(i).name for i in range(model.nu))
    joint_ids = [model.joint(n).id for n in names]
    default = np.array(match_joints(robot.default_joint_pos, list(names), f"{robot.source}: default_joint_pos"))
    return RobotInfo(
        joint_names=names,
        default_joint_pos=default,
        kp=model.actuator_gainprm[:, 0].copy(),
        kd=-model.actuator_biasprm[:, 2].copy(),
        effort_limit=model.actuator_forcerange[:, 1].copy(),
        joint_range=model.jnt_range[joint_ids].copy(),
        qpos_adr=model.jnt_qposadr[joint_ids].copy(),
        qvel_adr=model.jnt_dofadr[joint_ids].copy(),
        floating_base=robot.floating_base,
    )
