"""A waypoint follower's sources over DDS (robolearn.deploy.navigation): the base pose, the map, and a path from a
navigation stack or a goal planned here, each a cyclonedds reader of the ROS 2 message a robot's stack publishes.

- base pose: `geometry_msgs/PoseStamped` on `dds.base_pose_topic` (odometry or a localization), turned into
  (x, y, yaw); on the twin, the twin's own (ground truth).
- map: `nav_msgs/OccupancyGrid` on `dds.map_topic` (a map server, a costmap); on the twin without a map topic,
  the layout's grid.
- overhead clearance (a follower trained under low ceilings): `nav_msgs/OccupancyGrid` on `dds.clearance_topic`
  with the clearance in cm per cell (`robolearn.ros.dds.clearance_grid`); on the twin without one, the layout's.
- path: `nav_msgs/Path` on the path topic (Nav2's `/plan`): a path the source rejects (empty, NaN, another frame)
  stops the robot. Or, with a goal topic, `geometry_msgs/PoseStamped` goals planned on the map by the bundle's
  own high level (`GoalPlanner`). With neither, on the twin, the twin's goal is planned the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.deploy.bundle import NavigationSpec
from robolearn.deploy.navigation import GoalPlanner, NavigationSources, PoseReading, yaw_of
from robolearn.deploy.profile import HardwareProfile
from robolearn.errors import ConfigError
from robolearn.planning import ClearanceGrid, OccupancyGrid

__all__ = ["NavigationLink", "navigation_link", "rclpy_navigation_link", "LatestMessage", "PlanPublisher",
           "path_message", "grid_message"]


@dataclass
class NavigationLink:
    """The sources the runtime reads, the goal planner when planning here, and the readers to close."""

    sources: NavigationSources
    planner: GoalPlanner | None = None
    readers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        if self.planner is not None:
            self.planner.close()
        for reader in self.readers:
            reader.close()
        self.readers.clear()


def navigation_link(profile: HardwareProfile, spec: NavigationSpec, *, path_topic: str | None = None,
                    goal_topic: str | None = None, pose: Callable[[], PoseReading | None] | None = None,
                    grid: Callable[[], OccupancyGrid | None] | None = None,
                    clearance: Callable[[], ClearanceGrid | None] | None = None,
                    goal: np.ndarray | None = None) -> NavigationLink:
    """The follower's sources: `pose`, `grid` and `clearance` when given (the twin's), else DDS readers of the
    profile's topics; the path from `path_topic`, or goals from `goal_topic`, or (neither) `goal` planned here."""
    from robolearn.ros.dds import DdsClearanceSource, DdsGridSource, DdsPathSource, DdsPoseSource

    d = profile.dds
    kw = {"domain_id": d.domain_id, "network_interface": d.network_interface or None}
    link = NavigationLink(sources=NavigationSources(pose=lambda: None, path=lambda: None))
    try:
        if pose is None:
            if not d.base_pose_topic:
                raise ConfigError(f"{profile.source}: dds.base_pose_topic: the path follower needs the base pose "
                                  f"(geometry_msgs/PoseStamped from odometry or a localization, in the path's frame)")
            base = DdsPoseSource(d.base_pose_topic, frame_id=d.nav_frame, **kw)
            link.readers.append(base)
            pose = _pose_reader(base.read)
        if d.map_topic:  # the map from DDS, also on the twin (which has its own) when the profile names a topic
            grid_source = DdsGridSource(d.map_topic, frame_id=d.nav_frame, **kw)
            link.readers.append(grid_source)
            grid = _latest_value(grid_source.read)
        if d.clearance_topic:
            clearance_source = DdsClearanceSource(d.clearance_topic, frame_id=d.nav_frame, **kw)
            link.readers.append(clearance_source)
            clearance = _latest_value(clearance_source.read)
        if spec.clearance_max_m > 0 and clearance is None:
            raise ConfigError(f"{profile.source}: dds.clearance_topic: the policy's clearance scan needs the "
                              f"overhead clearance (nav_msgs/OccupancyGrid, cm per cell)")
        if path_topic and goal_topic:
            raise ConfigError("--path-topic and --goal-topic: give one subgoal source, a path or a goal")
        if path_topic:
            path_source = DdsPathSource(path_topic, frame_id=d.nav_frame, **kw)
            link.readers.append(path_source)
            link.sources = NavigationSources(pose=pose, path=path_source.poll, grid=grid, clearance=clearance)
            return link
        if grid is None:
            raise ConfigError(f"{profile.source}: dds.map_topic: planning to a goal needs a map "
                              f"(nav_msgs/OccupancyGrid), or give a path with --path-topic")
        if goal_topic:
            goal_source = DdsPoseSource(goal_topic, frame_id=d.nav_frame, **kw)
            link.readers.append(goal_source)
            goal_reader = goal_source.read
        elif goal is not None:
            fixed = (np.asarray(goal, dtype=float), time.monotonic())

            def goal_reader() -> tuple[np.ndarray, float]:
                return fixed
        else:
            raise ConfigError("the path follower needs a subgoal source: --path-topic (nav_msgs/Path) or "
                              "--goal-topic (geometry_msgs/PoseStamped)")
        link.planner = GoalPlanner(spec, goal_reader, grid, pose).start()
        link.sources = NavigationSources(pose=pose, path=link.planner.path, grid=grid, clearance=clearance)
        return link
    except BaseException:
        link.close()
        raise


class LatestMessage:
    """The latest converted message of an rclpy subscription with its receipt stamp (`on_message` is the callback):
    `read()`, and `poll()` that raises ValueError once per rejected message, as the DDS sources do."""

    def __init__(self, topic: str, convert: Callable[[Any], Any]) -> None:
        self.topic, self._convert = topic, convert
        self._latest: tuple[Any, float] | None = None
        self.received = self.rejected = self._polled = 0
        self.last_error: str | None = None

    def on_message(self, msg: Any) -> None:
        try:
            value = self._convert(msg)
        except ValueError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            return
        self._latest = (value, time.monotonic())
        self.received += 1

    def read(self) -> tuple[Any, float] | None:
        return self._latest

    def poll(self) -> tuple[Any, float] | None:
        if self.rejected > self._polled:
            self._polled = self.rejected
            raise ValueError(f"{self.topic}: {self.last_error}")
        return self._latest


def rclpy_navigation_link(node: Any, profile: HardwareProfile, spec: NavigationSpec) -> NavigationLink:
    """A path follower's sources as rclpy subscriptions on `node` (topics from the profile's `ros2` section): the
    base pose, the map, and the path (`ros2.path_topic`) or, with `ros2.goal_topic`, goals planned on the map.
    The messages are checked by the same functions as over DDS."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import OccupancyGrid as GridMsg
    from nav_msgs.msg import Path
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile

    from robolearn.ros.dds import clearance_grid, occupancy_grid, path_waypoints, pose_array

    r, frame = profile.ros2, profile.ros2.nav_frame
    if not r.base_pose_topic:
        raise ConfigError(f"{profile.source}: ros2.base_pose_topic: the path follower needs the base pose "
                          f"(geometry_msgs/PoseStamped from odometry or a localization, in the path's frame)")
    base = LatestMessage(r.base_pose_topic, lambda m: pose_array(m, frame))
    node.create_subscription(PoseStamped, r.base_pose_topic, base.on_message, 10)
    pose = _pose_reader(base.read)
    grid = None
    if r.map_topic:
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)  # map servers latch /map
        maps = LatestMessage(r.map_topic, lambda m: occupancy_grid(m, frame))
        node.create_subscription(GridMsg, r.map_topic, maps.on_message, latched)
        grid = _latest_value(maps.read)
    clearance = None
    if r.clearance_topic:
        overhead = LatestMessage(r.clearance_topic, lambda m: clearance_grid(m, frame))
        node.create_subscription(GridMsg, r.clearance_topic, overhead.on_message, 10)
        clearance = _latest_value(overhead.read)
    if spec.clearance_max_m > 0 and clearance is None:
        raise ConfigError(f"{profile.source}: ros2.clearance_topic: the policy's clearance scan needs the overhead "
                          f"clearance (nav_msgs/OccupancyGrid, cm per cell)")
    if r.goal_topic:
        if grid is None:
            raise ConfigError(f"{profile.source}: ros2.map_topic: planning to a goal needs a map")
        goals = LatestMessage(r.goal_topic, lambda m: pose_array(m, frame))
        node.create_subscription(PoseStamped, r.goal_topic, goals.on_message, 10)
        planner = GoalPlanner(spec, goals.read, grid, pose).start()
        return NavigationLink(sources=NavigationSources(pose=pose, path=planner.path, grid=grid, clearance=clearance),
                              planner=planner)
    paths = LatestMessage(r.path_topic, lambda m: path_waypoints(m, frame))
    node.create_subscription(Path, r.path_topic, paths.on_message, 10)
    return NavigationLink(sources=NavigationSources(pose=pose, path=paths.poll, grid=grid, clearance=clearance))


def _latest_value(read: Callable[[], tuple[Any, float] | None]) -> Callable[[], Any]:
    """A source's (value, stamp) readings -> its latest value (None before the first): maps, whose age the
    runtime does not check."""

    def value() -> Any:
        reading = read()
        return None if reading is None else reading[0]

    return value


def _pose_reader(read: Callable[[], tuple[np.ndarray, float] | None]) -> Callable[[], PoseReading | None]:
    """(x, y, z, qw, qx, qy, qz) readings -> (x, y, yaw) readings."""

    def pose() -> PoseReading | None:
        reading = read()
        if reading is None:
            return None
        p, stamp = reading
        return np.array([p[0], p[1], yaw_of(p[3:7])]), stamp

    return pose


# -- the other side: a navigation stack's messages (rehearsals on the twin, tests) ------------------------------
def path_message(waypoints: np.ndarray, frame: str) -> Any:
    """nav_msgs/Path of `waypoints` [N, 2] in `frame` (orientations identity, z 0)."""
    from robolearn.ros.dds_types import Header_, Path_, Point_, Pose_, PoseStamped_

    header = Header_(frame_id=frame)
    return Path_(header=header, poses=[PoseStamped_(header=header, pose=Pose_(position=Point_(float(x), float(y), 0.0)))
                                       for x, y in np.asarray(waypoints, dtype=float)])


def grid_message(grid: OccupancyGrid | ClearanceGrid, frame: str) -> Any:
    """nav_msgs/OccupancyGrid of `grid` in `frame`: 100 where occupied, 0 free; or, for a ClearanceGrid, the
    clearance in cm (at most 126; nothing overhead: CLEARANCE_OPEN_CM)."""
    from robolearn.ros.dds import CLEARANCE_OPEN_CM
    from robolearn.ros.dds_types import Header_, MapMetaData_, OccupancyGrid_, Point_, Pose_

    rows, cols = grid.shape
    info = MapMetaData_(resolution=grid.resolution, width=cols, height=rows,
                        origin=Pose_(position=Point_(grid.origin[0], grid.origin[1], 0.0)))
    if isinstance(grid, ClearanceGrid):
        cm = np.where(np.isfinite(grid.clearance), np.minimum(np.round(grid.clearance * 100.0), 126),
                      CLEARANCE_OPEN_CM)
        data = cm.astype(np.int8).reshape(-1).tolist()
    else:
        data = np.where(grid.occupied, 100, 0).astype(np.int8).reshape(-1).tolist()
    return OccupancyGrid_(header=Header_(frame_id=frame), info=info, data=data)


class PlanPublisher:
    """Publishes a path (nav_msgs/Path on `path_topic`) and optionally a map (nav_msgs/OccupancyGrid on
    `map_topic`) and the overhead clearance (on `clearance_topic`, cm per cell) over DDS, as a navigation stack
    does: a stand-in for Nav2 when rehearsing on the twin."""

    def __init__(self, path_topic: str, *, frame: str = "odom", map_topic: str = "", clearance_topic: str = "",
                 domain_id: int = 0, network_interface: str | None = None) -> None:
        from robolearn.ros.dds import dds_topic, make_writer, participant
        from robolearn.ros.dds_types import OccupancyGrid_, Path_

        dp = participant(domain_id, network_interface)
        self.frame = frame
        self._path = make_writer(dp, dds_topic(path_topic), Path_)
        self._map = make_writer(dp, dds_topic(map_topic), OccupancyGrid_) if map_topic else None
        self._clearance = make_writer(dp, dds_topic(clearance_topic), OccupancyGrid_) if clearance_topic else None
        self.sent = 0

    def publish(self, waypoints: np.ndarray, grid: OccupancyGrid | None = None,
                clearance: ClearanceGrid | None = None) -> None:
        if grid is not None and self._map is not None:
            self._map.write(grid_message(grid, self.frame))
        if clearance is not None and self._clearance is not None:
            self._clearance.write(grid_message(clearance, self.frame))
        self._path.write(path_message(waypoints, self.frame))
        self.sent += 1
