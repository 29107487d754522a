"""Rebuild a policy's observation vector from what the robot measures, as the bundle's layout declares.

A frame is the bundle's terms in order, each `clip(value * scale, -clip, clip)`; `history` frames are stacked
oldest first. Each term name has one definition here (and its stated meaning in `TERM_CONTRACT`), matching the
training task's term of the same name (`Task.policy_terms`); the export test checks the two agree on the same
simulator state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robolearn.deploy.bundle import BundleManifest, GraphSpec
from robolearn.errors import BundleError

__all__ = ["Measurement", "ObservationBuilder", "TERMS", "TermContract", "TERM_CONTRACT", "COMMAND_CONTRACT",
           "projected_gravity"]


@dataclass
class Measurement:
    """One policy step's inputs, joints in POLICY order."""

    q: np.ndarray
    dq: np.ndarray
    command: np.ndarray  # velocity command (vx, vy, wz) or target position (arms)
    last_action: np.ndarray
    quat: np.ndarray | None = None  # (w, x, y, z)
    gyro: np.ndarray | None = None
    ee_pos: np.ndarray | None = None
    object_pose: np.ndarray | None = None  # (x, y, z, qw, qx, qy, qz) of the manipulated object, base frame
    waypoints: np.ndarray | None = None  # a waypoint follower's terms (robolearn.deploy.navigation.PathFollower)
    goal_pos: np.ndarray | None = None
    occupancy_scan: np.ndarray | None = None
    clearance_scan: np.ndarray | None = None


def projected_gravity(quat: np.ndarray) -> np.ndarray:
    """World gravity direction (0, 0, -1) in the body frame of the unit quaternion (w, x, y, z)."""
    w, x, y, z = quat
    return np.array([-2.0 * (x * z - w * y), -2.0 * (y * z + w * x), -(1.0 - 2.0 * (x * x + y * y))])


def _need(value: np.ndarray | None, what: str) -> np.ndarray:
    if value is None:
        raise BundleError(f"the policy observes {what}, but the robot state has none (no IMU, kinematics or "
                          f"object tracking)")
    return value


TERMS: dict[str, Callable[[Measurement, np.ndarray], np.ndarray]] = {
    "base_ang_vel": lambda m, d: _need(m.gyro, "base_ang_vel (IMU gyro)"),
    "projected_gravity": lambda m, d: projected_gravity(_need(m.quat, "projected_gravity (IMU orientation)")),
    "velocity_command": lambda m, d: m.command[:3],
    "joint_pos": lambda m, d: m.q - d,
    "joint_pos_abs": lambda m, d: m.q,
    "object_pose": lambda m, d: _need(m.object_pose, "object_pose (an object pose source)"),
    "joint_vel": lambda m, d: m.dq,
    "last_action": lambda m, d: m.last_action,
    "ee_pos": lambda m, d: _need(m.ee_pos, "ee_pos (forward kinematics)"),
    "target_pos": lambda m, d: m.command[:3],
    "target_error": lambda m, d: m.command[:3] - _need(m.ee_pos, "target_error (forward kinematics)"),
    "waypoints": lambda m, d: _need(m.waypoints, "waypoints (a path and the base pose)"),
    "goal_pos": lambda m, d: _need(m.goal_pos, "goal_pos (a path and the base pose)"),
    "occupancy_scan": lambda m, d: _need(m.occupancy_scan, "occupancy_scan (an occupancy grid and the base pose)"),
    "clearance_scan": lambda m, d: _need(m.clearance_scan, "clearance_scan (a clearance grid and the base pose)"),
}


@dataclass(frozen=True)
class TermContract:
    """What a term's value means, as the bundle (version 2) states it for each observation term."""

    units: str
    frame: str
    reference: str
    sign: str


_JOINT_FRAME = "joint space, policy joint order (joints.names)"
_URDF_AXIS = "positive about each joint's URDF <axis>"
_YAW_FRAME = ("the base's yaw frame: origin at the base, x along its heading projected on the ground, y to its "
              "left, z up (the path's frame rotated by the base's yaw)")
_ARM_BASE = "robot base frame (the arm's base link; fixed at the world origin in training)"

# The meaning of each term name: the training task's `_obs_<name>` and `TERMS[name]` above compute exactly this
# (tests/test_export.py checks the two agree on the same simulator state); export writes it into deploy.yaml.
TERM_CONTRACT: dict[str, TermContract] = {
    "base_ang_vel": TermContract(
        units="rad/s", frame="base link frame (x forward, y left, z up; the IMU link has the same orientation)",
        reference="angular velocity of the base relative to the world, expressed in the base frame (the gyro)",
        sign="right-handed about the base axes: +z turns left (counter-clockwise seen from above)"),
    "projected_gravity": TermContract(
        units="unit vector (dimensionless)", frame="base link frame",
        reference="the world's down direction (0, 0, -1) expressed in the base frame: R_world_base^T (0, 0, -1)",
        sign="(0, 0, -1) when level; x > 0 when the nose pitches down, y > 0 when the left side is lower"),
    "velocity_command": TermContract(
        units="m/s, m/s, rad/s", frame="base frame: vx forward, vy left (tracked against the base-frame "
        "velocity); wz about the base z axis", reference="the commanded (vx, vy, wz), in that order (commands)",
        sign="+vx forward, +vy left, +wz turning left (counter-clockwise)"),
    "joint_pos": TermContract(units="rad", frame=_JOINT_FRAME, reference="q - joints.default_pos", sign=_URDF_AXIS),
    "joint_pos_abs": TermContract(units="rad (m for prismatic joints)", frame=_JOINT_FRAME,
                                  reference="q (absolute joint position)", sign=_URDF_AXIS),
    "object_pose": TermContract(
        units="m, m, m, then a unit quaternion (w, x, y, z)", frame=_ARM_BASE,
        reference="the manipulated object's center and orientation relative to the base (from an object pose "
        "source: motion capture, fiducials, a pose estimator)", sign="right-handed base axes"),
    "joint_vel": TermContract(units="rad/s", frame=_JOINT_FRAME, reference="dq (absolute joint velocity)",
                              sign=_URDF_AXIS),
    "last_action": TermContract(
        units="action units (1 = action.scale rad of joint target offset)", frame=_JOINT_FRAME,
        reference="the previous policy step's action as applied: clipped to +-action.clip, before action.scale; "
        "zeros at the first step of an episode", sign="that of the action (target = default + scale * action)"),
    "ee_pos": TermContract(units="m", frame=_ARM_BASE, reference="end-effector point (robot_model.end_effector "
                           "link origin) relative to the base origin", sign="right-handed base axes"),
    "target_pos": TermContract(units="m", frame=_ARM_BASE, reference="the commanded target position (commands)",
                               sign="right-handed base axes"),
    "target_error": TermContract(units="m", frame=_ARM_BASE, reference="target_pos - ee_pos",
                                 sign="points from the end effector to the target"),
    "waypoints": TermContract(
        units="m", frame=_YAW_FRAME,
        reference="(x, y) of the tracked path point and the next ones (navigation.waypoints_observed points, the "
        "goal repeated past the end) relative to the base, clipped to +- navigation.obs_clip_m; the tracked point: "
        "the first at least navigation.lookahead_m away, at or beyond the path point nearest the base",
        sign="+x ahead of the base, +y to its left"),
    "goal_pos": TermContract(
        units="m", frame=_YAW_FRAME, reference="(x, y) of the path's last point relative to the base, clipped to "
        "+- navigation.obs_clip_m", sign="+x ahead of the base, +y to its left"),
    "occupancy_scan": TermContract(
        units="1 occupied, 0 free", frame=_YAW_FRAME,
        reference="an occupancy grid sampled at the points of a navigation.scan_size_m grid every "
        "navigation.scan_resolution_m centered on the base, x-major (forward outer, left inner); outside the grid "
        "counts as occupied", sign="first point: back right; last: front left"),
    "clearance_scan": TermContract(
        units="m", frame=_YAW_FRAME,
        reference="overhead clearance (from the ground to the lowest thing above: a ceiling) sampled at the "
        "occupancy_scan points, min(clearance, navigation.clearance_max_m); nothing overhead or outside the grid "
        "reads navigation.clearance_max_m", sign="first point: back right; last: front left"),
}

# Command names (Task.command_ranges) -> (units, frame): the order of the command vector is the bundle's `commands`.
COMMAND_CONTRACT: dict[str, tuple[str, str]] = {
    "lin_vel_x": ("m/s", "base frame, +x forward"),
    "lin_vel_y": ("m/s", "base frame, +y left"),
    "ang_vel_yaw": ("rad/s", "about the base z axis, + counter-clockwise (turning left)"),
    **{f"target_{a}": ("m", f"robot base frame, {a} axis") for a in "xyz"},
}


class ObservationBuilder:
    """`build(measurement) -> obs [obs_dim]` (float32), stacking `history` frames oldest first."""

    def __init__(self, manifest: BundleManifest, graph: GraphSpec | None = None) -> None:
        """The acting graph's observation (the manifest's `observation`), or `graph`'s own (a high level's)."""
        observation = manifest.observation if graph is None or graph.observation is None else graph.observation
        unknown = [t.name for t in observation if t.name not in TERMS]
        if unknown:
            raise BundleError(f"observation terms {unknown} in the bundle cannot be measured on a robot; "
                              f"known terms: {', '.join(TERMS)}")
        self.terms = [(TERMS[t.name], np.asarray(t.scale), t.dim, t.name, t.clip) for t in observation]
        self.default_pos = np.asarray(manifest.joints.default_pos)
        self.history = (graph or manifest.policy).history
        self.frames: deque[np.ndarray] = deque(maxlen=self.history)
        self.needs_kinematics = any(t.name in ("ee_pos", "target_error") for t in observation) \
            or manifest.action.type in ("ee_delta", "ee_target")
        self.needs_objects = any(t.name == "object_pose" for t in observation)

    def frame(self, m: Measurement) -> np.ndarray:
        parts = []
        for fn, scale, dim, name, clip in self.terms:
            value = np.asarray(fn(m, self.default_pos), dtype=np.float64)
            if value.shape != (dim,):
                raise BundleError(f"observation term {name!r}: measured {value.shape}, the bundle expects ({dim},)")
            value = value * scale
            parts.append(value if clip is None else np.clip(value, -clip, clip))
        return np.concatenate(parts).astype(np.float32)

    def build(self, m: Measurement) -> np.ndarray:
        frame = self.frame(m)
        if not self.frames:
            self.frames.extend([frame] * self.history)  # a fresh start repeats the first frame
        else:
            self.frames.append(frame)
        return np.concatenate(self.frames)

    def reset(self) -> None:
        self.frames.clear()
