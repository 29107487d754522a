"""URDF -> `mujoco.MjSpec`: resolve `package://` mesh paths, drop visuals MuJoCo cannot read, lock joints,
replace collision meshes by fitted primitives, and turn URDF links into MuJoCo sites."""

from __future__ import annotations

import importlib.metadata
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import mujoco

from robolearn.errors import RobotImportError

__all__ = ["CollisionRule", "UrdfImportOptions", "resolve_urdf_path", "load_urdf_spec", "urdf_velocity_limits"]

_PRIMITIVES = {
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}
COLLISION_SHAPES = (*_PRIMITIVES, "mesh", "none")


@dataclass(frozen=True)
class CollisionRule:
    """Collision meshes whose file stem matches `mesh` (regex, full match) become `shape`."""

    mesh: str
    shape: str

    def __post_init__(self) -> None:
        if self.shape not in COLLISION_SHAPES:
            raise RobotImportError(
                f"collision rule for {self.mesh!r}: unknown shape {self.shape!r}; valid: {', '.join(COLLISION_SHAPES)}"
            )


@dataclass
class UrdfImportOptions:
    floating_base: bool = True
    base_link: str | None = None
    locked_joints: list[str] = field(default_factory=list)
    collision: list[CollisionRule] = field(default_factory=list)
    sites: dict[str, str] = field(default_factory=dict)  # site name -> URDF link it sits on (origin of the link)
    package_dirs: dict[str, Path] = field(default_factory=dict)
    render_meshes: bool = False  # keep the original meshes as visual-only geoms (for rendering)
    armature: float = 0.0
    joint_damping: float = 0.0
    frictionloss: float = 0.0


def resolve_urdf_path(ref: str, relative_to: Path | None = None) -> Path:
    """`example-robot-data:go2_description/urdf/go2.urdf`, an absolute path, or a path relative to `relative_to`."""
    if ref.startswith("example-robot-data:"):
        try:
            dist = importlib.metadata.distribution("example-robot-data")
        except importlib.metadata.PackageNotFoundError:
            raise RobotImportError(
                f"{ref}: the 'example-robot-data' package is not installed (pip install example-robot-data)"
            ) from None
        path = Path(str(dist.locate_file("cmeel.prefix/share/example-robot-data/robots"))) / ref.split(":", 1)[1]
    else:
        path = Path(ref).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
    if not path.is_file():
        raise RobotImportError(f"URDF file not found: {path}")
    return path


def _resolve_mesh(filename: str, urdf: Path, package_dirs: dict[str, Path]) -> Path | None:
    if filename.startswith("file://"):
        filename = filename[len("file://") :]
    if filename.startswith("package://"):
        package, _, rest = filename[len("package://") :].partition("/")
        roots = [package_dirs[package]] if package in package_dirs else []
        # A ROS-style layout: some ancestor folder of the URDF is the package itself.
        roots += [parent for parent in urdf.parents if parent.name == package]
        for root in roots:
            candidate = Path(root) / rest
            if candidate.is_file():
                return candidate
        return None
    candidate = Path(filename)
    if not candidate.is_absolute():
        candidate = urdf.parent / candidate
    return candidate if candidate.is_file() else None


def urdf_velocity_limits(urdf: Path) -> dict[str, float]:
    """Joint name -> `<limit velocity>` (rad/s or m/s) for the joints that declare one (MuJoCo drops them)."""
    try:
        root = ET.parse(urdf).getroot()
    except ET.ParseError as exc:
        raise RobotImportError(f"{urdf}: not valid XML ({exc})") from None
    out = {}
    for joint in root.findall("joint"):
        limit = joint.find("limit")
        if limit is not None and limit.get("velocity") is not None:
            out[joint.get("name")] = float(limit.get("velocity"))
    return out


def _rewrite_urdf(urdf: Path, opts: UrdfImportOptions) -> str:
    try:
        tree = ET.parse(urdf)
    except ET.ParseError as exc:
        raise RobotImportError(f"{urdf}: not valid XML ({exc})") from None
    root = tree.getroot()
    if root.tag != "robot":
        raise RobotImportError(f"{urdf}: expected a <robot> root element, got <{root.tag}>")
    joints = {j.get("name"): j for j in root.findall("joint")}
    links = {link.get("name") for link in root.findall("link")}
    for name in opts.locked_joints:
        if name not in joints:
            raise RobotImportError(f"{urdf}: locked joint {name!r} is not in the URDF; joints: {', '.join(joints)}")
        joints[name].set("type", "fixed")
    for site, link in opts.sites.items():
        if link not in links:
            raise RobotImportError(f"{urdf}: site {site!r} refers to link {link!r}, which is not in the URDF")
    if opts.base_link is not None and opts.base_link not in links:
        raise RobotImportError(f"{urdf}: base link {opts.base_link!r} is not in the URDF")
    for link in root.findall("link"):
        for visual in link.findall("visual"):
            link.remove(visual)  # visuals are rebuilt from the collision meshes when rendering
        for collision in link.findall("collision"):
            mesh = collision.find("geometry/mesh")
            if mesh is None:
                continue
            filename = mesh.get("filename", "")
            resolved = _resolve_mesh(filename, urdf, opts.package_dirs)
            if resolved is None:
                raise RobotImportError(f"{urdf}: mesh {filename!r} of link {link.get('name')!r} not found")
            if resolved.suffix.lower() not in (".stl", ".obj", ".msh"):
                raise RobotImportError(
                    f"{urdf}: mesh {filename!r} of link {link.get('name')!r} is {resolved.suffix}; "
                    "MuJoCo reads .stl, .obj and .msh collision meshes"
                )
            mesh.set("filename", str(resolved))
    for old in root.findall("mujoco"):
        root.remove(old)
    extension = ET.SubElement(root, "mujoco")
    ET.SubElement(
        extension,
        "compiler",
        {"fusestatic": "false", "strippath": "false", "discardvisual": "false", "balanceinertia": "true"},
    )
    return ET.tostring(root, encoding="unicode")


def _rule_for(mesh_name: str, rules: list[CollisionRule]) -> str:
    for rule in rules:
        if re.fullmatch(rule.mesh, mesh_name):
            return rule.shape
    return "mesh"


def load_urdf_spec(urdf: Path, opts: UrdfImportOptions) -> mujoco.MjSpec:
    """Load `urdf` into an MjSpec (not yet compiled). Static links are fused at compile time."""
    xml = _rewrite_urdf(urdf, opts)
    try:
        spec = mujoco.MjSpec.from_string(xml)
    except Exception as exc:  # MuJoCo raises ValueError with its own parser message
        raise RobotImportError(f"{urdf}: MuJoCo cannot parse it: {str(exc).strip().splitlines()[0]}") from None
    spec.compiler.fusestatic = True
    spec.compiler.fitaabb = True  # fitted primitives enclose the mesh: the robot keeps its dimensions

    for name, link in opts.sites.items():
        spec.body(link).add_site(name=name, size=[0.01, 0.01, 0.01], group=4)

    if opts.floating_base:
        base = spec.body(opts.base_link) if opts.base_link else spec.worldbody.first_body()
        if base is None:
            raise RobotImportError(f"{urdf}: no base link to attach a floating joint to")
        base.add_freejoint(name="root")

    for joint in spec.joints:
        if joint.type != mujoco.mjtJoint.mjJNT_FREE:
            joint.armature = opts.armature
            joint.damping[0] = opts.joint_damping
            joint.frictionloss = opts.frictionloss

    for geom in list(spec.geoms):
        if geom.type != mujoco.mjtGeom.mjGEOM_MESH:
            continue
        shape = _rule_for(geom.meshname, opts.collision)
        body_name = geom.parent.name
        if opts.render_meshes:
            visual = geom.parent.add_geom(
                type=mujoco.mjtGeom.mjGEOM_MESH, meshname=geom.meshname, pos=geom.pos, quat=geom.quat,
                contype=0, conaffinity=0, group=2, rgba=[0.75, 0.75, 0.78, 1.0],
            )
            visual.name = f"{body_name}/{geom.meshname}/visual"
        if shape == "none":
            spec.delete(geom)
            continue
        geom.name = f"{body_name}/{geom.meshname}"
        if shape != "mesh":
            geom.type = _PRIMITIVES[shape]
        geom.group = 3 if opts.render_meshes else 0
    return spec
