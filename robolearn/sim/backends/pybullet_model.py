"""How a MuJoCo model of a robot maps onto the same robot loaded into PyBullet (for the `pybullet` backend):
joints, bodies, colliding links, floor; quaternion helpers between the engines' conventions."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import mujoco
import numpy as np

from robolearn.errors import ConfigError
from robolearn.sim.robots.robot_cfg import RobotCfg, load_robot_cfg

__all__ = ["Layout", "load_pybullet", "robot_cfg_for", "build_layout", "mj_ints", "quat_mul", "quat_conj", "quat_mat",
           "rotate", "to_mj", "to_pb"]


def mj_ints(enum: Any) -> SimpleNamespace:
    """MuJoCo's enum as plain ints (its pybind enums do not compare equal to numpy ints on every path)."""
    return SimpleNamespace(**{name: int(value) for name, value in enum.__members__.items()})


_J, _G = mj_ints(mujoco.mjtJoint), mj_ints(mujoco.mjtGeom)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (importing pybullet prints its build time there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.cache
def load_pybullet() -> ModuleType:
    """The pybullet module, imported on first use (quietly: its import prints a banner)."""
    try:
        with _quiet_stderr():
            import pybullet
    except ImportError:
        raise ConfigError("backend 'pybullet' needs the pybullet package (pip install pybullet)") from None
    return pybullet


# -- quaternions (w, x, y, z), batched over leading axes ---------------------------------------------------
def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def rotate(mat: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j->...i", mat, v)


def to_mj(q_xyzw: np.ndarray) -> np.ndarray:
    return q_xyzw[..., [3, 0, 1, 2]]


def to_pb(q_wxyz: np.ndarray) -> np.ndarray:
    return q_wxyz[..., [1, 2, 3, 0]]


# -- the robot, mapped between the two engines -------------------------------------------------------------
@dataclass
class Layout:
    """How the MjModel's joints, bodies and geoms map onto the PyBullet multibody (same for every env)."""

    free: bool  # floating base (MuJoCo free joint on the URDF root)
    pb_joints: list[int]  # PyBullet joint index of each MuJoCo hinge/slide joint, in MuJoCo joint order
    qpos_adr: np.ndarray  # [nj] their addresses in qpos / qvel
    dof_adr: np.ndarray
    link_body: dict[int, int]  # PyBullet link (-1 = base) -> MuJoCo body (a fixed root link: the world body)
    body_link: dict[int, int]  # MuJoCo body -> the PyBullet link of the same name
    link_geoms: dict[int, list[int]]  # PyBullet link with collision shapes -> its MuJoCo body's colliding geoms
    floor_geoms: list[int]  # MuJoCo world planes, rebuilt as PyBullet planes
    base_inertial: tuple[np.ndarray, np.ndarray]  # base COM frame in the base link frame: pos, quat (w, x, y, z)
    root_pose: tuple[np.ndarray, np.ndarray]  # MuJoCo pose of the root link at qpos0 (a fixed base stays there)
    link_mass: dict[int, float]  # nominal PyBullet link masses and principal inertias
    link_inertia: dict[int, list[float]]


def robot_cfg_for(model: mujoco.MjModel, robot: RobotCfg | None = None) -> RobotCfg:
    """The robot declaration `model` was built from (by the model name), unless given."""
    if robot is not None:
        return robot
    name = model.names[: model.names.index(b"\0")].decode()
    try:
        return load_robot_cfg(name)
    except ConfigError:
        raise ConfigError(
            f"backend 'pybullet' loads the robot's URDF through its declaration sim/robots/{name}.yaml "
            f"(the model is named {name!r}), which does not exist; pass robot=RobotCfg to PyBulletBackend"
        ) from None


def _collides(model: mujoco.MjModel, g1: int, g2: int) -> bool:
    return bool((model.geom_contype[g1] & model.geom_conaffinity[g2]) or
                (model.geom_contype[g2] & model.geom_conaffinity[g1]))


def build_layout(model: mujoco.MjModel, client: int, body: int) -> Layout:
    """The mapping, read from the robot loaded as `body` in PyBullet client `client`."""
    pb = load_pybullet()
    njoint = pb.getNumJoints(body, physicsClientId=client)
    infos = [pb.getJointInfo(body, j, physicsClientId=client) for j in range(njoint)]
    link_names = {-1: pb.getBodyInfo(body, physicsClientId=client)[0].decode()}
    link_names.update({j: info[12].decode() for j, info in enumerate(infos)})
    parents = {j: info[16] for j, info in enumerate(infos)}
    pb_joint = {info[1].decode(): (j, info[2]) for j, info in enumerate(infos)}
    mj_bodies = {model.body(b).name: b for b in range(1, model.nbody)}

    free = bool((model.jnt_type == _J.mjJNT_FREE).any())
    pb_joints, qpos_adr, dof_adr = [], [], []
    for j in range(model.njnt):
        name, kind = model.joint(j).name, int(model.jnt_type[j])
        if kind == _J.mjJNT_FREE:
            if model.body(model.jnt_bodyid[j]).name != link_names[-1]:
                raise ConfigError(f"backend 'pybullet': the free joint {name!r} is not on the URDF's root link "
                                  f"{link_names[-1]!r}")
            continue
        expected = {_J.mjJNT_HINGE: pb.JOINT_REVOLUTE, _J.mjJNT_SLIDE: pb.JOINT_PRISMATIC}
        if kind not in expected:
            raise ConfigError(f"backend 'pybullet': joint {name!r} is a {mujoco.mjtJoint(kind).name}; "
                              "supported: free (root), hinge, slide")
        if name not in pb_joint or pb_joint[name][1] != expected[kind]:
            raise ConfigError(f"backend 'pybullet': joint {name!r} of the model is not a movable joint of the URDF")
        pb_joints.append(pb_joint[name][0])
        qpos_adr.append(model.jnt_qposadr[j])
        dof_adr.append(model.jnt_dofadr[j])

    # A fixed root link has no MuJoCo body of its own: the compiler fused it into the world body.
    root = link_names[-1]
    root_body = mj_bodies.get(root, 0 if not free else -1)
    if root_body < 0:
        raise ConfigError(f"backend 'pybullet': the URDF's root link {root!r} has no body in the MuJoCo model")
    link_body: dict[int, int] = {}
    for link, lname in link_names.items():
        walk = link
        while link_names[walk] not in mj_bodies and walk != -1:
            walk = parents[walk]
        if walk != -1 and link_names[walk] not in mj_bodies:
            raise ConfigError(f"backend 'pybullet': URDF link {lname!r} has no body in the MuJoCo model")
        link_body[link] = mj_bodies[link_names[walk]] if walk != -1 else root_body
    body_link = {b: link for link, b in link_body.items() if link_names[link] == model.body(b).name}
    body_link[root_body] = -1
    for b in range(1, model.nbody):
        if b not in body_link:
            raise ConfigError(f"backend 'pybullet' simulates the robot and a floor only; body {model.body(b).name!r} "
                              "is not a link of the robot's URDF")
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    root_pose = (data.xpos[root_body].copy(), data.xquat[root_body].copy())  # where a fixed base stays

    floor_geoms = []
    for g in np.flatnonzero(model.geom_bodyid == 0):
        if not (model.geom_contype[g] or model.geom_conaffinity[g]):
            continue
        if model.geom_type[g] != _G.mjGEOM_PLANE:
            raise ConfigError(f"backend 'pybullet' supports planes as world geoms; {model.geom(g).name!r} is a "
                              f"{mujoco.mjtGeom(model.geom_type[g]).name}")
        floor_geoms.append(int(g))

    # Links are MuJoCo's bodies (fused links merged, see pybullet_urdf); the shapes left are the colliding ones.
    link_geoms: dict[int, list[int]] = {}
    for link in link_names:
        if pb.getCollisionShapeData(body, link, physicsClientId=client):
            geoms = np.flatnonzero(model.geom_bodyid == link_body[link])
            link_geoms[link] = [int(g) for g in geoms if any(_collides(model, g, f) for f in floor_geoms)]

    dyn = pb.getDynamicsInfo(body, -1, physicsClientId=client)
    base_inertial = (np.array(dyn[3]), to_mj(np.array(dyn[4])))
    dynamics = {link: pb.getDynamicsInfo(body, link, physicsClientId=client) for link in link_names}
    return Layout(free, pb_joints, np.array(qpos_adr, dtype=int), np.array(dof_adr, dtype=int), link_body,
                   body_link, link_geoms, floor_geoms, base_inertial, root_pose,
                   {link: d[0] for link, d in dynamics.items()}, {link: list(d[2]) for link, d in dynamics.items()})
