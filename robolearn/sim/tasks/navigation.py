"""Goal navigation for a legged robot among obstacles (`go2-nav`): a planner's waypoints, tracked by a learned
locomotion policy end to end (joint targets from waypoints, proprioception and a local occupancy scan).

Layouts: an arena `layout.size` = (length along x, width along y) m closed by walls, crossed by `layout.walls`
walls with one passage each (`passage_width`), and up to `layout.pillars` square pillars. A library of
`layout.count` scenarios (layout, start, goal, planned path) is generated once from `layout.seed` when the task is
built (numpy, `robolearn.planning`); a reset draws a scenario per env and moves that env's obstacle geoms there
(per-env `geom_pos`), so resets are batched tensor work with no planning and no per-env Python. Evaluation on
held-out layouts is the same task with another `layout.seed`.

Low ceilings (`layout.ceilings`, go2-nav-crouch): slabs across the arena's whole width, their underside
`ceiling_clearance` above the ground, lower than the standing robot's top. The library keeps an overhead-clearance
grid beside the occupancy grid; the policy observes it as `clearance_scan` on the scan's points. Under and just
before a ceiling (`body_reach` along the heading) the base-height target drops to the clearance less the body's top
(read from the model) and `crouch_margin`, which the `base_height` and `crouch` reward terms score. A ceiling lower
than `planner.min_clearance` is an obstacle for the planner.

Paths: `planner.kind: astar` plans on the layout's occupancy grid inflated by `planner.inflate` (the robot's
half-width plus a margin), shortcuts and resamples it every `planner.spacing` m; `straight` is the segment from start
to goal (the flat end-to-end baseline: the same observations, no planner). The tracked point is the first path
point at least `lookahead` m away at or beyond the nearest one (pure pursuit; progress along the path never goes
back). The policy observes the next `waypoints_observed` path points from it and the goal, in the base's yaw frame.

Commands: `command_source: path` computes a velocity command (vx, 0, yaw rate) toward the tracked point every step
(pure pursuit, slowing near the goal, zero once reached); the locomotion reward terms (`tracking_lin_vel`, ...)
score the robot against it, which shapes the reward without giving the policy the command. `external`: the commands
are set from outside (a high level driving a frozen velocity skill, robolearn.learn.hierarchical) and zeroed on
resets.

An episode succeeds when the base comes within `goal_radius` of the goal at any step; the robot is then commanded
to stand there until the episode times out. Touching anything with the body (`base_contact`: an obstacle or the
ground) or tilting over ends it as a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.planning import OccupancyGrid, plan_path, resample
from robolearn.sim.math import quat_rotate, sample_uniform, yaw_points_to_world, yaw_quat
from robolearn.sim.tasks.base import ObsTermCfg, ScanGridCfg
from robolearn.sim.tasks.locomotion import LocomotionCfg, LocomotionTask

__all__ = ["LayoutCfg", "PlannerCfg", "ScanCfg", "NavigationCfg", "NavigationTask", "Scenarios",
           "generate_scenarios", "add_layout"]

Range = tuple[float, float]
_OBSTACLE_RGBA = [0.62, 0.52, 0.42, 1.0]
_CEILING_RGBA = [0.45, 0.55, 0.7, 0.55]  # translucent: top-down videos show the robot under it


@dataclass(kw_only=True)
class LayoutCfg:
    size: tuple[float, float] = (6.0, 3.0)  # m: arena length (x, start -> goal) and width (y, centered on 0)
    walls: int = 1  # walls across the arena, evenly spaced along x, each with one passage
    passage_width: Range = (0.8, 1.1)  # m
    pillars: int = 4  # at most this many square pillars per layout (the count is uniform in 0..pillars)
    pillar_size: float = 0.3  # m, side
    height: float = 0.5  # m, obstacle height
    thickness: float = 0.1  # m, walls
    clearance: float = 0.8  # m: pillars keep at least this far from the start and the goal
    margin: float = 0.6  # m: start and goal lie this far inside the arena's ends
    ceilings: int = 0  # at most this many low ceilings per layout (the count is uniform in 0..ceilings): slabs
    #                    across the arena's whole width, too low to walk under standing (the robot must crouch)
    ceiling_clearance: Range = (0.31, 0.35)  # m from the ground to a ceiling's underside
    ceiling_length: float = 0.6  # m along x
    ceiling_thickness: float = 0.05  # m
    count: int = 512  # scenarios in the library
    seed: int = 0  # of the library: evaluate on held-out layouts with another seed

    def __post_init__(self) -> None:
        length, width = self.size
        if not (length > 2 * self.margin > 0 and width > 0):
            raise ConfigError(f"layout.size must be > 0 and longer than 2 x layout.margin, got {list(self.size)}, "
                              f"margin {self.margin}")
        if self.walls < 0 or self.pillars < 0 or self.count < 1:
            raise ConfigError(f"layout.walls and layout.pillars must be >= 0 and layout.count >= 1, got "
                              f"{self.walls}, {self.pillars}, {self.count}")
        lo, hi = self.passage_width
        if not 0 < lo <= hi < width:
            raise ConfigError(f"layout.passage_width must satisfy 0 < low <= high < width ({width}), got [{lo}, {hi}]")
        if min(self.pillar_size, self.height, self.thickness) <= 0:
            raise ConfigError("layout.pillar_size, layout.height and layout.thickness must be > 0")
        lo, hi = self.ceiling_clearance
        if self.ceilings < 0 or not 0 < lo <= hi or min(self.ceiling_length, self.ceiling_thickness) <= 0:
            raise ConfigError(f"layout: ceilings must be >= 0, ceiling_clearance 0 < low <= high, ceiling_length and "
                              f"ceiling_thickness > 0; got {self.ceilings}, [{lo}, {hi}], {self.ceiling_length}, "
                              f"{self.ceiling_thickness}")


@dataclass(kw_only=True)
class PlannerCfg:
    kind: Literal["astar", "straight"] = "astar"
    resolution: float = 0.1  # m per occupancy cell
    inflate: float = 0.25  # m: obstacles grow by this before planning (the robot planned as a point)
    spacing: float = 0.3  # m between path points
    max_points: int = 64  # path points kept per scenario (a longer path is cut: its last point is the goal)
    min_clearance: float = 0.0  # m: cells under a ceiling lower than this are obstacles (the lowest the robot
    #                             passes crouching); 0: ceilings never block

    def __post_init__(self) -> None:
        if self.kind not in ("astar", "straight"):
            raise ConfigError(f"planner.kind must be 'astar' or 'straight', got {self.kind!r}")
        if (self.resolution <= 0 or self.inflate < 0 or self.spacing <= 0 or self.max_points < 2
                or self.min_clearance < 0):
            raise ConfigError("planner: resolution and spacing must be > 0, inflate and min_clearance >= 0, "
                              "max_points >= 2")


@dataclass(kw_only=True)
class ScanCfg(ScanGridCfg):
    """A grid of occupancy samples around the base, aligned with its yaw: 1 where an obstacle (or the outside of the
    arena) is, else 0."""

    size: tuple[float, float] = (1.6, 1.2)  # m along the base's forward and left axes, centered on it
    resolution: float = 0.2  # m between points
    max_clearance: float = 0.5  # m: the clearance scan reads min(overhead clearance, this) (no ceiling: this)


@dataclass(kw_only=True)
class NavigationCfg(LocomotionCfg):
    layout: LayoutCfg = field(default_factory=LayoutCfg)
    planner: PlannerCfg = field(default_factory=PlannerCfg)
    scan: ScanCfg = field(default_factory=ScanCfg)
    command_source: Literal["path", "external"] = "path"
    speed: float = 0.7  # m/s, pursuit speed
    lookahead: float = 0.6  # m
    yaw_gain: float = 2.0  # rad/s per rad of heading error (clipped to the yaw-rate command range)
    slow_radius: float = 0.8  # m: the pursuit speed falls linearly to 0 at the goal inside this distance
    goal_radius: float = 0.4  # m: success
    start_yaw_noise: float = 1.0  # rad around the heading of the path's first segment
    waypoints_observed: int = 2
    obs_clip: float = 3.0  # m: observed waypoint and goal coordinates are clipped to +- this
    crouch_margin: float = 0.03  # m: under a ceiling the base-height target is the clearance over the body minus
    #                              the body's top (above the base frame) minus this
    body_reach: tuple[float, float] = (-0.2, 0.8)  # m behind and ahead of the base along its heading where the
    #                                                 clearance over the body is read (the trunk plus a preview)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.command_source not in ("path", "external"):
            raise ConfigError(f"command_source must be 'path' or 'external', got {self.command_source!r}")
        if min(self.speed, self.lookahead, self.goal_radius, self.obs_clip) <= 0 or self.waypoints_observed < 1:
            raise ConfigError("speed, lookahead, goal_radius and obs_clip must be > 0 and waypoints_observed >= 1")
        if self.layout.ceilings and self.layout.ceiling_clearance[0] < self.planner.min_clearance:
            raise ConfigError(f"layout.ceiling_clearance {list(self.layout.ceiling_clearance)} goes below "
                              f"planner.min_clearance {self.planner.min_clearance}: a ceiling across the whole "
                              f"arena would close every layout")


@dataclass
class Scenarios:
    """The scenario library, numpy: obstacle boxes `boxes` [S, B, 4] (center x, y, half x, half y; hidden ones far
    away), `start`/`goal` [S, 2], `path` [S, P, 2] (padded with the goal), `length` [S] points per path,
    `occupied` [S, rows, cols] (the un-inflated grid), the grid's `origin` and `resolution`; `ceilings` [S, C, 2]
    (center x, clearance; hidden ones far away) and `clearance` [S, rows, cols] (m under a ceiling, OPEN where none)."""

    boxes: np.ndarray
    start: np.ndarray
    goal: np.ndarray
    path: np.ndarray
    length: np.ndarray
    occupied: np.ndarray
    origin: tuple[float, float]
    resolution: float
    ceilings: np.ndarray
    clearance: np.ndarray


_HIDDEN = 100.0  # m: x of obstacles a layout does not use
OPEN = 10.0  # m: the clearance where no ceiling is


def _box_count(layout: LayoutCfg) -> int:
    return 4 + 2 * layout.walls + layout.pillars  # arena walls, two pieces per crossing wall, pillars


def ceiling_z(layout: LayoutCfg, clearance: float) -> float:
    """The height of a ceiling slab's center for its `clearance` (underside above the ground)."""
    return clearance + layout.ceiling_thickness / 2


def add_layout(spec: mujoco.MjSpec, boxes: np.ndarray, cfg: NavigationCfg, *, goal_marker: bool,
               goal: tuple[float, float] = (0.0, 0.0), ceilings: np.ndarray | None = None) -> None:
    """Obstacle geoms `obstacle{i}` for `boxes` [B, 4] (center x, y, half x, half y) of `cfg.layout.height`,
    ceiling slabs `ceiling{i}` for `ceilings` [C, 2] (center x, clearance) across the arena, and optionally a goal
    disc (a mocap body `goal`, no physics) at `goal`."""
    layout = cfg.layout
    h = layout.height / 2
    for i, (x, y, hx, hy) in enumerate(boxes):
        spec.worldbody.add_geom(name=f"obstacle{i}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[x, y, h],
                                size=[hx, hy, h], contype=1, conaffinity=1, rgba=_OBSTACLE_RGBA)
    half_y = layout.size[1] / 2 + layout.thickness
    for i, (x, clearance) in enumerate(np.zeros((0, 2)) if ceilings is None else ceilings):
        spec.worldbody.add_geom(name=f"ceiling{i}", type=mujoco.mjtGeom.mjGEOM_BOX,
                                pos=[x, 0.0, ceiling_z(layout, clearance)],
                                size=[layout.ceiling_length / 2, half_y, layout.ceiling_thickness / 2],
                                contype=1, conaffinity=1, rgba=_CEILING_RGBA)
    if goal_marker:
        body = spec.worldbody.add_body(name="goal", mocap=True, pos=[goal[0], goal[1], 0.005])
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[cfg.goal_radius, 0.005, 0],
                      contype=0, conaffinity=0, rgba=[0.2, 0.8, 0.3, 0.6])


def generate_scenarios(layout: LayoutCfg, planner: PlannerCfg) -> Scenarios:
    """`layout.count` scenarios from `layout.seed`: obstacles, start, goal and the planned path of each. A layout
    whose pillars close every way through loses its pillars (the passages alone always leave one)."""
    rng = np.random.default_rng(layout.seed)
    length, width = layout.size
    t, half_w = layout.thickness, width / 2
    res = planner.resolution
    origin = (-t - res, -half_w - t - res)
    grid_size = (length + 2 * (t + res), width + 2 * (t + res))
    arena = [(length / 2, -half_w - t / 2, length / 2 + t, t / 2), (length / 2, half_w + t / 2, length / 2 + t, t / 2),
             (-t / 2, 0.0, t / 2, half_w + t), (length + t / 2, 0.0, t / 2, half_w + t)]
    big = length + width  # the outside of the arena, as occupied in the grid (the scan reads it so)
    outside = [(-big, -big, 0.0, big), (length, -big, big, big), (-big, -big, big, -half_w), (-big, half_w, big, big)]
    walls_x = [length * (i + 1) / (layout.walls + 1) for i in range(layout.walls)]
    p = layout.pillar_size / 2
    # ceilings: clear of the start and the goal by layout.clearance; their cells in the clearance grid
    half_c = layout.ceiling_length / 2
    ceiling_x = (layout.margin + layout.clearance + half_c, length - layout.margin - layout.clearance - half_c)
    if layout.ceilings and ceiling_x[0] > ceiling_x[1]:
        raise ConfigError(f"layout: no room for a ceiling of length {layout.ceiling_length} between the start and "
                          f"the goal ({layout.clearance} m from each)")
    rows, cols = (int(math.ceil(s / res - 1e-9)) for s in (grid_size[1], grid_size[0]))
    cell_x = origin[0] + (np.arange(cols) + 0.5) * res
    boxes, starts, goals, paths, lengths, grids, ceilings, clearances = [], [], [], [], [], [], [], []
    for _ in range(layout.count):
        scene = list(arena)
        for x in walls_x:
            gap = rng.uniform(*layout.passage_width)
            center = rng.uniform(-half_w + gap / 2, half_w - gap / 2)
            # two pieces, each as wide as the arena, meeting the passage's edges
            scene.append((x, center + gap / 2 + half_w, t / 2, half_w))
            scene.append((x, center - gap / 2 - half_w, t / 2, half_w))
        start = np.array([layout.margin, rng.uniform(-half_w + 0.4, half_w - 0.4)])
        goal = np.array([length - layout.margin, rng.uniform(-half_w + 0.4, half_w - 0.4)])
        pillars = []
        for _ in range(int(rng.integers(0, layout.pillars + 1))):
            xy = np.array([rng.uniform(p, length - p), rng.uniform(-half_w + p, half_w - p)])
            near_end = min(np.linalg.norm(xy - start), np.linalg.norm(xy - goal)) < layout.clearance
            on_wall = any(abs(xy[0] - x) < p + t / 2 + 0.05 for x in walls_x)
            if not (near_end or on_wall):
                pillars.append((xy[0], xy[1], p, p))
        # drawn after everything else (and only with layout.ceilings): layouts without ceilings stay as they were
        slabs = [(rng.uniform(*ceiling_x), rng.uniform(*layout.ceiling_clearance))
                 for _ in range(int(rng.integers(0, layout.ceilings + 1)) if layout.ceilings else 0)]
        clearance = np.full((rows, cols), OPEN)
        for x, c in slabs:  # every cell the slab overlaps
            under = np.abs(cell_x - x) < half_c + res / 2
            clearance[:, under] = np.minimum(clearance[:, under], c)
        blocking = [(x - half_c, -big, x + half_c, big) for x, c in slabs if c < planner.min_clearance]
        path = None
        for kept in (pillars, []):
            grid = OccupancyGrid.from_boxes([(x - hx, y - hy, x + hx, y + hy) for x, y, hx, hy in scene + kept]
                                            + outside + blocking, grid_size, res, origin)
            try:
                path = plan_path(grid.inflate(planner.inflate), start, goal)
            except ConfigError:
                continue
            pillars = kept
            break
        if path is None:
            raise ConfigError(f"layout: no path through a layout without pillars (passage_width "
                              f"{list(layout.passage_width)} is too narrow for planner.inflate {planner.inflate})")
        if planner.kind == "straight":
            path = np.stack([start, goal])
        points = resample(path, planner.spacing)[:planner.max_points]
        points[-1] = goal
        hidden = [(_HIDDEN, 0.0, p, p)] * (layout.pillars - len(pillars))
        boxes.append(scene + pillars + hidden)
        starts.append(start)
        goals.append(goal)
        lengths.append(len(points))
        paths.append(np.concatenate([points, np.repeat(goal[None], planner.max_points - len(points), axis=0)]))
        grids.append(grid.occupied)
        ceilings.append(slabs + [(_HIDDEN, OPEN)] * (layout.ceilings - len(slabs)))
        clearances.append(clearance.astype(np.float32))
    return Scenarios(np.asarray(boxes, dtype=np.float64), np.asarray(starts), np.asarray(goals), np.asarray(paths),
                     np.asarray(lengths), np.asarray(grids), grid.origin, res,
                     np.asarray(ceilings, dtype=np.float64).reshape(layout.count, layout.ceilings, 2),
                     np.asarray(clearances))


class NavigationTask(LocomotionTask):
    """`locomotion` in obstacle layouts with a goal. Policy observations: base angular velocity, projected gravity,
    the next waypoints and the goal (base yaw frame), joint positions and velocities, last action, occupancy scan
    (and, with ceilings, the clearance scan);
    privileged adds the clean policy group, base velocity, height, the randomized physics, foot contacts and the
    pursuit command."""

    cfg_cls = NavigationCfg
    cfg: NavigationCfg

    def __init__(self, cfg: NavigationCfg, num_envs: int, **kwargs: Any) -> None:
        self.scenarios = generate_scenarios(cfg.layout, cfg.planner)  # before the scene: it sizes the obstacles
        super().__init__(cfg, num_envs, **kwargs)

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        super().add_to_scene(spec, render)
        add_layout(spec, self.scenarios.boxes[0], self.cfg, goal_marker=render, ceilings=self.scenarios.ceilings[0])

    def setup(self) -> None:
        super().setup()
        n, dev, s = self.num_envs, self.device, self.scenarios
        self._geom_ids = torch.tensor([self.model.geom(f"obstacle{i}").id for i in range(s.boxes.shape[1])],
                                      device=dev)
        self._lib_geom_xy = torch.as_tensor(s.boxes[:, :, :2], dtype=torch.float64, device=dev)  # [S, B, 2]
        self._ceiling_ids = torch.tensor([self.model.geom(f"ceiling{i}").id for i in range(s.ceilings.shape[1])],
                                         dtype=torch.long, device=dev)
        ceiling_pos = np.stack([s.ceilings[..., 0], np.zeros_like(s.ceilings[..., 0]),
                                ceiling_z(self.cfg.layout, s.ceilings[..., 1])], axis=-1)
        self._lib_ceiling_pos = torch.as_tensor(ceiling_pos, dtype=torch.float64, device=dev)  # [S, C, 3]
        self._lib_clearance = torch.as_tensor(s.clearance.reshape(len(s.clearance), -1), dtype=torch.float32,
                                              device=dev)
        # the body's top above the base frame: the base-contact zone's box (see LocomotionTask.add_to_scene)
        site = self.model.site("base_touch")
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, site.quat)
        half = np.abs(rotation.reshape(3, 3)) @ (site.size - 0.02)
        self.body_top = float(site.pos[2] + half[2])
        reach = torch.arange(*self.cfg.body_reach, 0.1, device=dev)
        self._body_points = torch.stack((reach, torch.zeros_like(reach)), dim=1)
        self._lib_start = torch.as_tensor(s.start, dtype=torch.float32, device=dev)
        self._lib_goal = torch.as_tensor(s.goal, dtype=torch.float32, device=dev)
        self._lib_path = torch.as_tensor(s.path, dtype=torch.float32, device=dev)
        self._lib_length = torch.as_tensor(s.length, dtype=torch.long, device=dev)
        rows, cols = s.occupied.shape[1:]
        self._grid_shape = (rows, cols)
        self._lib_occupied = torch.as_tensor(s.occupied.reshape(len(s.occupied), -1), dtype=torch.float32,
                                             device=dev)
        self._nominal_geom_pos = torch.as_tensor(self.model.geom_pos, dtype=torch.float64, device=dev)
        self.scenario = torch.zeros(n, dtype=torch.long, device=dev)
        self.path = self._lib_path[self.scenario].clone()  # [N, P, 2]
        self.path_length = self._lib_length[self.scenario].clone()
        self.goal = self._lib_goal[self.scenario].clone()
        self.progress = torch.zeros(n, dtype=torch.long, device=dev)  # nearest path point reached so far
        self.tracked = torch.zeros(n, dtype=torch.long, device=dev)  # the pursued path point
        self.reached = torch.zeros(n, dtype=torch.bool, device=dev)
        self.reach_time = torch.zeros(n, device=dev)
        self.collided = torch.zeros(n, dtype=torch.bool, device=dev)
        self._point_index = torch.arange(self._lib_path.shape[1], device=dev)
        self._scan_points = self.cfg.scan.points(dev)
        self.height_target = torch.full((n,), self.cfg.base_height_target, device=dev)
        self._forward_axis = torch.tensor([1.0, 0.0, 0.0], device=dev).expand(n, 3)
        self._window = max(1, int(math.ceil(2 * self.cfg.lookahead / self.cfg.planner.spacing)))

    # -- resets ------------------------------------------------------------------------------------------
    def reset_idx(self, mask: torch.Tensor) -> None:
        n, rows = self.num_envs, mask.unsqueeze(1)
        drawn = torch.randint(0, len(self._lib_start), (n,), generator=self.generator, device=self.device)
        self.scenario = torch.where(mask, drawn, self.scenario)
        self.path = torch.where(mask.view(-1, 1, 1), self._lib_path[self.scenario], self.path)
        self.path_length = torch.where(mask, self._lib_length[self.scenario], self.path_length)
        self.goal = torch.where(rows, self._lib_goal[self.scenario], self.goal)
        self.progress = torch.where(mask, 0, self.progress)
        self.tracked = torch.where(mask, 0, self.tracked)
        self.reached = self.reached & ~mask
        self.reach_time = torch.where(mask, 0.0, self.reach_time)
        self.collided = self.collided & ~mask
        geom_pos = self._nominal_geom_pos.expand(n, -1, -1).clone()
        geom_pos[:, self._geom_ids, :2] = self._lib_geom_xy[self.scenario]
        geom_pos[:, self._ceiling_ids] = self._lib_ceiling_pos[self.scenario]
        self.sim.set_model_field("geom_pos", mask, geom_pos)
        super().reset_idx(mask)

    def initial_qpos(self, mask: torch.Tensor) -> torch.Tensor:
        """The flat task's start pose moved to the scenario's start, facing along the path's first segment (plus
        `start_yaw_noise`)."""
        qpos = super().initial_qpos(mask)
        start = self._lib_start[self.scenario]
        first = self.path[:, 1] - start
        noise = sample_uniform(-self.cfg.start_yaw_noise, self.cfg.start_yaw_noise, (self.num_envs,), self.generator)
        yaw = torch.atan2(first[:, 1], first[:, 0]) + noise
        qpos[:, :2] = start.double()
        qpos[:, 3:7] = yaw_quat(yaw).double()
        return qpos

    def _resample_commands(self, mask: torch.Tensor) -> None:
        """No random commands: they follow the path (`update_state`) or come from outside (zeroed on resets)."""
        if self.cfg.command_source == "external":
            self.commands = torch.where(mask.unsqueeze(1), 0.0, self.commands)

    def set_commands(self, commands: torch.Tensor) -> None:
        """Velocity commands [N, 3] (vx, vy, yaw rate) from outside (`command_source: external`)."""
        self.commands = commands.to(self.device, torch.float32)

    # -- state -------------------------------------------------------------------------------------------
    def _heading(self) -> torch.Tensor:
        forward = quat_rotate(self.base_quat, self._forward_axis)
        return torch.atan2(forward[:, 1], forward[:, 0])

    def to_base(self, points: torch.Tensor) -> torch.Tensor:
        """World xy `points` [N, K, 2] in each base's yaw frame (relative to the base)."""
        rel = points - self.base_xy.unsqueeze(1)
        cos, sin = self.heading.cos().unsqueeze(1), self.heading.sin().unsqueeze(1)
        return torch.stack((cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1]), dim=-1)

    def update_state(self) -> None:
        super().update_state()
        self.base_xy = self.sim.qpos[:, :2].float()
        self.heading = self._heading()
        index = self._point_index.unsqueeze(0)
        valid = index < self.path_length.unsqueeze(1)
        distance = (self.path - self.base_xy.unsqueeze(1)).norm(dim=2)  # [N, P]
        # progress: the nearest point within a window ahead of the last progress (never back, no jumps across loops)
        window = valid & (index >= self.progress.unsqueeze(1)) & (index <= (self.progress + self._window).unsqueeze(1))
        self.progress = torch.where(window, distance, float("inf")).argmin(dim=1)
        ahead = valid & (index >= self.progress.unsqueeze(1)) & (distance >= self.cfg.lookahead)
        self.tracked = torch.where(ahead.any(dim=1), ahead.float().argmax(dim=1), self.path_length - 1)
        self.goal_distance = (self.goal - self.base_xy).norm(dim=1)
        arrived = (self.goal_distance < self.cfg.goal_radius) & ~self.reached
        self.reach_time = torch.where(arrived, self.episode_step * self.dt, self.reach_time)
        self.reached = self.reached | arrived
        self.collided = self.collided | self.base_contact
        if self.cfg.layout.ceilings:
            over_body = self._sample_grid(self._lib_clearance, self._body_points, outside=OPEN).amin(dim=1)
            self.height_target = (over_body - self.body_top - self.cfg.crouch_margin).clamp(
                max=self.cfg.base_height_target)
        if self.cfg.command_source == "path":
            self.commands = self.pursuit_commands()

    def pursuit_commands(self) -> torch.Tensor:
        """[N, 3] (vx, 0, yaw rate) toward the tracked point; 0 once the goal is reached."""
        cfg = self.cfg
        target = self.path.gather(1, self.tracked.view(-1, 1, 1).expand(-1, 1, 2))
        rel = self.to_base(target).squeeze(1)
        error = torch.atan2(rel[:, 1], rel[:, 0])
        speed = cfg.speed * (self.goal_distance / cfg.slow_radius).clamp(max=1.0)
        vx = speed * error.cos().clamp(min=0.0)
        wz = (cfg.yaw_gain * error).clamp(*cfg.commands.ang_vel_yaw)
        commands = torch.stack((vx, torch.zeros_like(vx), wz), dim=1)
        return torch.where(self.reached.unsqueeze(1), 0.0, commands)

    # -- observations ------------------------------------------------------------------------------------
    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        policy = [ObsTermCfg(term="base_ang_vel", scale=0.25, noise=0.2),
                  ObsTermCfg(term="projected_gravity", noise=0.05),
                  ObsTermCfg(term="waypoints", noise=0.05), ObsTermCfg(term="goal_pos", noise=0.05),
                  ObsTermCfg(term="joint_pos", noise=0.01), ObsTermCfg(term="joint_vel", scale=0.05, noise=1.5),
                  ObsTermCfg(term="last_action"), ObsTermCfg(term="occupancy_scan")]
        if self.cfg.layout.ceilings:
            policy.append(ObsTermCfg(term="clearance_scan", noise=0.01))
        privileged = [ObsTermCfg(group="policy", clean=True), ObsTermCfg(term="base_lin_vel", scale=2.0),
                      ObsTermCfg(term="base_height"), ObsTermCfg(term="friction"), ObsTermCfg(term="added_mass"),
                      ObsTermCfg(term="motor_strength"), ObsTermCfg(term="foot_contacts"),
                      ObsTermCfg(term="velocity_command", scale=[2.0, 2.0, 0.25])]
        return {"policy": policy, "privileged": privileged}

    def _obs_waypoints(self) -> torch.Tensor:
        """The tracked path point and the `waypoints_observed - 1` after it, (x, y) each in the base's yaw frame (m,
        clipped to +- obs_clip); past the goal the goal repeats."""
        k = self.cfg.waypoints_observed
        index = torch.minimum(self.tracked.unsqueeze(1) + torch.arange(k, device=self.device),
                              (self.path_length - 1).unsqueeze(1))
        points = self.path.gather(1, index.unsqueeze(2).expand(-1, -1, 2))
        return self.to_base(points).clamp(-self.cfg.obs_clip, self.cfg.obs_clip).flatten(1)

    def _obs_goal_pos(self) -> torch.Tensor:
        """The goal (x, y) in the base's yaw frame (m, clipped to +- obs_clip)."""
        return self.to_base(self.goal.unsqueeze(1)).squeeze(1).clamp(-self.cfg.obs_clip, self.cfg.obs_clip)

    def _sample_grid(self, library: torch.Tensor, points: torch.Tensor, outside: float) -> torch.Tensor:
        """[N, K]: each env's grid of `library` [S, rows x cols] (its scenario's) at `points` [K, 2] in the base's
        yaw frame; `outside` beyond the grid."""
        x, y = yaw_points_to_world(self.base_xy, self.heading, points)
        (x0, y0), res, (rows, cols) = self.scenarios.origin, self.scenarios.resolution, self._grid_shape
        col = torch.floor((x - x0) / res).long()
        row = torch.floor((y - y0) / res).long()
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        cell = (row.clamp(0, rows - 1) * cols + col.clamp(0, cols - 1))
        return torch.where(inside, library[self.scenario].gather(1, cell), outside)

    def occupancy_scan(self) -> torch.Tensor:
        """[N, K]: 1 where a scan point lies on an obstacle or outside the grid, else 0 (the un-inflated grid)."""
        return self._sample_grid(self._lib_occupied, self._scan_points, outside=1.0)

    def clearance_scan(self) -> torch.Tensor:
        """[N, K]: the overhead clearance (m, ground to ceiling) at the scan points, min(clearance, max_clearance):
        max_clearance where no ceiling is."""
        return self._sample_grid(self._lib_clearance, self._scan_points, outside=OPEN).clamp(
            max=self.cfg.scan.max_clearance)

    def _obs_occupancy_scan(self) -> torch.Tensor:
        return self.occupancy_scan()

    def _obs_clearance_scan(self) -> torch.Tensor:
        return self.clearance_scan()

    # -- episode -----------------------------------------------------------------------------------------
    def success(self) -> torch.Tensor:
        return self.reached

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"goal_distance": self.goal_distance, "base_height": self.base_height,
                "lin_vel_xy_error": (self.commands[:, :2] - self.base_lin_vel[:, :2]).norm(dim=1)}

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        """success (the goal reached at any step), time_to_goal_s (0 where not reached: its mean over successes is
        time_to_goal_s / success), collision (the body touched an obstacle or the ground), final goal distance; with
        ceilings, ceiling (1 where the layout has one)."""
        out = {"success": self.reached.float(), "time_to_goal_s": self.reach_time,
               "collision": self.collided.float(), "goal_distance": self.goal_distance}
        if self.cfg.layout.ceilings:  # whether the layout had a low ceiling (success under one: benchmarks)
            out["ceiling"] = (self._lib_ceiling_pos[self.scenario, :, 0] < _HIDDEN / 2).any(dim=1).float()
        return out

    def navigation_contract(self) -> dict[str, Any]:
        """The subgoal interface a robot needs to rebuild `waypoints`, `goal_pos` and `occupancy_scan` (a bundle's
        `navigation` section, robolearn.deploy.navigation)."""
        cfg = self.cfg
        return {"subgoal": "path", "waypoints_observed": cfg.waypoints_observed, "spacing_m": cfg.planner.spacing,
                "lookahead_m": cfg.lookahead, "progress_window": self._window, "goal_radius_m": cfg.goal_radius,
                "obs_clip_m": cfg.obs_clip, "scan_size_m": tuple(cfg.scan.size),
                "scan_resolution_m": cfg.scan.resolution, "planner_inflate_m": cfg.planner.inflate,
                "replan_hz": 1.0, "clearance_max_m": cfg.scan.max_clearance if cfg.layout.ceilings else 0.0}

    def geom_positions(self, env: int) -> dict[str, np.ndarray]:
        """{obstacle geom: position [3]} of env `env`'s layout, for renderers."""
        xy = self._lib_geom_xy[self.scenario[env]].cpu().numpy()
        z = self.cfg.layout.height / 2
        return {f"obstacle{i}": np.array([x, y, z]) for i, (x, y) in enumerate(xy)}

    def mocap_positions(self, env: int) -> dict[str, Any]:
        x, y = self.goal[env].tolist()
        return {"goal": np.array([x, y, 0.005])}

    def video_view(self) -> dict[str, Any]:
        """Top-down over the whole arena."""
        length, width = self.cfg.layout.size
        return {"lookat": [length / 2, 0.0, 0.0], "distance": 1.1 * max(length, 1.5 * width), "azimuth": 90.0,
                "elevation": -89.9}

    # -- reward and cost terms ---------------------------------------------------------------------------
    def _reward_goal(self) -> torch.Tensor:
        """1 while the base is within goal_radius of the goal."""
        return (self.goal_distance < self.cfg.goal_radius).float()

    def _reward_base_height(self) -> torch.Tensor:
        """Squared distance of the base height to its target: base_height_target, lower under a ceiling (crouch:
        the clearance over the body minus the body's top and crouch_margin)."""
        return (self.base_height - self.height_target).square()

    def _reward_crouch(self) -> torch.Tensor:
        """Squared height (m) of the base above its target where that is lower than standing (under and just before a
        ceiling), else 0: base_height's pull toward the target is too weak to teach crouching on its own."""
        return (self.base_height - self.height_target).clamp(min=0.0).square() * (
            self.height_target < self.cfg.base_height_target).float()

    def _reward_progress(self) -> torch.Tensor:
        """Base velocity (m/s, world xy) along the direction to the tracked point, clipped to [-speed, speed]."""
        target = self.path.gather(1, self.tracked.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1)
        direction = torch.nn.functional.normalize(target - self.base_xy, dim=1)
        velocity = self.sim.qvel[:, :2].float()
        moving = (~self.reached).float()
        return (velocity * direction).sum(dim=1).clamp(-self.cfg.speed, self.cfg.speed) * moving

    def _cost_collision(self) -> torch.Tensor:
        """1 while the body touches something (an obstacle, or the ground in a fall)."""
        return self.base_contact.float()
