"""Hardware profiles (`hardware/<robot>.yaml`): one real robot's joints, rates, gains, limits and transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robolearn.config import declarations_root, from_dict, load_yaml
from robolearn.errors import ConfigError

__all__ = ["StandCfg", "SafetyFilterCfg", "SafetyCfg", "SimTransportCfg", "Ros2Cfg", "DdsCfg", "ImpedanceCfg",
           "HardwareProfile", "profile_names", "load_profile"]


@dataclass(kw_only=True)
class StandCfg:
    duration_s: float = 2.0  # ramp from the measured pose to the default pose
    kp: float | None = None  # default: the bundle's gains
    kd: float | None = None


SELECTIONS = ("lowest_risk", "closest_safe")  # how the safety filter picks a candidate (SafetyFilterCfg.selection)
SHRINK_TOWARD = ("default", "measured")  # where its shrunk candidates head (SafetyFilterCfg.shrink_toward)


@dataclass(kw_only=True)
class SafetyFilterCfg:
    """The learned safety filter (deploy/safety_filter.py), active when the bundle has a safety_critic graph."""

    enabled: bool = True  # false: the critic graph is loaded and checked but not run
    threshold: float = 0.2  # Q_risk of the executed action above this -> a candidate replaces it (or Damp)
    shrink_steps: int = 4  # candidates: the action scaled toward the default pose by (n-1)/n, ..., 0
    random_candidates: int = 12  # and Gaussian perturbations of it
    noise: float = 0.3  # their standard deviation, in action units
    # which candidate replaces a risky action: lowest_risk (the safest), or closest_safe (the one nearest the
    # commanded action among those under the threshold: the least intervention, e.g. easing a pressing arm instead
    # of lifting it); either damps when no candidate is under the threshold
    selection: str = "lowest_risk"
    # where the shrunk candidates head: default (0: the default pose) or measured (the action that holds the joints
    # where they are measured: under a joint impedance the pushing force scales down with the shrink; for a
    # pressing arm, moving toward the default pose can first push harder)
    shrink_toward: str = "default"
    impedance_threshold: float = 0.1  # risk above this lowers the joint gains (impedance)...
    impedance_scale: float = 0.5  # ...to this fraction...
    impedance_recover_s: float = 0.5  # ...ramping back to full over this long once the risk is below it

    def __post_init__(self) -> None:
        for name in ("threshold", "impedance_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"safety.filter.{name}: expected a risk in [0, 1], got {getattr(self, name)}")
        if self.shrink_steps < 1 or self.random_candidates < 0:
            raise ConfigError(f"safety.filter: shrink_steps must be >= 1 and random_candidates >= 0, got "
                              f"{self.shrink_steps} and {self.random_candidates}")
        if self.shrink_toward not in SHRINK_TOWARD:
            raise ConfigError(f"safety.filter.shrink_toward: expected one of {', '.join(SHRINK_TOWARD)}, got "
                              f"{self.shrink_toward!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"safety.filter.selection: expected one of {', '.join(SELECTIONS)}, got "
                              f"{self.selection!r}")
        if not 0.0 < self.impedance_scale <= 1.0 or self.noise < 0 or self.impedance_recover_s < 0:
            raise ConfigError(f"safety.filter: impedance_scale must be in (0, 1], noise and impedance_recover_s "
                              f">= 0; got {self.impedance_scale}, {self.noise}, {self.impedance_recover_s}")


@dataclass(kw_only=True)
class SafetyCfg:
    state_timeout_ms: float = 20.0  # no new robot state for this long -> Damp
    policy_timeout_ms: float = 60.0  # no new policy action for this long while running -> Damp
    max_tilt_deg: float = 60.0  # legged robots: body tilt beyond this -> Damp
    joint_limit_margin: float = 0.1  # rad: a measured joint beyond its range by more -> Damp
    target_limit_margin: float = 0.5  # rad: targets are clamped into the range; asked beyond it by more -> Damp
    velocity_limit_scale: float = 1.0  # measured |dq| above this times the URDF velocity limit -> Damp
    torque_limit_scale: float = 1.0  # PD targets are clipped so kp, kd torque stays within this times the limit
    max_target_rate: float = 20.0  # rad/s: how fast a joint target may move (rate limit)
    joint_target_rates: dict[str, float] = field(default_factory=dict)  # joint regex -> rate (rad/s or m/s), for
    # joints slower than max_target_rate (a gripper's fingers)
    object_timeout_ms: float = 200.0  # an observed object's pose older than this while running -> Damp
    camera_timeout_ms: float = 200.0  # an image policy's newest camera frame older than this while running -> Damp
    pose_timeout_ms: float = 200.0  # a waypoint follower's base pose (odometry) older than this while running -> Damp
    path_timeout_ms: float = 3000.0  # the followed path older than this before its goal is reached -> Damp (0: never;
    # a navigation stack republishes its plan as it replans, Nav2 at 1 Hz by default)
    first_state_timeout_s: float = 3.0  # no robot state at all this long after start -> the session ends (exit 4)
    filter: SafetyFilterCfg = field(default_factory=SafetyFilterCfg)

    def __post_init__(self) -> None:
        if not self.first_state_timeout_s > 0:
            raise ConfigError(f"safety.first_state_timeout_s: expected seconds > 0, got {self.first_state_timeout_s}")


@dataclass(kw_only=True)
class SimTransportCfg:
    start: Literal["lying", "standing"] = "standing"
    start_pose: dict[str, float] | None = None  # joint regex -> rad (lying pose); default: the default pose


@dataclass(kw_only=True)
class Ros2Cfg:
    joint_states_topic: str = "/joint_states"
    imu_topic: str | None = None
    cmd_vel_topic: str = "/cmd_vel"
    command_interface: Literal["position", "trajectory"] = "position"
    command_topic: str = "/forward_position_controller/commands"  # Float64MultiArray (forward_command_controller)
    trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory"
    # A path follower's inputs, as for DDS (dds.base_pose_topic, ...): pose, map, path or goal, their frame
    base_pose_topic: str = ""
    map_topic: str = ""
    clearance_topic: str = ""  # a follower with a clearance scan: overhead clearance as nav_msgs/OccupancyGrid (cm)
    path_topic: str = "/plan"
    goal_topic: str = ""
    nav_frame: str = ""


@dataclass(kw_only=True)
class DdsCfg:
    protocol: Literal["unitree", "ros2"] = "ros2"
    domain_id: int = 0
    network_interface: str = "lo"  # the robot's NIC on hardware (e.g. eth0); lo for rehearsals
    state_topic: str = ""  # default per protocol: rt/lowstate or rt/joint_states
    command_topic: str = ""  # default per protocol: rt/lowcmd or rt/<controller>/commands
    imu_topic: str = ""  # protocol ros2 (sensor_msgs/Imu); default: ros2.imu_topic. unitree: inside rt/lowstate
    cmd_vel_topic: str = "rt/cmd_vel"
    object_topic: str = ""  # geometry_msgs/PoseStamped of the manipulated object (a policy observing object_pose)
    object_frame: str = ""  # the frame_id its poses must carry (the robot's base frame); "" accepts any
    # A waypoint follower (a bundle with `navigation`): the base pose (geometry_msgs/PoseStamped from odometry or
    # a localization), the map for its scan (nav_msgs/OccupancyGrid), a path (nav_msgs/Path, e.g. Nav2's /plan) or
    # a goal (geometry_msgs/PoseStamped, planned here on the map), all in the frame `nav_frame` ("" accepts any).
    # A follower trained under low ceilings also reads the overhead clearance on `clearance_topic`: a
    # nav_msgs/OccupancyGrid whose cells hold the clearance in cm (0..126; 127 or -1: nothing overhead).
    base_pose_topic: str = ""
    map_topic: str = ""
    clearance_topic: str = ""
    path_topic: str = "rt/plan"
    goal_topic: str = "rt/goal_pose"
    nav_frame: str = ""


@dataclass(kw_only=True)
class ImpedanceCfg:
    stiffness: list[float] = field(default_factory=lambda: [400.0, 400.0, 400.0, 30.0, 30.0, 30.0])  # N/m, N m/rad
    damping_ratio: float = 1.0
    nullspace_stiffness: float = 10.0


@dataclass(kw_only=True)
class ThreadsCfg:
    """Where the control loop and the policy thread run (Linux CPU affinity; elsewhere ignored). With `pin`, the
    control loop (the thread calling spin) keeps `control_cpus` and the policy thread `policy_cpus`, so a long
    inference (a diffusion policy's denoising loop) never competes with a control tick for a core; the defaults
    give the policy the last allowed CPU and the control loop the others. Measured on the 2-core machine (panda
    twin, 480 Hz, 10 DDIM steps per chunk): 4.6 overruns per 10 s unpinned, 0.7 pinned."""

    pin: bool = False
    control_cpus: list[int] | None = None
    policy_cpus: list[int] | None = None


@dataclass(kw_only=True)
class HardwareProfile:
    name: str
    description: str
    kind: Literal["legged", "arm"]
    model: str  # sim/robots/<model>.yaml: the simulated twin and the arm kinematics
    joint_names: list[str]  # the robot's own joint (motor) order
    control_hz: float = 500.0
    damping_kd: float = 1.0  # Damp: kp = 0, this kd on every joint
    # Damp on a position-only interface (ros2_control forward/trajectory controllers, servos) cannot be kp 0: the
    # runtime sends the measured position (a hold) for this long, then stops publishing (the controller keeps
    # its last target; torque-off is the driver's e-stop).
    damp_hold_s: float = 5.0
    stand: StandCfg = field(default_factory=StandCfg)
    safety: SafetyCfg = field(default_factory=SafetyCfg)
    sim: SimTransportCfg = field(default_factory=SimTransportCfg)
    ros2: Ros2Cfg = field(default_factory=Ros2Cfg)
    dds: DdsCfg = field(default_factory=DdsCfg)
    impedance: ImpedanceCfg | None = None
    threads: ThreadsCfg = field(default_factory=ThreadsCfg)
    source: str = ""

    def __post_init__(self) -> None:
        if self.control_hz <= 0:
            raise ConfigError(f"{self.source}: control_hz must be positive, got {self.control_hz}")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ConfigError(f"{self.source}: joint_names has duplicates")
        if not self.damp_hold_s >= 0:
            raise ConfigError(f"{self.source}: damp_hold_s: expected seconds >= 0, got {self.damp_hold_s}")


def _profiles_dir() -> Path:
    return declarations_root() / "hardware"


def profile_names() -> list[str]:
    return sorted(p.stem for p in _profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """A profile by name (`go2`) or by the path of its YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _profiles_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown hardware profile {str(name_or_path)!r}; valid profiles: "
                              f"{', '.join(profile_names())}")
    data = load_yaml(path)
    data.setdefault("source", str(path))
    return from_dict(HardwareProfile, data, where=str(path))
