"""Following a path on the robot: the subgoal interface of a navigation bundle (`navigation` in deploy.yaml).

A waypoint follower (go2-nav) observes the next path points and the goal in its base's yaw frame, and an
occupancy scan around it. `PathFollower` computes those observation terms on the robot exactly as the training
task does (`robolearn.sim.tasks.navigation`; tests/test_nav_deploy.py checks the two agree on the same state):
a path is resampled every `spacing_m`, progress is the nearest path point within `progress_window` points ahead of
the last progress (it never goes back), the tracked point is the first one at least `lookahead_m` beyond it, and
the scan samples an occupancy grid (a map, or a local costmap) at a grid of points around the base; a follower
trained under low ceilings (go2-nav-crouch) also samples an overhead-clearance grid at the same points.

Where the path comes from is the robot's business: a ROS 2 navigation stack's `nav_msgs/Path` (Nav2's `/plan`,
`robolearn.ros.dds.DdsPathSource`), or the bundle's own high level, `GoalPlanner`: A* on the occupancy grid from
the base to a goal (a `geometry_msgs/PoseStamped`), replanned at the bundle's `replan_hz`. Both are a `path()`
callable for the runtime: `() -> (waypoints [N, 2], stamp) | None`.

Before any path arrives the follower holds a one-point path where Run began: the goal is where the robot stands,
which the policy learned to hold (after reaching a goal, training episodes go on standing).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robolearn.deploy.bundle import NavigationSpec
from robolearn.errors import ConfigError
from robolearn.planning import ClearanceGrid, OccupancyGrid, plan_to_goal, resample

__all__ = ["PathFollower", "GoalPlanner", "NavigationSources", "PoseReading", "PathReading", "scan_points", "yaw_of"]

PoseReading = tuple[np.ndarray, float]  # ((x, y, yaw) in the path's frame, stamp on time.monotonic())
PathReading = tuple[np.ndarray, float]  # (waypoints [N, 2] in the path's frame, stamp)


@dataclass
class NavigationSources:
    """What a waypoint follower reads on the robot, each a callable the runtime polls at the policy rate:
    `pose() -> ((x, y, yaw), stamp) | None` the base in the path's frame (odometry or localization), `path() ->
    (waypoints [N, 2], stamp) | None` the latest path (raising ValueError when the source rejected a malformed one
    since the last call), `grid() -> OccupancyGrid | None` for the occupancy scan and `clearance() ->
    ClearanceGrid | None` for the clearance scan (each needed when the policy observes its scan). Stamps are on
    time.monotonic()."""

    pose: Callable[[], PoseReading | None]
    path: Callable[[], PathReading | None]
    grid: Callable[[], OccupancyGrid | None] | None = None
    clearance: Callable[[], ClearanceGrid | None] | None = None


def scan_points(size: tuple[float, float], resolution: float) -> np.ndarray:
    """[K, 2] (forward, left) points of the scan grid, x-major, centered on the base (as the task's `grid_points`)."""
    nx, ny = (int(round(s / resolution)) + 1 for s in size)
    xs = np.linspace(-size[0] / 2, size[0] / 2, nx, dtype=np.float32)
    ys = np.linspace(-size[1] / 2, size[1] / 2, ny, dtype=np.float32)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float64)


def yaw_of(quat: np.ndarray) -> float:
    """Heading (rad) of the base's forward axis projected on the ground, for the unit quaternion (w, x, y, z)."""
    w, x, y, z = quat
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class PathFollower:
    """The waypoint follower's observation terms on the robot, from a path, the base pose and an occupancy grid."""

    def __init__(self, spec: NavigationSpec) -> None:
        self.spec = spec
        self._scan = scan_points(tuple(spec.scan_size_m), spec.scan_resolution_m)
        self.path = np.zeros((1, 2))
        self.progress = self.tracked = 0
        self.reached = False
        self.goal_distance = 0.0
        self.stamp: float | None = None  # of the path followed (None: the hold path set by `hold`)
        self.xy: np.ndarray | None = None  # the base at the last update
        self.yaw = 0.0

    @property
    def goal(self) -> np.ndarray:
        return self.path[-1]

    def hold(self, xy: np.ndarray) -> None:
        """Stand at `xy`: a one-point path (before any path arrives)."""
        self._start(np.asarray(xy, dtype=float).reshape(1, 2), None)

    def set_path(self, waypoints: np.ndarray, stamp: float, *, spaced: bool = False) -> None:
        """Follow `waypoints` [N, 2] (finite, N >= 1), resampled every `spacing_m` as training paths are (`spaced`:
        they already are, e.g. a training scenario's path; resampling a resampled path moves points at corners).
        The same path sent again (a planner republishing it) only refreshes the stamp; a new one starts from its
        point nearest the base (a replanned path starts where the robot is)."""
        waypoints = np.asarray(waypoints, dtype=float)
        if waypoints.ndim != 2 or waypoints.shape[1] != 2 or len(waypoints) == 0 or not np.isfinite(waypoints).all():
            raise ValueError(f"expected finite waypoints [N >= 1, 2], got shape {waypoints.shape}")
        path = waypoints.copy() if spaced else resample(waypoints, self.spec.spacing_m)
        if self.stamp is not None and path.shape == self.path.shape and np.allclose(path, self.path, atol=1e-6):
            self.stamp = stamp
            return
        self._start(path, stamp)
        if self.xy is not None:
            self.progress = int(np.argmin(np.linalg.norm(path - self.xy, axis=1)))

    def _start(self, path: np.ndarray, stamp: float | None) -> None:
        self.path, self.stamp = path, stamp
        self.progress = self.tracked = 0
        self.reached = False

    def update(self, xy: np.ndarray, yaw: float) -> None:
        """Progress, the tracked point and whether the goal is reached, for the base at `xy` heading `yaw`."""
        s = self.spec
        self.xy, self.yaw = np.asarray(xy, dtype=float), float(yaw)
        distance = np.linalg.norm(self.path - self.xy, axis=1)
        lo, hi = self.progress, min(self.progress + s.progress_window, len(self.path) - 1)
        self.progress = lo + int(np.argmin(distance[lo:hi + 1]))
        ahead = np.flatnonzero(distance[self.progress:] >= s.lookahead_m)
        self.tracked = self.progress + int(ahead[0]) if len(ahead) else len(self.path) - 1
        self.goal_distance = float(distance[-1])
        self.reached = self.reached or self.goal_distance < s.goal_radius_m

    def to_base(self, points: np.ndarray) -> np.ndarray:
        """World points [K, 2] in the base's yaw frame."""
        rel = points - self.xy
        c, si = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack((c * rel[:, 0] + si * rel[:, 1], -si * rel[:, 0] + c * rel[:, 1]), axis=1)

    def waypoints(self) -> np.ndarray:
        """The tracked point and the next ones (`waypoints_observed` in all; past the goal the goal repeats)."""
        k = self.spec.waypoints_observed
        index = np.minimum(self.tracked + np.arange(k), len(self.path) - 1)
        return np.clip(self.to_base(self.path[index]), -self.spec.obs_clip_m, self.spec.obs_clip_m).reshape(-1)

    def goal_pos(self) -> np.ndarray:
        return np.clip(self.to_base(self.goal[None]), -self.spec.obs_clip_m, self.spec.obs_clip_m).reshape(-1)

    def _scan_world(self) -> tuple[np.ndarray, np.ndarray]:
        c, si = math.cos(self.yaw), math.sin(self.yaw)
        px, py = self._scan[:, 0], self._scan[:, 1]
        return self.xy[0] + c * px - si * py, self.xy[1] + si * px + c * py

    def scan(self, grid: OccupancyGrid) -> np.ndarray:
        """1 where a scan point lies in an occupied cell of `grid` or outside it, else 0."""
        return grid.sample(*self._scan_world()).astype(float)

    def clearance_scan(self, grid: ClearanceGrid) -> np.ndarray:
        """The overhead clearance (m) at the scan points, min(clearance, clearance_max_m): clearance_max_m where
        nothing is overhead or outside the grid."""
        return np.minimum(grid.sample(*self._scan_world()), self.spec.clearance_max_m)


class GoalPlanner:
    """The bundle's own high level for a goal without a path: A* on the occupancy grid (inflated by the bundle's
    `planner_inflate_m`) from the base to the latest goal, replanned every 1 / `replan_hz` s and whenever the goal
    changes. Planning runs in its own thread (`start()`; `step()` plans once when due, for callers that own the
    timing), never in the control loop: A* takes milliseconds on a small map and far more on a large one.
    `path()` -> (waypoints, stamp of the plan) | None is the runtime's path source; a goal that cannot be reached
    (outside the grid, in an obstacle, walled off) makes `path()` raise ValueError saying why, once per failed
    plan (the runtime damps), and `last_error` keeps the reason."""

    POLL_S = 0.05  # the thread looks for a new goal this often

    def __init__(self, spec: NavigationSpec, goal: Callable[[], tuple[np.ndarray, float] | None],
                 grid: Callable[[], OccupancyGrid | None], pose: Callable[[], PoseReading | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec, self._goal, self._grid, self._pose, self.clock = spec, goal, grid, pose, clock
        self._latest: PathReading | None = None
        self._planned_goal: np.ndarray | None = None
        self._planned_at = -math.inf
        self._failed = self._raised = 0
        self.last_error: str | None = None
        self.plans = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GoalPlanner:
        """Plan in a daemon thread until `close()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="robolearn-planner", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self.step()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def path(self) -> PathReading | None:
        with self._lock:
            if self._failed > self._raised:
                self._raised = self._failed
                raise ValueError(self.last_error)
            return self._latest

    def step(self) -> None:
        """Plan if the goal changed or 1 / replan_hz passed since the last plan (and a goal, grid and pose exist)."""
        now = self.clock()
        reading, grid, pose = self._goal(), self._grid(), self._pose()
        if reading is None or grid is None or pose is None:
            return
        goal = np.asarray(reading[0], dtype=float)[:2]
        fresh_goal = self._planned_goal is None or not np.allclose(goal, self._planned_goal)
        if not fresh_goal and now - self._planned_at < 1.0 / self.spec.replan_hz:
            return
        self._planned_goal, self._planned_at = goal, now
        try:
            path = plan_to_goal(grid, self.spec.planner_inflate_m, np.asarray(pose[0][:2], dtype=float), goal)
            with self._lock:
                self._latest = (path, self.clock())
                self.plans += 1
        except ConfigError as exc:
            with self._lock:
                self.last_error = f"no plan to goal {goal.round(2).tolist()}: {exc}"
                self._failed += 1
