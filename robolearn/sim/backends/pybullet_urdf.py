"""The robot's URDF as PyBullet should load it to match a compiled MjModel: the importer's rewrite (resolved
mesh paths, locked joints), minus the collision shapes MuJoCo dropped, with the links on fixed joints merged into
their parents as MuJoCo's compiler fuses them, and with MuJoCo's joint armature added as link inertia."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np

from robolearn.sim.robots.robot_cfg import RobotCfg
from robolearn.sim.robots.urdf_import import UrdfImportOptions, _rewrite_urdf, resolve_urdf_path

__all__ = ["pybullet_urdf"]

_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)
_PLANE = int(mujoco.mjtGeom.mjGEOM_PLANE)
_TENSOR = (("ixx", 0, 0), ("iyy", 1, 1), ("izz", 2, 2), ("ixy", 0, 1), ("ixz", 0, 2), ("iyz", 1, 2))
Pose = tuple[np.ndarray, np.ndarray]  # rotation matrix, translation: a child frame in its parent's frame


def pybullet_urdf(robot: RobotCfg, model: mujoco.MjModel, *, armature: bool = True) -> str:
    """URDF text for PyBullet (mesh paths absolute) matching `model`, which was built from `robot`."""
    urdf = resolve_urdf_path(robot.urdf, relative_to=robot.folder)
    root = ET.fromstring(_rewrite_urdf(urdf, UrdfImportOptions(locked_joints=robot.locked_joints)))
    _prune_collisions(root, model)
    _merge_fused_links(root, {model.body(b).name for b in range(1, model.nbody)})
    if armature:
        _add_armature(root, model)
    return ET.tostring(root, encoding="unicode")


# -- frames ----------------------------------------------------------------------------------------------
def _rpy_mat(rpy: np.ndarray) -> np.ndarray:
    """URDF fixed-axis roll, pitch, yaw -> rotation matrix (Rz @ Ry @ Rx)."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _mat_rpy(mat: np.ndarray) -> np.ndarray:
    pitch = np.arcsin(np.clip(-mat[2, 0], -1.0, 1.0))
    if abs(np.cos(pitch)) > 1e-9:
        return np.array([np.arctan2(mat[2, 1], mat[2, 2]), pitch, np.arctan2(mat[1, 0], mat[0, 0])])
    return np.array([0.0, pitch, np.arctan2(-mat[0, 1], mat[1, 1])])  # gimbal lock: yaw takes it all


def _origin(el: ET.Element) -> Pose:
    origin = el.find("origin")
    if origin is None:
        return np.eye(3), np.zeros(3)
    xyz = np.array([float(x) for x in origin.get("xyz", "0 0 0").split()])
    return _rpy_mat(np.array([float(x) for x in origin.get("rpy", "0 0 0").split()])), xyz


def _set_origin(el: ET.Element, pose: Pose) -> None:
    origin = el.find("origin")
    if origin is None:
        origin = ET.Element("origin")
        el.insert(0, origin)
    origin.set("xyz", " ".join(repr(float(x)) for x in pose[1]))
    origin.set("rpy", " ".join(repr(float(x)) for x in _mat_rpy(pose[0])))


def _compose(a: Pose, b: Pose) -> Pose:
    return a[0] @ b[0], a[0] @ b[1] + a[1]


# -- inertia ---------------------------------------------------------------------------------------------
def _inertial(link: ET.Element) -> tuple[float, np.ndarray, np.ndarray]:
    """(mass, COM, inertia about the COM) in the link frame; zeros for a link without <inertial>."""
    inertial = link.find("inertial")
    if inertial is None:
        return 0.0, np.zeros(3), np.zeros((3, 3))
    mass_el, inertia = inertial.find("mass"), inertial.find("inertia")
    tensor = np.zeros((3, 3))
    for key, a, b in _TENSOR:
        tensor[a, b] = tensor[b, a] = float(inertia.get(key, "0")) if inertia is not None else 0.0
    rot, com = _origin(inertial)
    return float(mass_el.get("value", "0")) if mass_el is not None else 0.0, com, rot @ tensor @ rot.T


def _set_inertial(link: ET.Element, mass: float, com: np.ndarray, tensor: np.ndarray) -> None:
    old = link.find("inertial")
    if old is not None:
        link.remove(old)
    inertial = ET.Element("inertial")
    ET.SubElement(inertial, "origin", {"xyz": " ".join(repr(float(x)) for x in com), "rpy": "0 0 0"})
    ET.SubElement(inertial, "mass", {"value": repr(float(mass))})
    ET.SubElement(inertial, "inertia", {key: repr(float(tensor[a, b])) for key, a, b in _TENSOR})
    link.insert(0, inertial)


# -- the three changes -----------------------------------------------------------------------------------
def _prune_collisions(root: ET.Element, model: mujoco.MjModel) -> None:
    """Drop the collision meshes MuJoCo dropped (rule `none`) or does not collide with the floor. MuJoCo names
    a mesh geom "<URDF link>/<mesh file stem>" (urdf_import); URDF primitives keep their link's decision."""
    floors = [g for g in np.flatnonzero(model.geom_bodyid == 0) if int(model.geom_type[g]) == _PLANE]

    def collides(g: int) -> bool:
        return any((model.geom_contype[g] & model.geom_conaffinity[f]) or
                   (model.geom_contype[f] & model.geom_conaffinity[g]) for f in floors)

    robot = [g for g in range(model.ngeom) if model.geom_bodyid[g] > 0 and collides(g)]
    colliding, any_colliding = {model.geom(g).name for g in robot}, bool(robot)
    for link in root.findall("link"):
        for collision in link.findall("collision"):
            mesh = collision.find("geometry/mesh")
            keep = (f"{link.get('name')}/{Path(mesh.get('filename', '')).stem}" in colliding if mesh is not None
                    else any_colliding)
            if not keep:
                link.remove(collision)


def _merge_fused_links(root: ET.Element, bodies: set[str]) -> None:
    """Merge every link on a fixed joint that MuJoCo fused into its parent (it is not one of `bodies`): mass,
    COM and inertia combined, collision shapes and child joints moved into the parent's frame."""
    while True:
        joints = root.findall("joint")
        fused = next((j for j in joints if j.get("type") == "fixed" and j.find("child").get("link") not in bodies),
                     None)
        if fused is None:
            return
        links = {link.get("name"): link for link in root.findall("link")}
        parent_name, child_name = fused.find("parent").get("link"), fused.find("child").get("link")
        parent, child = links[parent_name], links[child_name]
        pose = _origin(fused)  # child frame in the parent frame
        m_p, c_p, i_p = _inertial(parent)
        m_c, c_c, i_c = _inertial(child)
        c_c, i_c = pose[0] @ c_c + pose[1], pose[0] @ i_c @ pose[0].T
        if m_p + m_c > 0:
            com = (m_p * c_p + m_c * c_c) / (m_p + m_c)
            tensor = np.zeros((3, 3))
            for m, c, i in ((m_p, c_p, i_p), (m_c, c_c, i_c)):
                d = c - com
                tensor += i + m * (d @ d * np.eye(3) - np.outer(d, d))  # parallel axis theorem
            _set_inertial(parent, m_p + m_c, com, tensor)
        for collision in child.findall("collision"):
            _set_origin(collision, _compose(pose, _origin(collision)))
            parent.append(collision)
        for joint in joints:
            if joint.find("parent").get("link") == child_name:
                joint.find("parent").set("link", parent_name)
                _set_origin(joint, _compose(pose, _origin(joint)))
        root.remove(fused)
        root.remove(child)


def _add_armature(root: ET.Element, model: mujoco.MjModel) -> None:
    """MuJoCo's joint armature (rotor inertia), which PyBullet lacks, as extra inertia of each hinge's child link
    about the hinge axis, so that the joint's own diagonal of the mass matrix is MuJoCo's. Unlike a geared rotor,
    it is also felt by ancestor joints with a parallel axis component (a Go2 calf's armature by its thigh joint)
    and by the base. Where the link would then break the triangle inequality of rigid bodies (PyBullet zeroes
    such inertias), the two perpendicular moments are raised just enough (a thin disc)."""
    joints = {j.get("name"): j for j in root.findall("joint")}
    links = {link.get("name"): link for link in root.findall("link")}
    for j in range(model.njnt):
        armature = float(model.dof_armature[model.jnt_dofadr[j]])
        if armature <= 0 or int(model.jnt_type[j]) != _HINGE:
            continue  # slide-joint armature (a reflected mass) is not modelled
        joint = joints[model.joint(j).name]
        link = links[joint.find("child").get("link")]
        axis_el = joint.find("axis")
        axis = np.array([float(x) for x in (axis_el.get("xyz", "1 0 0") if axis_el is not None else "1 0 0").split()])
        u = axis / np.linalg.norm(axis)  # in the joint frame = the child link frame
        mass, com, tensor = _inertial(link)
        tensor = tensor + armature * np.outer(u, u)
        for _ in range(20):
            low, mid, high = np.linalg.eigvalsh(tensor)
            if low + mid >= high * (1 + 1e-3):
                break
            tensor += (0.5 * (high - low - mid) + 1e-3 * high) * (np.eye(3) - np.outer(u, u))
        _set_inertial(link, mass, com, tensor)
