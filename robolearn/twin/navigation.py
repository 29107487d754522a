"""The legged twin in a navigation layout: rehearse a waypoint follower (go2-nav) through the deploy runtime, as on
the real robot with a navigation stack, odometry and a map.

`NavTwin` is a `SimRobot` whose scene holds one scenario of the task's layout library (`layout.seed`, scenario
index): the same walls, passage and pillars the task trains with, the robot at the scenario's start facing along
its path. It is also the robot's navigation environment: `base_pose()` is the odometry (ground truth here),
`occupancy()` the map (the layout's occupancy grid, what a map server or a costmap gives), `clearance()` the
overhead clearance under the layout's low ceilings (go2-nav-crouch), `path` the planner's
path (what Nav2 would publish) and `goal`. `collisions` counts control periods with an obstacle (or a ceiling)
touched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import mujoco
import numpy as np

from robolearn.deploy.navigation import yaw_of
from robolearn.errors import ConfigError
from robolearn.planning import ClearanceGrid, OccupancyGrid
from robolearn.sim.tasks import load_task_cfg
from robolearn.sim.tasks.navigation import OPEN, NavigationCfg, add_layout, generate_scenarios
from robolearn.twin.sim_robot import SimRobot

__all__ = ["NavTwin", "Scenario", "load_scenario"]


@dataclass
class Scenario:
    """One scenario of a navigation task's layout library: start and goal (x, y), the planner's path [P, 2], the
    occupancy grid (un-inflated), the obstacle boxes [B, 4] (center x, y, half x, half y), the ceilings [C, 2]
    (center x, clearance) and the overhead clearance on the grid's cells."""

    start: np.ndarray
    goal: np.ndarray
    path: np.ndarray
    grid: OccupancyGrid
    boxes: np.ndarray
    cfg: NavigationCfg
    ceilings: np.ndarray
    clearance: ClearanceGrid


def load_scenario(task: str, scenario: int = 0, layout_seed: int | None = None) -> Scenario:
    """Scenario `scenario` of navigation task `task`'s library drawn from `layout_seed` (default: the task's)."""
    _, cfg = load_task_cfg(task)
    if not isinstance(cfg, NavigationCfg):
        raise ConfigError(f"task {task}: not a navigation task (go2-nav)")
    if layout_seed is not None:
        cfg.layout.seed = layout_seed
    if not 0 <= scenario < cfg.layout.count:
        raise ConfigError(f"scenario: expected 0..{cfg.layout.count - 1} (layout.count of {task}), got {scenario}")
    # scenario k depends only on the draws before it: generating the first k + 1 gives the library's k-th
    lib = generate_scenarios(dataclasses.replace(cfg.layout, count=scenario + 1), cfg.planner)
    return Scenario(start=lib.start[scenario].copy(), goal=lib.goal[scenario].copy(),
                    path=lib.path[scenario, :lib.length[scenario]].copy(),
                    grid=OccupancyGrid(lib.occupied[scenario], lib.resolution, lib.origin),
                    boxes=lib.boxes[scenario].copy(), cfg=cfg, ceilings=lib.ceilings[scenario].copy(),
                    clearance=ClearanceGrid(np.where(lib.clearance[scenario] >= OPEN, np.inf,
                                                     lib.clearance[scenario]), lib.resolution, lib.origin))


class NavTwin(SimRobot):
    """The robot of navigation task `task` in scenario `scenario` of the layout library drawn from `layout_seed`
    (default: the task's, i.e. training layouts; evaluate on held-out ones with another seed)."""

    def __init__(self, task: str, control_dt: float, *, scenario: int = 0, layout_seed: int | None = None,
                 joint_names: list[str] | None = None, lockstep: bool = True) -> None:
        sc = load_scenario(task, scenario, layout_seed)
        cfg, boxes, ceilings = sc.cfg, sc.boxes, sc.ceilings
        self.task, self.task_cfg, self.scenario = task, cfg, scenario
        self.start, self.goal, self.path, self.grid = sc.start, sc.goal, sc.path, sc.grid
        self.ceilings, self.clearance_grid = ceilings, sc.clearance
        self._obstacles = np.zeros(0, dtype=int)  # the settling steps of SimRobot.__init__ count nothing
        self.collisions = 0
        super().__init__(cfg.robot, control_dt, joint_names=joint_names, lockstep=lockstep,
                         scene=lambda spec: add_layout(spec, boxes, cfg, goal_marker=True, goal=tuple(self.goal),
                                                       ceilings=ceilings))
        self._obstacles = np.array([self.model.geom(f"obstacle{i}").id for i in range(len(boxes))]
                                   + [self.model.geom(f"ceiling{i}").id for i in range(len(ceilings))], dtype=int)
        first = self.path[1] - self.path[0] if len(self.path) > 1 else self.goal - self.start
        self.place(self.start, math.atan2(first[1], first[0]))

    def place(self, xy: np.ndarray, yaw: float) -> None:
        """Move the robot (at rest, as it stands) to `xy` facing `yaw`."""
        d = self.data
        d.qpos[0:2] = xy
        d.qpos[3:7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        d.qvel[:] = 0.0
        mujoco.mj_forward(self.model, d)

    def advance(self) -> None:
        super().advance()
        self.collisions += bool(np.isin(self.data.contact.geom[:self.data.ncon], self._obstacles).any())

    # -- the navigation environment (odometry, map): ground truth on the twin --------------------------------
    def base_pose(self) -> tuple[np.ndarray, float]:
        """((x, y, yaw) of the base in the layout's frame, the time it was read)."""
        q = self.data.qpos
        return np.array([q[0], q[1], yaw_of(q[3:7])]), time.monotonic()

    def occupancy(self) -> OccupancyGrid:
        return self.grid

    def clearance(self) -> ClearanceGrid:
        """The overhead clearance on the map's cells (what an elevation map of the ceiling gives)."""
        return self.clearance_grid

    def goal_distance(self) -> float:
        return float(np.linalg.norm(self.data.qpos[0:2] - self.goal))
