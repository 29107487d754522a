"""A classical 2-D planner for waypoint following (numpy only): an occupancy grid, A* on it, path shortcutting and
resampling.

Grid layout: `occupied[row, col]`, row = y index, col = x index; cell (row, col) spans x in [x0 + col * r,
x0 + (col + 1) * r], y in [y0 + row * r, y0 + (row + 1) * r] (r = `resolution`, (x0, y0) = `origin`).

`plan_path` runs A* between cell centers (8-connected with the octile heuristic, or 4-connected with the Manhattan
one; a diagonal step needs both cells beside it free: no corner cutting), then drops waypoints while the straight
segment between the kept ones crosses only free cells. The check is exact: the segment is tested at the midpoint
between each two consecutive grid lines it crosses, one point in every cell it passes through. Obstacle clearance
comes from the grid: plan on `grid.inflate(robot_radius)`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.errors import ConfigError

__all__ = ["OccupancyGrid", "ClearanceGrid", "plan_to_goal", "plan_path", "shortcut", "resample", "nearest_free"]

_SQRT2 = math.sqrt(2.0)


@dataclass
class OccupancyGrid:
    """A 2-D occupancy grid: `occupied` bool [rows, cols] (row = y index, col = x index), `resolution` m per cell,
    `origin` the world (x, y) of the corner of cell [0, 0]."""

    occupied: np.ndarray
    resolution: float
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.occupied = np.asarray(self.occupied, dtype=bool)
        self.resolution, self.origin = _check_cells("OccupancyGrid", "occupied", self.occupied, self.resolution,
                                                    self.origin)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.occupied.shape

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the grid in world metres."""
        (x0, y0), r = self.origin, self.resolution
        rows, cols = self.occupied.shape
        return x0, x0 + cols * r, y0, y0 + rows * r

    def to_cell(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the cell that holds world point (x, y); it may lie outside the grid (see `contains`)."""
        return (math.floor((y - self.origin[1]) / self.resolution),
                math.floor((x - self.origin[0]) / self.resolution))

    def to_world(self, row: int, col: int) -> tuple[float, float]:
        """World (x, y) of the center of cell (row, col)."""
        return (self.origin[0] + (col + 0.5) * self.resolution, self.origin[1] + (row + 0.5) * self.resolution)

    def contains(self, row: int, col: int) -> bool:
        """Whether cell (row, col) is in the grid."""
        rows, cols = self.occupied.shape
        return 0 <= row < rows and 0 <= col < cols

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each world point (x[i], y[i]) lies in an occupied cell; outside the grid counts as occupied."""
        return _sample(self.occupied, self.origin, self.resolution, x, y, True)

    def inflate(self, radius_m: float) -> OccupancyGrid:
        """A copy where every cell whose center lies within `radius_m` of an occupied cell's center is occupied
        (a disk; plan a robot of that radius as a point). One shifted OR per disk offset, not per cell."""
        if not (math.isfinite(radius_m) and radius_m >= 0):
            raise ConfigError(f"inflate: expected a radius >= 0 m, got {radius_m!r}")
        k = radius_m / self.resolution
        reach = int(math.floor(k + 1e-9))
        src, out = self.occupied, self.occupied.copy()
        rows, cols = src.shape
        for dr in range(-reach, reach + 1):
            for dc in range(-reach, reach + 1):
                if (dr or dc) and dr * dr + dc * dc <= k * k + 1e-9 and abs(dr) < rows and abs(dc) < cols:
                    # out[r, c] |= src[r - dr, c - dc] wherever both are in the grid
                    out[max(dr, 0):rows + min(dr, 0), max(dc, 0):cols + min(dc, 0)] |= \
                        src[max(-dr, 0):rows + min(-dr, 0), max(-dc, 0):cols + min(-dc, 0)]
        return OccupancyGrid(out, self.resolution, self.origin)

    @classmethod
    def from_boxes(cls, boxes: Iterable[Sequence[float]], size: tuple[float, float], resolution: float,
                   origin: tuple[float, float] = (0.0, 0.0)) -> OccupancyGrid:
        """A grid `size` = (width along x, height along y) m with every cell that overlaps one of the axis-aligned
        `boxes` (xmin, ymin, xmax, ymax) m occupied (a box thinner than a cell still occupies one)."""
        if len(size) != 2 or not all(math.isfinite(s) and s > 0 for s in size):
            raise ConfigError(f"OccupancyGrid.from_boxes: expected size (x, y) > 0 m, got {size!r}")
        if not (math.isfinite(resolution) and resolution > 0):
            raise ConfigError(f"OccupancyGrid.from_boxes: expected a resolution > 0 m, got {resolution!r}")
        rows, cols = math.ceil(size[1] / resolution - 1e-9), math.ceil(size[0] / resolution - 1e-9)
        grid = cls(np.zeros((rows, cols), dtype=bool), resolution, origin)
        x0, y0 = grid.origin
        for box in boxes:
            xmin, ymin, xmax, ymax = (float(v) for v in box)
            if not (all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) and xmin <= xmax and ymin <= ymax):
                raise ConfigError(f"OccupancyGrid.from_boxes: box {tuple(box)!r} is not (xmin, ymin, xmax, ymax) "
                                  f"with xmin <= xmax and ymin <= ymax")
            c0 = math.floor((xmin - x0) / resolution + 1e-9)
            r0 = math.floor((ymin - y0) / resolution + 1e-9)
            c1 = max(math.ceil((xmax - x0) / resolution - 1e-9), c0 + 1)
            r1 = max(math.ceil((ymax - y0) / resolution - 1e-9), r0 + 1)
            grid.occupied[max(r0, 0):max(min(r1, rows), 0), max(c0, 0):max(min(c1, cols), 0)] = True
        return grid


@dataclass
class ClearanceGrid:
    """Overhead clearance on the cells of a 2-D grid (laid out as `OccupancyGrid`): `clearance` float [rows, cols],
    m from the ground to the lowest thing above it (a ceiling, a table top), inf where nothing is overhead."""

    clearance: np.ndarray
    resolution: float
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.clearance = np.asarray(self.clearance, dtype=np.float64)
        self.resolution, self.origin = _check_cells("ClearanceGrid", "clearance", self.clearance, self.resolution,
                                                    self.origin)
        if np.isnan(self.clearance).any() or (self.clearance < 0).any():
            raise ConfigError("ClearanceGrid.clearance: expected m >= 0 (inf where nothing is overhead), got NaN or "
                              "negative values")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.clearance.shape

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The clearance (m) at each world point (x[i], y[i]); inf outside the grid."""
        return _sample(self.clearance, self.origin, self.resolution, x, y, np.inf)


def _check_cells(kind: str, field: str, cells: np.ndarray, resolution: float,
                 origin: tuple[float, float]) -> tuple[float, tuple[float, float]]:
    """A grid's layout checked (non-empty 2-D cells, resolution > 0, finite origin): (resolution, origin) as floats."""
    if cells.ndim != 2 or 0 in cells.shape:
        raise ConfigError(f"{kind}.{field}: expected a non-empty 2-D array [rows, cols], got shape {cells.shape}")
    if not (math.isfinite(resolution) and resolution > 0):
        raise ConfigError(f"{kind}.resolution: expected a positive number of m per cell, got {resolution!r}")
    if len(origin) != 2 or not all(math.isfinite(v) for v in origin):
        raise ConfigError(f"{kind}.origin: expected a finite (x, y), got {origin!r}")
    return float(resolution), (float(origin[0]), float(origin[1]))


def _sample(values: np.ndarray, origin: tuple[float, float], resolution: float, x: np.ndarray, y: np.ndarray,
            outside: Any) -> np.ndarray:
    rows, cols = values.shape
    col = np.floor((np.asarray(x) - origin[0]) / resolution).astype(int)
    row = np.floor((np.asarray(y) - origin[1]) / resolution).astype(int)
    inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    return np.where(inside, values[row.clip(0, rows - 1), col.clip(0, cols - 1)], outside)


def _fmt(xy: Sequence[float]) -> str:
    return f"({xy[0]:g}, {xy[1]:g})"


def _check_endpoint(grid: OccupancyGrid, what: str, xy: tuple[float, float]) -> tuple[int, int]:
    if not all(math.isfinite(v) for v in xy):
        raise ConfigError(f"plan_path: {what} {_fmt(xy)} is not finite")
    row, col = grid.to_cell(*xy)
    if not grid.contains(row, col):
        xmin, xmax, ymin, ymax = grid.extent
        raise ConfigError(f"plan_path: {what} {_fmt(xy)} is outside the grid (x in [{xmin:g}, {xmax:g}], "
                          f"y in [{ymin:g}, {ymax:g}])")
    if grid.occupied[row, col]:
        raise ConfigError(f"plan_path: {what} {_fmt(xy)} is in an occupied cell (row {row}, col {col}): on an "
                          f"obstacle or within its inflation")
    return row, col


def _astar(grid: OccupancyGrid, start: tuple[int, int], goal: tuple[int, int],
           allow_diagonal: bool) -> tuple[list[tuple[int, int]] | None, int]:
    """A* from cell `start` to cell `goal`: (the cells of a shortest path, cells expanded); (None, the size of the
    start's free region) when the goal cannot be reached."""
    rows, cols = grid.shape
    w = cols + 2  # a border of occupied cells: neighbours need no bounds check
    blocked = np.ones((rows + 2, w), dtype=bool)
    blocked[1:-1, 1:-1] = grid.occupied
    blocked = blocked.ravel().tolist()
    s, g = (start[0] + 1) * w + start[1] + 1, (goal[0] + 1) * w + goal[1] + 1
    gr, gc = divmod(g, w)
    straight = [(-w, 1.0), (w, 1.0), (-1, 1.0), (1, 1.0)]
    # diagonal step, and the two orthogonal steps beside it (both must be free: no corner cutting)
    diagonal = [(-w - 1, -w, -1), (-w + 1, -w, 1), (w - 1, w, -1), (w + 1, w, 1)] if allow_diagonal else []

    def h(i: int) -> float:
        dr, dc = abs(i // w - gr), abs(i % w - gc)
        if allow_diagonal:
            return max(dr, dc) + (_SQRT2 - 1.0) * min(dr, dc)
        return float(dr + dc)

    cost = {s: 0.0}
    parent = {s: -1}
    closed: set[int] = set()
    heap = [(h(s), 0.0, s)]
    while heap:
        _, _, i = heapq.heappop(heap)
        if i in closed:
            continue
        closed.add(i)
        if i == g:
            path = []
            while i != -1:
                path.append(divmod(i, w))
                i = parent[i]
            return [(r - 1, c - 1) for r, c in reversed(path)], len(closed)
        ci = cost[i]
        steps = [(i + d, step) for d, step in straight if not blocked[i + d]]
        steps += [(i + d, _SQRT2) for d, a, b in diagonal if not (blocked[i + d] or blocked[i + a] or blocked[i + b])]
        for j, step in steps:
            cj = ci + step
            if j not in closed and cj < cost.get(j, math.inf):
                cost[j] = cj
                parent[j] = i
                hj = h(j)
                heapq.heappush(heap, (cj + hj, hj, j))  # ties: the node nearer the goal first
    return None, len(closed)


def _cells_touched(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For coordinates `v` in cell units: the cell index of each, and the one on the other side for a coordinate on
    a grid line (else the same)."""
    near = np.round(v)
    on_line = np.abs(v - near) < 1e-9
    lo = np.where(on_line, near - 1, np.floor(v)).astype(int)
    return np.where(on_line, near, lo).astype(int), lo


def _line_of_sight(grid: OccupancyGrid, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the segment a -> b (world) stays in free cells: the cells it passes through, and on a grid line or
    a grid corner all the cells that meet there (so it never slips between two diagonal occupied cells)."""
    p, q = (a - grid.origin) / grid.resolution, (b - grid.origin) / grid.resolution  # in cell units, (x, y)
    d = q - p
    ts = [np.array([0.0, 1.0])]
    for k in range(2):  # parameters where the segment crosses a vertical (k = 0) or horizontal (k = 1) grid line
        if d[k] != 0.0:
            lo, hi = sorted((p[k], q[k]))
            lines = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=float)
            ts.append((lines - p[k]) / d[k])
    t = np.unique(np.clip(np.concatenate(ts), 0.0, 1.0))
    t = np.concatenate([t, 0.5 * (t[:-1] + t[1:])])  # the crossings, and one point inside every cell between
    pts = p + t[:, None] * d
    (cols, cols2), (rows, rows2) = _cells_touched(pts[:, 0]), _cells_touched(pts[:, 1])
    n_rows, n_cols = grid.shape
    if np.any((rows < 0) | (rows >= n_rows) | (cols < 0) | (cols >= n_cols)):
        return False
    occ = grid.occupied
    rows2c, cols2c = np.clip(rows2, 0, n_rows - 1), np.clip(cols2, 0, n_cols - 1)  # the grid's edge: nothing beyond
    return not (occ[rows, cols].any() or occ[rows2c, cols].any() or occ[rows, cols2c].any()
                or occ[rows2c, cols2c].any())


def shortcut(grid: OccupancyGrid, path: np.ndarray) -> np.ndarray:
    """`path` [N, 2] (world) with waypoints dropped while the straight segment between the kept ones crosses only
    free cells (greedy: from each kept point, the farthest next point reachable without a blocked one in between).
    The first and last points are kept."""
    path = np.asarray(path, dtype=float)
    if len(path) <= 2:
        return path.copy()
    kept, i = [0], 0
    while i < len(path) - 1:
        j = i + 1
        while j + 1 < len(path) and _line_of_sight(grid, path[i], path[j + 1]):
            j += 1
        kept.append(j)
        i = j
    return path[kept]


def plan_path(grid: OccupancyGrid, start_xy: Sequence[float], goal_xy: Sequence[float], *,
              allow_diagonal: bool = True) -> np.ndarray:
    """World waypoints [N, 2] from `start_xy` to `goal_xy` (both exactly as given, first and last) around the
    occupied cells of `grid`: A* between cell centers, then `shortcut`.

    Raises ConfigError when the start or the goal is outside the grid or in an occupied cell, or when no path
    exists."""
    start = (float(start_xy[0]), float(start_xy[1]))
    goal = (float(goal_xy[0]), float(goal_xy[1]))
    s = _check_endpoint(grid, "start", start)
    g = _check_endpoint(grid, "goal", goal)
    cells, expanded = _astar(grid, s, g, allow_diagonal)
    if cells is None:
        raise ConfigError(f"no path from {_fmt(start)} to {_fmt(goal)}: the goal is not reachable in the grid "
                          f"({expanded} free cells reachable from the start)")
    points = np.array([start, *(grid.to_world(r, c) for r, c in cells[1:-1]), goal], dtype=float)
    return shortcut(grid, points)


def nearest_free(grid: OccupancyGrid, xy: Sequence[float], max_distance: float) -> tuple[float, float] | None:
    """(x, y) itself when it lies in a free cell of `grid`, else the center of the free cell nearest to it within
    `max_distance` m, else None (a robot that drifted into an inflated obstacle plans from the nearest free place)."""
    row, col = grid.to_cell(float(xy[0]), float(xy[1]))
    if grid.contains(row, col) and not grid.occupied[row, col]:
        return float(xy[0]), float(xy[1])
    rows, cols = np.nonzero(~grid.occupied)
    if len(rows) == 0:
        return None
    x0, y0 = grid.origin
    centers = np.stack([x0 + (cols + 0.5) * grid.resolution, y0 + (rows + 0.5) * grid.resolution], axis=1)
    distance = np.linalg.norm(centers - np.asarray(xy[:2], dtype=float), axis=1)
    i = int(np.argmin(distance))
    return (float(centers[i, 0]), float(centers[i, 1])) if distance[i] <= max_distance else None


def resample(path: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` m of arc length along the polyline `path` [N, 2] (its first and last points kept; the
    last interval may be shorter). A path of length 0 gives its first and last points."""
    path = np.asarray(path, dtype=float)
    if path.ndim != 2 or path.shape[1] != 2 or len(path) == 0 or not np.all(np.isfinite(path)):
        raise ValueError(f"resample: expected finite waypoints [N >= 1, 2], got shape {path.shape}")
    if not (math.isfinite(spacing) and spacing > 0):
        raise ConfigError(f"resample: expected a spacing > 0 m, got {spacing!r}")
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    if not np.any(seg > 0):  # a single point, or one point repeated
        return path[[0, -1]] if len(path) > 1 else path.copy()
    keep = np.concatenate([[True], seg > 0])  # repeated points would make the arc length non-increasing
    path, s = path[keep], np.concatenate([[0.0], np.cumsum(seg[seg > 0])])
    length = float(s[-1])
    n = math.floor(length / spacing + 1e-9)
    at = spacing * np.arange(n + 1)
    if length - at[-1] > 1e-9 * max(1.0, length):
        at = np.append(at, length)
    else:
        at[-1] = length
    return np.stack([np.interp(at, s, path[:, 0]), np.interp(at, s, path[:, 1])], axis=1)


def plan_to_goal(grid: OccupancyGrid, inflate_m: float, here: Sequence[float], goal: Sequence[float]) -> np.ndarray:
    """Waypoints [N, 2] from a robot at `here` to `goal` on `grid` inflated by `inflate_m`: A* from `here`, or, when
    the robot stands in an obstacle's inflated margin, from the nearest free place (then `here` is the first
    waypoint). Raises ConfigError saying why when there is no plan."""
    inflated = grid.inflate(inflate_m)
    here = np.asarray(here, dtype=float)[:2]
    start = nearest_free(inflated, here, max_distance=2.0 * inflate_m + grid.resolution)
    if start is None:
        raise ConfigError(f"the base at {here.round(2).tolist()} is inside an obstacle of the map")
    path = plan_path(inflated, start, goal)
    return path if np.allclose(start, here) else np.concatenate([here[None], path])
