"""The policy bundle: ONNX graph(s) + `deploy.yaml` (+ `parity.npz`), the only thing the deploy runtime reads.

Version 2 (written by `robolearn export`; the format is documented for users in docs/bundle.md):
- `graphs`: one or more ONNX graphs, each with a role (policy, high_level, low_level, safety_critic), its rate,
  its named inputs and outputs, its observation history and optionally action chunks (horizon, how many to
  execute, interpolation); a diffusion policy's acting graph is its denoiser, with the sampler the runtime runs
  around it (`diffusion`: noise schedule, DDIM timesteps, horizons, normalization);
- the contract the policy was trained under: every observation term with its units, frame, reference, sign,
  scale, clip and training noise (`observation`), the command order and units (`commands`), the action-to-target
  mapping (`action`), the PD law and what happens to targets between policy steps, the trained action latency
  (`control`), joint gains and limits with armature and friction loss (`joints`), the initial state
  (`initial_state`), the training domain: simulator, randomization ranges, pushes, terrain (`domain`), and the
  robot model: URDF package, path, version and hash, base and IMU links, collision geometry, and for arms the
  kinematic chain to the end effector (`robot_model`).

Version 1 (one `policy.onnx`, observation names with scales, joints, action scale and clip, rates, command
ranges) still loads: it is read into the same `BundleManifest` with the contract sections left empty (None).
parity.npz holds observations recorded in training and the exporter's torch actions for them, so the robot
computer checks its own onnxruntime.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from robolearn.config import declarations_root, from_dict, load_yaml, to_dict
from robolearn.errors import BundleError, ConfigError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "SUPPORTED_VERSIONS", "MANIFEST", "PARITY", "ROLES", "ObsTerm",
           "JointSpec", "TensorSpec", "ChunkSpec", "DiffusionSpec", "GraphSpec", "EeActionSpec", "CommandSpec",
           "ActionSpec", "ControlSpec", "DiffusionCamera", "NavigationSpec", "CommandMapSpec", "InitialStateSpec",
           "SimulatorSpec", "DomainSpec", "UrdfRef", "CollisionGeom", "KinematicLink", "RobotModelSpec",
           "BundleManifest", "PolicySpec", "ManifestV1", "PolicyV1", "TermV1", "sha256_file", "read_manifest",
           "write_manifest", "OnnxGraph", "OnnxPolicy", "ChunkedPolicy", "Bundle", "shipped_bundles", "load_bundle",
           "diffusion_parity"]

BUNDLE_FORMAT = "robolearn-bundle"
BUNDLE_VERSION = 2  # what export writes
SUPPORTED_VERSIONS = (1, 2)  # what load_bundle reads
MANIFEST = "deploy.yaml"
PARITY = "parity.npz"
PARITY_TOLERANCE = 1e-4  # onnxruntime on the robot vs the exporter's torch (the exporter itself checks 1e-5)
DIFFUSION_PARITY_TOLERANCE = 1e-3  # raw actions of a whole denoising loop (10 graph calls, float32)
ROLES = ("policy", "high_level", "low_level", "safety_critic", "encoder")
ACTING_ROLES = ("policy", "low_level")  # graphs whose output is the joint action the runtime applies
NAVIGATION_TERMS = ("waypoints", "goal_pos", "occupancy_scan", "clearance_scan")  # terms a path (and maps) give

Range = tuple[float, float]


# -- the contract ----------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ObsTerm:
    """One term of an observation frame: `clip(value * scale, -clip, clip)` (no clip when `clip` is None).
    Version 2 requires `units`, `frame`, `reference`, `sign` and `noise`; version 1 had name, dim and scale."""

    name: str
    dim: int
    scale: list[float]
    clip: float | None = None
    units: str | None = None
    frame: str | None = None
    reference: str | None = None  # what the value is measured against (e.g. q - default_pos)
    sign: str | None = None  # which direction is positive
    noise: list[float] | None = None  # training noise: uniform half-width per dim, in `units` (before `scale`)


@dataclass(kw_only=True)
class JointSpec:
    names: list[str]  # policy order
    default_pos: list[float]
    kp: list[float]
    kd: list[float]
    pos_limits: list[tuple[float, float]]
    vel_limits: list[float]
    torque_limits: list[float]
    armature: list[float] | None = None  # kg m^2 (rotor inertia reflected at the joint), v2
    friction_loss: list[float] | None = None  # N m, dry friction, v2
    damping: list[float] | None = None  # N m s/rad, passive viscous damping besides the PD's kd, v2

    _PER_JOINT = ("default_pos", "kp", "kd", "pos_limits", "vel_limits", "torque_limits", "armature",
                  "friction_loss", "damping")


@dataclass(kw_only=True)
class TensorSpec:
    """A named input or output of a graph. `shape`: -1 for a free size (the batch)."""

    name: str
    shape: list[int]
    dtype: str = "float32"
    meaning: str  # observation | action | action_chunk | value | cost_value | subgoal | latent | command | ...


@dataclass(kw_only=True)
class ChunkSpec:
    """Action chunks: the graph outputs [batch, horizon, action_dim]; the runtime executes the first `execute`
    actions, one per 1 / rate_hz, then runs the graph again; `interpolation`: the targets between two
    consecutive actions of a chunk are held or moved linearly (instead of `control.between_steps`)."""

    horizon: int
    execute: int
    interpolation: Literal["hold", "linear"] = "hold"


@dataclass(kw_only=True)
class NavigationSpec:
    """A waypoint follower's subgoal interface (robolearn.deploy.navigation): its `waypoints`, `goal_pos` and
    `occupancy_scan` terms come from a path (a navigation stack's, or planned here on an occupancy grid from a goal),
    the base pose (x, y, yaw) in the path's frame and, for the scan, an occupancy grid; a `clearance_scan` term
    (a follower trained under low ceilings) from an overhead-clearance grid. The path, the goal and the
    base pose share one fixed frame (odom or map)."""

    subgoal: Literal["path"] = "path"
    waypoints_observed: int  # the tracked path point and the ones after it
    spacing_m: float  # paths are resampled every this many m (as in training)
    lookahead_m: float  # the tracked point: the first at least this far, at or beyond the progress point
    progress_window: int  # progress: the nearest point at most this many points beyond the last progress
    goal_radius_m: float  # the goal counts as reached within this distance
    obs_clip_m: float  # waypoint and goal coordinates are clipped to +- this
    scan_size_m: tuple[float, float]  # the scan grid (forward, left) extent, centered on the base
    scan_resolution_m: float
    planner_inflate_m: float  # planning on a grid (a goal without a path): obstacles grow by this
    replan_hz: float  # planning on a grid: replanned this often (and whenever the goal changes)
    clearance_max_m: float = 0.0  # the clearance scan reads min(overhead clearance, this); 0: no clearance scan

    def __post_init__(self) -> None:
        positive = ("spacing_m", "lookahead_m", "goal_radius_m", "obs_clip_m", "scan_resolution_m", "replan_hz")
        bad = [k for k in positive if not getattr(self, k) > 0]
        if bad or self.waypoints_observed < 1 or self.progress_window < 1 or self.planner_inflate_m < 0 \
                or self.clearance_max_m < 0 or len(self.scan_size_m) != 2 or min(self.scan_size_m) <= 0:
            raise ConfigError(f"navigation: {', '.join(bad) or 'counts or sizes'}: expected positive values "
                              f"(waypoints_observed and progress_window >= 1, planner_inflate_m >= 0)")


@dataclass(kw_only=True)
class DiffusionCamera:
    """A camera an image-based diffusion policy sees: each frame is resized (area averaging) to `height` x `width`,
    run through the `graph` (role encoder: image [B, 3, height, width] float32 in 0..255 -> features [B, F]),
    and its features follow the frame's normalized state in `cond`."""

    name: str  # the camera (the robot's, and the training task's)
    feature: str  # the dataset feature it was recorded as (observation.images.<name>)
    height: int
    width: int
    graph: str  # the encoder graph's name


@dataclass(kw_only=True)
class DiffusionSpec:
    """A denoiser graph `eps = graph(x [B, pred_horizon, A], t [B] (int64 noise level), cond [B, obs_horizon * O])`
    and the DDIM sampler that turns it into an action chunk (`robolearn.deploy.diffusion.DiffusionSampler`):

    cond = flatten(2 (frames - obs_low) / obs_span - 1) over the last `obs_horizon` observation frames;
    x = Gaussian noise, then for t in `timesteps`: x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), clipped to
    +-clip_sample; x = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps (DDIM, eta 0), a = alphas_cumprod, a_prev that of the
    next timestep (`final_alpha_cumprod` after the last); actions = (x + 1) / 2 action_span + action_low (held at
    action_low + 1 where `action_constant`), of which the rows obs_horizon - 1 .. are the chunk from the current
    frame on. `sampler: warm` (RTI-DP) starts every plan after the first from the previous one shifted by the
    executed actions, noised to the level of the first of `warm_timesteps`, and runs those. With `cameras`,
    each frame of `cond` is [normalized state, camera 1's features, ...] (`DiffusionCamera`)."""

    prediction: Literal["epsilon"] = "epsilon"
    sampler: Literal["ddim", "warm"] = "ddim"
    obs_horizon: int
    pred_horizon: int
    alphas_cumprod: list[float]  # per training noise level 0 .. train_steps - 1
    final_alpha_cumprod: float = 1.0
    timesteps: list[int]  # the DDIM schedule, in the order they run
    warm_timesteps: list[int]  # warm: the noise levels a shifted plan is refined through, in order
    clip_sample: float | None = 1.0
    obs_low: list[float]  # per frame value (O)
    obs_span: list[float]
    action_low: list[float]  # per action (A)
    action_span: list[float]
    action_constant: list[bool]
    cameras: list[DiffusionCamera] = field(default_factory=list)  # an image-based policy's cameras, in cond order


@dataclass(kw_only=True)
class CommandMapSpec:
    """A high level's output a -> the low level's command: low + (clip(a, -1, 1) + 1) / 2 * (high - low), held
    until the high level's next step (every policy_hz / rate_hz low-level steps)."""

    low: list[float]
    high: list[float]


@dataclass(kw_only=True)
class GraphSpec:
    name: str
    role: Literal["policy", "high_level", "low_level", "safety_critic", "encoder"]
    file: str
    sha256: str
    rate_hz: float  # actions (or values) per second; a chunked graph runs every chunk.execute actions
    history: int = 1  # frames of the observation layout in its `observation` input, oldest first
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    chunk: ChunkSpec | None = None
    diffusion: DiffusionSpec | None = None  # the graph is a denoiser; the runtime samples with it
    # A high level: its own observation layout (terms as in the manifest's `observation`, which is the acting
    # graph's) and how its output becomes the low level's command (`commands`)
    observation: list[ObsTerm] | None = None
    command: CommandMapSpec | None = None

    # The single-input, single-output view that the runtime and version 1 use.
    @property
    def input(self) -> str:
        return self.inputs[0].name

    @property
    def output(self) -> str:
        return self.outputs[0].name

    @property
    def obs_dim(self) -> int:
        """The stacked observation's size (a denoiser's `cond` input)."""
        if self.diffusion is not None:
            return next(i.shape[-1] for i in self.inputs if i.meaning == "observation")
        return self.inputs[0].shape[-1]

    @obs_dim.setter
    def obs_dim(self, value: int) -> None:
        self.inputs[0].shape[-1] = value

    @property
    def action_dim(self) -> int:
        return self.outputs[0].shape[-1]


PolicySpec = GraphSpec  # version 1's name for the (only) policy graph


@dataclass(kw_only=True)
class CommandSpec:
    """One entry of the command vector, in order (the `velocity_command` or `target_pos` term reads them)."""

    name: str
    units: str | None = None
    frame: str | None = None
    range: Range  # trained range


@dataclass(kw_only=True)
class EeActionSpec:
    """`action.type: ee_delta`: the action is [dx, dy, dz, grip] in [-1, 1]. The commanded end-effector position
    (base frame; at the start of a run, the measured one) moves by scale * (dx, dy, dz) m per policy step and is
    clamped into [workspace_low, workspace_high]. `ee_target`: the action is [x, y, z, grip], (x, y, z) the
    commanded position itself (m, base frame), approached by at most `scale` m per axis and policy step and clamped
    into the same box; `ik_iterations` damped least-squares steps (damping
    `ik_damping`) from the previous joint targets give the `arm_joints`' targets for that position and the held
    `orientation`; the targets are clamped into the joint ranges; every gripper joint's target is
    gripper_open * (1 - (grip + 1) / 2) (-1 open, +1 closed)."""

    arm_joints: list[str]
    workspace_low: list[float]  # m, base frame
    workspace_high: list[float]
    orientation: list[float]  # (w, x, y, z) held by the IK, base frame
    ik_damping: float
    ik_iterations: int
    gripper_joints: list[str]
    gripper_open: float  # joint position when open (m or rad)


@dataclass(kw_only=True)
class ActionSpec:
    """`joint_position_offset`: joint target = default_pos + scale * clip(action, -clip, clip), then, with
    `target_clip: joint_range`, clamped into joints.pos_limits and moved at most `max_target_rate` rad/s.
    `ee_delta`: end-effector motion and grip (`ee`); `scale` is m of motion per action unit. `ee_target`: the
    commanded end-effector position and grip (`ee`); `scale` is the most it moves per axis and policy step (m)."""

    type: Literal["joint_position_offset", "ee_delta", "ee_target"] = "joint_position_offset"
    dim: int
    scale: float
    clip: float
    target_clip: Literal["none", "joint_range"] = "none"
    max_target_rate: float | None = None  # rad/s; None: no rate limit in training
    target_fault_margin: float | None = None  # rad: with joint_range, a new target beyond the range by more than
    # this ended the training episode as a failure (the deploy runtime damps on it); None: no such rule
    bounds: list[tuple[float, float]] | None = None  # per action (low, high), applied after `clip`: the actions
    # whose targets lie inside the joint range (trained with `action_bounds: joint_range`); None: only `clip`
    ee: EeActionSpec | None = None  # types ee_delta and ee_target


@dataclass(kw_only=True)
class ControlSpec:
    """tau = clip(kp * (target - q) - kd * dq, -torque_limit, torque_limit), recomputed at `rate_hz`."""

    law: Literal["pd"] = "pd"
    rate_hz: float  # how often the PD torque was recomputed in training (the physics rate)
    between_steps: Literal["hold", "linear"]  # the target between two policy steps
    latency_s: Range = (0.0, 0.0)  # a new target took effect this long after the observation, per episode
    velocity_target: float = 0.0  # the PD's dq target
    torque_clip: bool = True


@dataclass(kw_only=True)
class InitialStateSpec:
    base_pos: list[float] | None = None  # m, world; None for a fixed base
    base_yaw_range: Range | None = None  # rad, uniform; roll and pitch 0
    base_velocity: float = 0.0
    joint_pos: list[float]  # rad, policy order (the default pose)
    joint_pos_noise: float = 0.0  # rad, uniform half-width added per joint
    joint_vel: float = 0.0


@dataclass(kw_only=True)
class SimulatorSpec:
    engine: str  # e.g. mujoco
    version: str
    timestep_s: float
    integrator: str
    gravity: list[float]
    contact: dict[str, Any] = field(default_factory=dict)  # the engine's contact model settings


@dataclass(kw_only=True)
class DomainSpec:
    """What the policy saw in training: each range is sampled uniformly per episode."""

    simulator: SimulatorSpec
    episode_length_s: float
    terrain: dict[str, Any] = field(default_factory=lambda: {"type": "flat"})
    friction: Range | None = None  # contact friction coefficient (robot-floor pair)
    added_base_mass_kg: Range | None = None
    motor_strength: Range | None = None  # scales kp, kd and the torque limits together
    push_interval_s: float | None = None  # None: no pushes
    push_velocity_m_s: float | None = None  # each push adds U(-v, v) to the base's world x and y velocity
    observation_noise: Literal["uniform"] = "uniform"  # per-term half-widths: observation[].noise
    randomization: dict[str, Any] = field(default_factory=dict)  # the task's randomization section, verbatim


@dataclass(kw_only=True)
class UrdfRef:
    package: str | None = None  # a pip distribution that ships the file (e.g. example-robot-data), or None
    path: str  # inside the package's robots folder, or as exported when no package
    version: str | None = None  # of the package
    sha256: str  # of the URDF file as trained


@dataclass(kw_only=True)
class CollisionGeom:
    """A collision shape used in training, in its link's frame. `size`: sphere [radius]; capsule [radius, half
    length of the cylinder part, along the shape's z axis]; box [half x, half y, half z]; cylinder [radius,
    half length]; ellipsoid [semi-axes x, y, z]."""

    link: str
    shape: Literal["sphere", "capsule", "box", "cylinder", "ellipsoid", "mesh"]
    size: list[float]
    pos: list[float]
    quat: list[float]  # (w, x, y, z)
    mesh: str | None = None  # the URDF collision mesh it replaces (file stem)


@dataclass(kw_only=True)
class KinematicLink:
    """One frame on an arm's chain from the base to the end effector, in its parent's frame as trained: the
    parent's frame times (pos, quat), then the joint's motion along `axis` (this frame's axes) by its position."""

    link: str  # the URDF link (links joined by fixed joints were merged into their parent in training)
    pos: list[float]  # m
    quat: list[float]  # (w, x, y, z)
    joint: str | None = None  # the joint that moves this frame (one of joints.names), or None: fixed
    joint_type: Literal["revolute", "prismatic"] = "revolute"
    axis: list[float] | None = None  # unit vector


@dataclass(kw_only=True)
class RobotModelSpec:
    urdf: UrdfRef
    floating_base: bool
    base_link: str
    imu_link: str | None = None
    feet: list[str] = field(default_factory=list)  # links
    end_effector: str | None = None
    armature: float = 0.0
    friction_loss: float = 0.0
    joint_damping: float = 0.0
    collide_with: Literal["floor", "none"] = "floor"  # robot shapes never collide with each other
    collision: list[CollisionGeom] = field(default_factory=list)
    # Arms: the frames from the base (the training world's origin) to the end-effector point, which is the last
    # entry (no joint); the deploy runtime's forward kinematics (ee_pos observations) read only this.
    chain: list[KinematicLink] = field(default_factory=list)


# -- the manifest ----------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class BundleManifest:
    """deploy.yaml, version 2 (a version 1 file is read into this with the contract sections None)."""

    format: str
    version: int
    task: str
    robot: str
    kind: str  # legged | arm
    graphs: list[GraphSpec]
    observation: list[ObsTerm]
    commands: list[CommandSpec] = field(default_factory=list)
    action: ActionSpec
    control: ControlSpec
    joints: JointSpec
    initial_state: InitialStateSpec | None = None
    domain: DomainSpec | None = None
    robot_model: RobotModelSpec | None = None
    navigation: NavigationSpec | None = None  # a waypoint follower's subgoal interface
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format != BUNDLE_FORMAT:
            raise ConfigError(f"format is {self.format!r}, expected {BUNDLE_FORMAT!r}")
        if self.version not in SUPPORTED_VERSIONS:
            raise ConfigError(f"version {self.version} is not supported (this robolearn reads "
                              f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
        if self.kind not in ("legged", "arm"):
            raise ConfigError(f"kind: expected legged or arm, got {self.kind!r}")
        self._check_joints()
        self._check_graphs()
        for i, t in enumerate(self.observation):
            if len(t.scale) != t.dim:
                raise ConfigError(f"observation[{i}] ({t.name}).scale: {len(t.scale)} scales for dim {t.dim}")
            if t.clip is not None and t.clip <= 0:
                raise ConfigError(f"observation[{i}] ({t.name}).clip: must be > 0 or null, got {t.clip}")
        self._check_action()
        bounds = self.action.bounds
        if bounds is not None and (len(bounds) != self.action.dim or any(len(b) != 2 or not b[0] <= b[1]
                                                                         for b in bounds)):
            raise ConfigError(f"action.bounds: expected {self.action.dim} pairs [low, high] with low <= high, "
                              f"got {bounds}")
        if self.version >= 2:
            self._check_contract()
        high = self.graph("high_level")
        following = [t.name for t in self.observation + (high.observation or [] if high else [])
                     if t.name in NAVIGATION_TERMS]
        if following and self.navigation is None:
            raise ConfigError(f"observation terms {following} come from a path: the bundle needs a navigation "
                              f"section (its subgoal interface)")
        if "clearance_scan" in following and not self.navigation.clearance_max_m > 0:
            raise ConfigError("observation term clearance_scan: navigation.clearance_max_m must be > 0 (the clearance "
                              "the scan reads where nothing is overhead)")

    def _check_joints(self) -> None:
        n = len(self.joints.names)
        if len(set(self.joints.names)) != n:
            raise ConfigError("joints.names has duplicates")
        for key in JointSpec._PER_JOINT:
            value = getattr(self.joints, key)
            if value is not None and len(value) != n:
                raise ConfigError(f"joints.{key} has {len(value)} entries, joints.names has {n}")

    def _check_action(self) -> None:
        a, names = self.action, self.joints.names
        if a.type == "joint_position_offset":
            if a.dim != len(names):
                raise ConfigError(f"action.dim is {a.dim}, but there are {len(names)} joints")
            return
        ee = a.ee
        if ee is None:
            raise ConfigError(f"action.ee: required for action.type {a.type}")
        if a.dim != 4:
            kind = "[dx, dy, dz, grip]" if a.type == "ee_delta" else "[x, y, z, grip]"
            raise ConfigError(f"action.dim: an {a.type} action is {kind}, got dim {a.dim}")
        unknown = [j for j in ee.arm_joints + ee.gripper_joints if j not in names]
        if unknown:
            raise ConfigError(f"action.ee: joints {unknown} are not in joints.names")
        if len(ee.workspace_low) != 3 or len(ee.workspace_high) != 3 or any(
                lo >= hi for lo, hi in zip(ee.workspace_low, ee.workspace_high, strict=True)):
            raise ConfigError(f"action.ee.workspace_low/high: expected 3 values each, low < high, got "
                              f"{ee.workspace_low} and {ee.workspace_high}")
        if len(ee.orientation) != 4 or ee.ik_iterations < 1 or not ee.ik_damping >= 0:
            raise ConfigError("action.ee: orientation is a quaternion (w, x, y, z), ik_iterations >= 1, "
                              "ik_damping >= 0")

    def _check_graphs(self) -> None:
        if not self.graphs:
            raise ConfigError("graphs: at least one graph is required")
        names = [g.name for g in self.graphs]
        if len(set(names)) != len(names):
            raise ConfigError(f"graphs: names must be unique, got {names}")
        acting = [i for i, g in enumerate(self.graphs) if g.role in ACTING_ROLES]
        if len(acting) != 1:
            raise ConfigError(f"graphs: exactly one graph must have role policy or low_level (the one whose "
                              f"output is the joint action), found {len(acting)}")
        frame = self.frame_dim
        for i, g in enumerate(self.graphs):
            where = f"graphs[{i}]"
            if not g.rate_hz > 0:
                raise ConfigError(f"{where}.rate_hz: must be > 0, got {g.rate_hz}")
            if g.history < 1:
                raise ConfigError(f"{where}.history: must be >= 1, got {g.history}")
            if not g.inputs or not g.outputs:
                raise ConfigError(f"{where}: needs at least one input and one output")
            for kind, specs in (("inputs", g.inputs), ("outputs", g.outputs)):
                seen = [s.name for s in specs]
                if len(set(seen)) != len(seen):
                    raise ConfigError(f"{where}.{kind}: names must be unique, got {seen}")
                for j, s in enumerate(specs):
                    if not s.shape or any(d == 0 or d < -1 for d in s.shape):
                        raise ConfigError(f"{where}.{kind}[{j}].shape: dims must be > 0 or -1, got {s.shape}")
            if g.chunk is not None:
                c = g.chunk
                if c.horizon < 1 or not 1 <= c.execute <= c.horizon:
                    raise ConfigError(f"{where}.chunk.execute: must be in 1..horizon ({c.horizon}), got {c.execute}")
                shape = g.outputs[0].shape
                if g.diffusion is None and (len(shape) != 3 or shape[1] != c.horizon):
                    raise ConfigError(f"{where}.outputs[0].shape: a chunked graph outputs [batch, horizon "
                                      f"{c.horizon}, action_dim], got {shape}")
            if g.diffusion is not None:
                self._check_diffusion(g, where)
            if g.role == "high_level":
                self._check_high_level(g, where)
            if g.role in ACTING_ROLES:
                if g.action_dim != self.action.dim:
                    raise ConfigError(f"{where}.outputs[0].shape: action size {g.action_dim}, but action.dim is "
                                      f"{self.action.dim}")
                if g.diffusion is None and frame * g.history != g.obs_dim:
                    raise ConfigError(f"{where}.inputs[0].shape: observation terms sum to {frame} x history "
                                      f"{g.history}, but the input has {g.obs_dim}")

    def _check_high_level(self, g: GraphSpec, where: str) -> None:
        if g.observation is None or g.command is None:
            raise ConfigError(f"{where}: a high_level graph needs its observation and command (how its output "
                              f"becomes the low level's command)")
        n = len(self.commands)
        if not (len(g.command.low) == len(g.command.high) == g.action_dim == n) or \
                any(lo > hi for lo, hi in zip(g.command.low, g.command.high, strict=True)):
            raise ConfigError(f"{where}.command: low and high must have one value per command ({n}) with low <= "
                              f"high, and the graph {n} outputs; got {g.command.low}, {g.command.high}, "
                              f"{g.action_dim} outputs")
        frame = sum(t.dim for t in g.observation)
        if frame * g.history != g.obs_dim:
            raise ConfigError(f"{where}.inputs[0].shape: its observation terms sum to {frame} x history {g.history}, "
                              f"but the input has {g.obs_dim}")
        ratio = self.policy.rate_hz / g.rate_hz
        if self.policy.role != "low_level" or abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ConfigError(f"{where}.rate_hz: a high level runs every whole number of low-level steps: the acting "
                              f"graph must have role low_level and a rate ({self.policy.rate_hz:g} Hz) that is a "
                              f"multiple of {g.rate_hz:g} Hz")

    def _check_diffusion(self, g: GraphSpec, where: str) -> None:
        d, frame = g.diffusion, self.frame_dim  # (the cond size check below covers the observation frames)
        names = {t.name: t for t in g.inputs}
        if set(names) != {"x", "t", "cond"} or names["cond"].meaning != "observation" or len(g.outputs) != 1:
            raise ConfigError(f"{where}: a denoiser graph has inputs x, t, cond (meaning observation) and one output")
        if g.role not in ACTING_ROLES or g.chunk is None:
            raise ConfigError(f"{where}: a denoiser graph acts (role policy) and declares its chunk")
        if d.obs_horizon != g.history or not d.obs_horizon <= d.pred_horizon:
            raise ConfigError(f"{where}.diffusion.obs_horizon: must equal history ({g.history}) and be <= "
                              f"pred_horizon ({d.pred_horizon})")
        if g.chunk.horizon != d.pred_horizon - d.obs_horizon + 1:
            raise ConfigError(f"{where}.chunk.horizon: the actions from the current frame on, pred_horizon - "
                              f"obs_horizon + 1 = {d.pred_horizon - d.obs_horizon + 1}, got {g.chunk.horizon}")
        features = 0
        for j, cam in enumerate(d.cameras):
            enc = next((e for e in self.graphs if e.name == cam.graph and e.role == "encoder"), None)
            if enc is None:
                raise ConfigError(f"{where}.diffusion.cameras[{j}].graph: no encoder graph named {cam.graph!r}")
            if enc.inputs[0].shape[1:] != [3, cam.height, cam.width] or len(enc.outputs[0].shape) != 2:
                raise ConfigError(f"graph {cam.graph!r}: expected input [-1, 3, {cam.height}, {cam.width}] and output "
                                  f"[-1, features], got {enc.inputs[0].shape} and {enc.outputs[0].shape}")
            features += enc.outputs[0].shape[1]
        cond = next(i for i in g.inputs if i.name == "cond").shape[-1]
        if cond != d.obs_horizon * (frame + features):
            raise ConfigError(f"{where}.inputs: cond has {cond} values; obs_horizon {d.obs_horizon} x (frame {frame} "
                              f"+ camera features {features}) = {d.obs_horizon * (frame + features)}")
        if g.outputs[0].shape[1:] != [d.pred_horizon, self.action.dim]:
            raise ConfigError(f"{where}.outputs[0].shape: expected [-1, {d.pred_horizon}, {self.action.dim}], got "
                              f"{g.outputs[0].shape}")
        for key, size in (("obs_low", frame), ("obs_span", frame), ("action_low", self.action.dim),
                          ("action_span", self.action.dim), ("action_constant", self.action.dim)):
            if len(getattr(d, key)) != size:
                raise ConfigError(f"{where}.diffusion.{key}: expected {size} values, got {len(getattr(d, key))}")
        if min(d.obs_span + d.action_span) <= 0:
            raise ConfigError(f"{where}.diffusion: obs_span and action_span must be > 0")
        n = len(d.alphas_cumprod)
        for key in ("timesteps", "warm_timesteps"):
            levels = getattr(d, key)
            decreasing = all(a > b for a, b in zip(levels, levels[1:], strict=False))
            if not levels or any(not 0 <= t < n for t in levels) or not decreasing:
                raise ConfigError(f"{where}.diffusion.{key}: expected decreasing noise levels in 0..{n - 1}, got "
                                  f"{levels}")
        if any(not 0 < a <= 1 for a in d.alphas_cumprod):
            raise ConfigError(f"{where}.diffusion.alphas_cumprod: expected values in (0, 1]")

    def _check_contract(self) -> None:
        for i, t in enumerate(self.observation):
            for key in ("units", "frame", "reference", "sign", "noise"):
                if getattr(t, key) is None:
                    raise ConfigError(f"observation[{i}] ({t.name}).{key}: required in version 2")
            if len(t.noise) != t.dim:
                raise ConfigError(f"observation[{i}] ({t.name}).noise: {len(t.noise)} values for dim {t.dim}")
        for i, c in enumerate(self.commands):
            if c.units is None or c.frame is None:
                raise ConfigError(f"commands[{i}] ({c.name}): units and frame are required in version 2")
        for key in ("initial_state", "domain", "robot_model"):
            if getattr(self, key) is None:
                raise ConfigError(f"{key}: required in version 2")
        for key in ("armature", "friction_loss", "damping"):
            if getattr(self.joints, key) is None:
                raise ConfigError(f"joints.{key}: required in version 2")
        lo, hi = self.control.latency_s
        if not 0 <= lo <= hi:
            raise ConfigError(f"control.latency_s: expected 0 <= low <= high, got {[lo, hi]}")
        if not self.control.rate_hz > 0:
            raise ConfigError(f"control.rate_hz: must be > 0, got {self.control.rate_hz}")
        if len(self.initial_state.joint_pos) != len(self.joints.names):
            raise ConfigError(f"initial_state.joint_pos has {len(self.initial_state.joint_pos)} entries, "
                              f"joints.names has {len(self.joints.names)}")

    # -- views the runtime reads ---------------------------------------------------------------------------
    @property
    def policy(self) -> GraphSpec:
        """The graph whose output is the joint action (role policy, or low_level under a high-level graph)."""
        return next(g for g in self.graphs if g.role in ACTING_ROLES)

    def graph(self, role: str) -> GraphSpec | None:
        return next((g for g in self.graphs if g.role == role), None)

    @property
    def frame_dim(self) -> int:
        return sum(t.dim for t in self.observation)

    @property
    def camera_names(self) -> list[str]:
        """The cameras an image-based diffusion policy sees, in its order (none for other policies)."""
        d = self.policy.diffusion
        return [c.name for c in d.cameras] if d is not None else []

    @property
    def policy_hz(self) -> float:
        return self.policy.rate_hz

    @property
    def sim_hz(self) -> float:
        return self.control.rate_hz

    @property
    def action_scale(self) -> float:
        return self.action.scale

    @property
    def clip_actions(self) -> float:
        return self.action.clip

    def apply_action_clip(self, action: np.ndarray) -> np.ndarray:
        """The action as training applied it (and `last_action` reports it): clipped to +-clip, then into the
        per-action bounds where the bundle has them."""
        action = np.clip(action, -self.action.clip, self.action.clip)
        if self.action.bounds is not None:
            low, high = np.asarray(self.action.bounds, dtype=action.dtype).T
            action = np.clip(action, low, high)
        return action

    @property
    def interpolation(self) -> str:
        """How joint targets move between two actions: a chunked policy's own setting, else control's."""
        chunk = self.policy.chunk
        return chunk.interpolation if chunk is not None else self.control.between_steps


@dataclass(kw_only=True)
class PolicyV1:
    file: str = "policy.onnx"
    sha256: str
    input: str = "obs"
    output: str = "actions"
    obs_dim: int
    action_dim: int
    history: int = 1


@dataclass(kw_only=True)
class TermV1:
    name: str
    dim: int
    scale: list[float]


@dataclass(kw_only=True)
class ManifestV1:
    """deploy.yaml version 1, as written before version 2; `to_v2()` gives the manifest the runtime reads."""

    format: str
    version: int
    task: str
    robot: str
    kind: str
    policy: PolicyV1
    observation: list[TermV1]
    joints: JointSpec
    action_scale: float
    clip_actions: float
    policy_hz: float
    sim_hz: float
    commands: dict[str, Range] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def to_v2(self) -> BundleManifest:
        p = self.policy
        graph = GraphSpec(name="policy", role="policy", file=p.file, sha256=p.sha256, rate_hz=self.policy_hz,
                          history=p.history,
                          inputs=[TensorSpec(name=p.input, shape=[-1, p.obs_dim], meaning="observation")],
                          outputs=[TensorSpec(name=p.output, shape=[-1, p.action_dim], meaning="action")])
        # Version 1 does not say what happens between policy steps; the runtime keeps its version 1 behaviour.
        return BundleManifest(
            format=self.format, version=1, task=self.task, robot=self.robot, kind=self.kind, graphs=[graph],
            observation=[ObsTerm(name=t.name, dim=t.dim, scale=t.scale) for t in self.observation],
            commands=[CommandSpec(name=k, range=v) for k, v in self.commands.items()],
            action=ActionSpec(dim=len(self.joints.names), scale=self.action_scale, clip=self.clip_actions),
            control=ControlSpec(rate_hz=self.sim_hz, between_steps="linear"),
            joints=self.joints, source=self.source)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(manifest: BundleManifest, folder: Path) -> Path:
    """Write deploy.yaml (version 2 only: a version 1 manifest read from disk lacks the contract)."""
    if manifest.version != BUNDLE_VERSION:
        raise BundleError(f"write_manifest writes version {BUNDLE_VERSION}; this manifest is version "
                          f"{manifest.version} (re-export the bundle)")
    path = Path(folder) / MANIFEST
    path.write_text(yaml.safe_dump(to_dict(manifest), sort_keys=False, default_flow_style=None, width=120))
    return path


_MISSING = re.compile(r"^(.*): \S*__init__\(\) missing \d+ required keyword-only arguments?: (.*)$")


def _one_line(exc: ConfigError) -> str:
    """The config loader's message, with a missing-field TypeError said plainly."""
    msg = str(exc)
    m = _MISSING.match(msg)
    if m:
        fields = m.group(2).replace("'", "").replace(" and ", ", ")
        msg = f"{m.group(1)}: missing field {fields}"
    return msg


def read_manifest(folder: Path) -> BundleManifest:
    """deploy.yaml of `folder`, version 1 or 2; errors are one line naming the file and the field."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        shipped = ", ".join(shipped_bundles()) or "none"
        raise BundleError(f"policy bundle not found: {folder} (expected a folder with {MANIFEST} and policy.onnx, "
                          f"or a shipped bundle: {shipped})")
    if not path.is_file():
        raise BundleError(f"{folder}: not a policy bundle, {MANIFEST} is missing")
    try:
        data = load_yaml(path)
        version = data.get("version")
        if version == 1:
            return from_dict(ManifestV1, data, where=str(path)).to_v2()
        if version != 2:
            raise ConfigError(f"version: {version!r} is not supported (this robolearn reads "
                              f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
        return from_dict(BundleManifest, data, where=str(path))
    except ConfigError as exc:
        msg = _one_line(exc)
        raise BundleError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


# -- running graphs --------------------------------------------------------------------------------------------
class OnnxGraph:
    """One graph of a bundle in onnxruntime (one thread), its declared inputs and outputs checked against the
    model's. `run({input: array}) -> {output: array}` (float32)."""

    def __init__(self, path: Path, spec: GraphSpec) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for malformed models
            raise BundleError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        self.spec = spec
        self._dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs}
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        for kind, declared, actual in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
            for t in declared:
                shape = actual.get(t.name)
                if shape is None or len(shape) != len(t.shape) or any(
                        d > 0 and isinstance(a, int) and a != d for d, a in zip(t.shape, shape, strict=True)):
                    raise BundleError(f"{path}: expected {kind} {t.name!r} of shape {t.shape}, the model has "
                                      f"{actual}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.asarray(v, dtype=self._dtypes.get(k, np.float32)) for k, v in feeds.items()}
        names = [o.name for o in self.spec.outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


class OnnxPolicy(OnnxGraph):
    """The acting graph as a function of its first input: `policy(obs [obs_dim]) -> action [action_dim]` (or a
    chunk [horizon, action_dim]); `batch(obs [B, obs_dim])`."""

    def __init__(self, path: Path, spec: GraphSpec) -> None:
        super().__init__(path, spec)
        self.input, self.output = spec.input, spec.output

    def batch(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: np.asarray(obs, dtype=np.float32)})[0]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.batch(np.asarray(obs, dtype=np.float32)[None])[0]


class ChunkedPolicy:
    """A chunked graph as a one-action-per-call policy: `policy(obs) -> action [action_dim]`. The graph runs when
    the queue is empty, and the first `execute` actions of its chunk are queued; `reset()` empties the queue."""

    def __init__(self, graph: Any, chunk: ChunkSpec) -> None:  # OnnxPolicy, or a DiffusionSampler
        self.graph, self.execute = graph, chunk.execute
        self.queue: deque[np.ndarray] = deque()
        self.calls = 0  # graph evaluations

    def reset(self) -> None:
        self.queue.clear()
        if hasattr(self.graph, "reset"):  # a sampler's previous plan (warm start)
            self.graph.reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        observe = getattr(self.graph, "observe", None)
        if observe is not None:  # a sampler's camera history is current when it plans
            observe(obs)
        if not self.queue:
            chunk = self.graph(obs)
            self.calls += 1
            self.queue.extend(chunk[: self.execute])
        return self.queue.popleft()


@dataclass
class Bundle:
    folder: Path
    manifest: BundleManifest
    policy: Any  # callable obs -> action: OnnxPolicy, or ChunkedPolicy for a chunked graph
    parity_error: float | None  # max |onnxruntime - exporter torch| on the recorded observations
    graphs: dict[str, OnnxGraph] = field(default_factory=dict)  # every graph by name (the acting one included)


def shipped_bundles() -> list[str]:
    """Bundles that ship with robolearn (policies/bundles/<name>/)."""
    root = declarations_root() / "policies" / "bundles"
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def _graph_file(folder: Path, spec: GraphSpec) -> Path:
    path = folder / spec.file
    if not path.is_file():
        raise BundleError(f"{folder}: {spec.file} is missing")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise BundleError(f"{path}: checksum mismatch, sha256 {digest[:16]}... but {MANIFEST} says "
                          f"{spec.sha256[:16]}...; the file was changed or corrupted, re-export the bundle")
    return path


def diffusion_parity(path: Path, sampler: Any, *, tolerance: float | None = None) -> float:
    """A denoiser bundle's parity data: recorded observations (and camera frames) with their initial noise and the
    exporter's (torch, diffusers) chunks; this machine's onnxruntime and sampler must plan the same chunks. Returns
    the max error."""
    data = np.load(path)
    if not {"obs", "noise", "chunks"} <= set(data.files):
        raise BundleError(f"{path}: a diffusion bundle's parity data holds obs, noise and chunks, found "
                          f"{', '.join(data.files)}")
    error = 0.0
    images = data["images"] if "images" in data.files else [None] * len(data["obs"])
    for obs, noise, chunk, frames in zip(data["obs"], data["noise"], data["chunks"], images, strict=True):
        sampler.reset()
        sampler.noise = noise[None]
        for frame in frames if frames is not None else []:  # the camera history, oldest first: [To, K, 3, h, w]
            sampler.observe((obs, list(frame)))
        error = max(error, float(np.abs(sampler(obs) - chunk).max()))
    sampler.noise = None
    sampler.reset()
    tolerance = DIFFUSION_PARITY_TOLERANCE if tolerance is None else tolerance
    if not error <= tolerance:
        raise BundleError(f"{path}: the denoising loop here (onnxruntime + numpy DDIM) differs from the exporter's "
                          f"by {error:.2e} (tolerance {tolerance:.0e})")
    return error


def _parity(path: Path, graph: OnnxPolicy) -> float:
    """max |onnxruntime here - the exporter's torch| on the recorded observations of `path` (obs, actions)."""
    data = np.load(path)
    error = float(np.abs(graph.batch(data["obs"]) - data["actions"]).max())
    if not error <= PARITY_TOLERANCE:
        raise BundleError(f"{path}: onnxruntime here differs from the exporter by {error:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return error


def load_bundle(folder: str | Path) -> Bundle:
    """Read and verify a bundle (a folder, or the name of a shipped one): manifest fields, ONNX checksums,
    model input/output shapes, parity of the acting graph (and of a high level, parity_high_level.npz)."""
    folder = Path(folder)
    if not folder.exists() and len(folder.parts) == 1 and folder.name in shipped_bundles():
        folder = declarations_root() / "policies" / "bundles" / folder.name
    manifest = read_manifest(folder)
    acting = manifest.policy
    graphs: dict[str, OnnxGraph] = {}
    for spec in manifest.graphs:
        path = _graph_file(folder, spec)
        graphs[spec.name] = OnnxPolicy(path, spec) if (spec is acting or spec.role == "high_level") and \
            spec.diffusion is None else OnnxGraph(path, spec)
    parity_error = None
    if acting.diffusion is not None:
        from robolearn.deploy.diffusion import DiffusionSampler

        encoders = {c.graph: graphs[c.graph] for c in acting.diffusion.cameras}
        sampler = DiffusionSampler(graphs[acting.name], acting, encoders=encoders)
        if (folder / PARITY).is_file():
            parity_error = diffusion_parity(folder / PARITY, sampler)
        return Bundle(folder=folder, manifest=manifest, policy=ChunkedPolicy(sampler, acting.chunk),
                      parity_error=parity_error, graphs=graphs)
    onnx_policy = graphs[acting.name]
    if (folder / PARITY).is_file():
        parity_error = _parity(folder / PARITY, onnx_policy)
    high = manifest.graph("high_level")
    if high is not None and (folder / f"parity_{high.name}.npz").is_file():  # the high level's own recordings
        parity_error = max(parity_error or 0.0, _parity(folder / f"parity_{high.name}.npz", graphs[high.name]))
    policy = onnx_policy if acting.chunk is None else ChunkedPolicy(onnx_policy, acting.chunk)
    return Bundle(folder=folder, manifest=manifest, policy=policy, parity_error=parity_error, graphs=graphs)
