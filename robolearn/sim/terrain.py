"""Rough terrain (legged_gym style): one MuJoCo heightfield made of square tiles, and batched height lookup.

Layout: tile (row, col) spans x in [x0 + row * T, x0 + (row + 1) * T], y in [y0 + col * T, y0 + (col + 1) * T]
(T = `tile_size`); the map is centered on the world origin. Rows are difficulty levels (row 0 the easiest,
the last row at the configured maximum); columns are terrain types, shared out by `proportions`. Every tile has
a flat platform of `platform_size` at its center (where robots start, except on `rough` tiles) and meets its
neighbours near z = 0 at its edges. Around the map, `border` metres of flat ground at z = 0 (four boxes: no
heightfield memory) catch robots that walk off it.

Heights live on the heightfield's vertex grid `heights[ix, iy]` (x first, world metres, `horizontal_scale`
apart). MuJoCo splits each grid cell into two triangles along the diagonal from (ix, iy) to (ix + 1, iy + 1);
`Terrain.height_at` interpolates on the same triangles, so it returns the surface the robot collides with.

Tile formulas, with d the distance (m) of a vertex to its tile's nearest edge, P = `platform_size`, s the
difficulty in [0, 1] (row / (num_rows - 1)) and `lo + s * (hi - lo)` the value of a (lo, hi) range:
- flat: 0.
- rough: uniform noise in [-a, a], a = noise_amplitude(s), drawn on a grid `noise_cell` apart and interpolated
  linearly in between.
- slope_up / slope_down: -/+ slope(s) * min(d, (T - P) / 2): the center is a pit (up: walking out from the
  origin climbs) or a peak (down: walking out descends).
- stairs_up / stairs_down: -/+ step_height(s) * min(floor(d / step_width), floor((T - P) / 2 / step_width)).
- obstacles: `num_obstacles` rectangles (sides in obstacle_size) of height +-obstacle_height(s) at random
  places, the central platform kept at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError

__all__ = ["TERRAIN_TYPES", "TerrainCfg", "Terrain", "generate_heights"]

TERRAIN_TYPES = ("flat", "rough", "slope_up", "slope_down", "stairs_up", "stairs_down", "obstacles")
_EPS = 1e-6  # guards floor() against rounding of vertex distances that are exact multiples of a step

Range = tuple[float, float]


@dataclass(kw_only=True)
class TerrainCfg:
    """A grid of `num_rows` x `num_cols` square tiles; (lo, hi) ranges are the easiest and the hardest row."""

    tile_size: float = 8.0  # m, side of one square tile
    num_rows: int = 10  # difficulty levels (along x)
    num_cols: int = 10  # tiles per level (along y), shared among the terrain types by `proportions`
    horizontal_scale: float = 0.1  # m between heightfield vertices
    proportions: dict[str, float] = field(default_factory=lambda: {
        "flat": 0.1, "rough": 0.2, "slope_up": 0.1, "slope_down": 0.1, "stairs_up": 0.2, "stairs_down": 0.2,
        "obstacles": 0.1})
    platform_size: float = 2.0  # m, flat square at each tile center
    slope: Range = (0.0, 0.4)  # rise over run of pyramid slopes
    step_height: Range = (0.05, 0.18)  # m, pyramid stairs
    step_width: float = 0.3  # m
    noise_amplitude: Range = (0.02, 0.08)  # m, rough tiles: heights uniform in [-a, a]
    noise_cell: float = 0.2  # m, spacing of the noise samples (a multiple of horizontal_scale)
    obstacle_height: Range = (0.05, 0.2)  # m
    obstacle_size: Range = (0.4, 1.2)  # m, side lengths of the rectangles
    num_obstacles: int = 20  # per tile
    border: float = 20.0  # m of flat ground (z = 0) around the map
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, expected: str, value: object) -> None:
            raise ConfigError(f"terrain.{name} must be {expected}, got {value!r}")

        if self.horizontal_scale <= 0:
            fail("horizontal_scale", "> 0", self.horizontal_scale)
        if self.tile_size <= 0 or not _is_multiple(self.tile_size, self.horizontal_scale):
            fail("tile_size", f"a positive multiple of horizontal_scale ({self.horizontal_scale})", self.tile_size)
        if self.noise_cell <= 0 or not _is_multiple(self.noise_cell, self.horizontal_scale):
            fail("noise_cell", f"a positive multiple of horizontal_scale ({self.horizontal_scale})", self.noise_cell)
        if self.num_rows < 1 or self.num_cols < 1:
            fail("num_rows and num_cols", ">= 1", (self.num_rows, self.num_cols))
        if not 0 <= self.platform_size < self.tile_size:
            fail("platform_size", f"in [0, tile_size = {self.tile_size})", self.platform_size)
        unknown = sorted(set(self.proportions) - set(TERRAIN_TYPES))
        if unknown:
            fail("proportions", f"a mapping of terrain types ({', '.join(TERRAIN_TYPES)}) to weights", unknown[0])
        if any(w < 0 for w in self.proportions.values()) or sum(self.proportions.values()) <= 0:
            fail("proportions", "non-negative weights with a positive sum", self.proportions)
        for name in ("slope", "step_height", "noise_amplitude", "obstacle_height", "obstacle_size"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                fail(name, "a range [easiest, hardest] with 0 <= easiest <= hardest", [lo, hi])
        if self.obstacle_size[0] <= 0:
            fail("obstacle_size", "positive side lengths", list(self.obstacle_size))
        if self.step_width <= 0:
            fail("step_width", "> 0", self.step_width)
        if self.num_obstacles < 0 or self.border < 0:
            fail("num_obstacles and border", ">= 0", (self.num_obstacles, self.border))

    @property
    def cells_per_tile(self) -> int:
        return int(round(self.tile_size / self.horizontal_scale))

    def column_types(self) -> list[str]:
        """Terrain type of each column: column j takes the type whose cumulative share covers (j + 0.5) / cols."""
        names = [t for t in TERRAIN_TYPES if self.proportions.get(t, 0.0) > 0]
        weights = np.array([self.proportions[t] for t in names], dtype=np.float64)
        edges = np.cumsum(weights / weights.sum())
        centers = (np.arange(self.num_cols) + 0.5) / self.num_cols
        return [names[min(int(np.searchsorted(edges, c)), len(names) - 1)] for c in centers]

    def difficulty(self, row: int) -> float:
        return row / (self.num_rows - 1) if self.num_rows > 1 else 1.0


def _is_multiple(value: float, unit: float) -> bool:
    ratio = value / unit
    return abs(ratio - round(ratio)) < 1e-6


def _at(r: Range, s: float) -> float:
    return r[0] + s * (r[1] - r[0])


def _edge_distance(n: int, h: float) -> np.ndarray:
    """[n + 1, n + 1] distance (m) of each vertex of a tile with n cells per side to the tile's nearest edge."""
    i = np.arange(n + 1)
    d = np.minimum(i, n - i)
    return np.minimum(d[:, None], d[None, :]) * h


def _tile(kind: str, s: float, cfg: TerrainCfg, rng: np.random.Generator) -> np.ndarray:
    """Heights [n + 1, n + 1] (m) of one tile of type `kind` at difficulty `s` (vertex grid, x first)."""
    n, h, size = cfg.cells_per_tile, cfg.horizontal_scale, cfg.tile_size
    d = _edge_distance(n, h)
    reach = (size - cfg.platform_size) / 2  # distance from the edge to the central platform
    if kind == "flat":
        return np.zeros((n + 1, n + 1))
    if kind == "rough":
        a, k = _at(cfg.noise_amplitude, s), int(round(cfg.noise_cell / h))
        coarse = rng.uniform(-a, a, size=(n // k + 2, n // k + 2))
        t = np.arange(n + 1) / k  # vertex position on the coarse grid
        i0, f = np.floor(t).astype(int), t - np.floor(t)
        rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]  # linear along x, then along y
        return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    if kind in ("slope_up", "slope_down"):
        sign = -1.0 if kind == "slope_up" else 1.0
        return sign * _at(cfg.slope, s) * np.minimum(d, reach)
    if kind in ("stairs_up", "stairs_down"):
        sign = -1.0 if kind == "stairs_up" else 1.0
        steps = np.minimum(np.floor(d / cfg.step_width + _EPS), math.floor(reach / cfg.step_width + _EPS))
        return sign * _at(cfg.step_height, s) * steps
    if kind == "obstacles":
        out = np.zeros((n + 1, n + 1))
        height = _at(cfg.obstacle_height, s)
        for _ in range(cfg.num_obstacles):
            wx, wy = (int(round(rng.uniform(*cfg.obstacle_size) / h)) for _ in range(2))
            x, y = rng.integers(0, n - wx + 1), rng.integers(0, n - wy + 1)
            out[x : x + wx + 1, y : y + wy + 1] = rng.choice([-1.0, 1.0]) * height
        c, p = n // 2, int(round(cfg.platform_size / h / 2))
        out[c - p : c + p + 1, c - p : c + p + 1] = 0.0
        return out
    raise ConfigError(f"unknown terrain type {kind!r}; valid types: {', '.join(TERRAIN_TYPES)}")


def generate_heights(cfg: TerrainCfg) -> tuple[np.ndarray, list[str]]:
    """(heights [rows * n + 1, cols * n + 1] in m on the vertex grid, x first; the type of each column).

    Deterministic in `cfg.seed`: tile (row, col) draws from its own generator seeded with (seed, row, col).
    Vertices on a shared tile edge take the value of the tile with the larger row, then column."""
    n, types = cfg.cells_per_tile, cfg.column_types()
    heights = np.zeros((cfg.num_rows * n + 1, cfg.num_cols * n + 1))
    for row in range(cfg.num_rows):
        for col, kind in enumerate(types):
            rng = np.random.default_rng([cfg.seed, row, col])
            heights[row * n : (row + 1) * n + 1, col * n : (col + 1) * n + 1] = _tile(kind, cfg.difficulty(row), cfg,
                                                                                      rng)
    return heights, types


class Terrain:
    """The generated map: heights as MuJoCo stores them, tile geometry, the heightfield asset and height lookup.

    `heights` [nx, ny] (m) is exactly the surface MuJoCo collides with (rebuilt from the float32 data the
    heightfield holds). The map's lower corner (vertex [0, 0]) is at `(x0, y0)`, the map is centered on (0, 0)."""

    def __init__(self, cfg: TerrainCfg) -> None:
        self.cfg = cfg
        raw, self.column_types = generate_heights(cfg)
        self.zmin, zmax = float(raw.min()), float(raw.max())
        self.zrange = max(zmax - self.zmin, 1e-3)  # MuJoCo needs a positive elevation range
        self.data = ((raw - self.zmin) / self.zrange).astype(np.float32)  # normalized, what the asset stores
        self.heights = self.zmin + self.zrange * self.data.astype(np.float64)
        self.nx, self.ny = self.heights.shape
        h = cfg.horizontal_scale
        self.size_x, self.size_y = (self.nx - 1) * h, (self.ny - 1) * h
        self.x0, self.y0 = -self.size_x / 2, -self.size_y / 2
        self._heights_t = torch.from_numpy(self.heights.astype(np.float32)).flatten()

    # -- tiles -------------------------------------------------------------------------------------------------
    def tile_center(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """World xy [N, 2] of the centers of tiles (`row` [N], `col` [N])."""
        t = self.cfg.tile_size
        return torch.stack([self.x0 + (row.float() + 0.5) * t, self.y0 + (col.float() + 0.5) * t], dim=-1)

    def tile_type(self, col: int) -> str:
        return self.column_types[col]

    # -- scene -------------------------------------------------------------------------------------------------
    def add_to_spec(self, spec: mujoco.MjSpec, floor: mujoco.MjsGeom) -> None:
        """Turn the scene's floor plane into the heightfield (same collision bits, friction and material) and
        lay the flat border around it, boxes with their top at z = 0 that collide the same way."""
        hfield = spec.add_hfield(name="terrain", nrow=self.ny, ncol=self.nx,
                                 size=[self.size_x / 2, self.size_y / 2, self.zrange, 1.0])
        hfield.userdata = self.data.T.ravel().tolist()  # MuJoCo: row-major [y, x], row 0 at the lowest y
        floor.type = mujoco.mjtGeom.mjGEOM_HFIELD
        floor.hfieldname = hfield.name
        floor.pos = [0.0, 0.0, self.zmin]
        b, half_x, half_y, depth = self.cfg.border, self.size_x / 2, self.size_y / 2, 0.5
        if b <= 0:
            return
        for i, (cx, cy, sx, sy) in enumerate((
            (half_x + b / 2, 0.0, b / 2, half_y + b), (-half_x - b / 2, 0.0, b / 2, half_y + b),
            (0.0, half_y + b / 2, half_x, b / 2), (0.0, -half_y - b / 2, half_x, b / 2),
        )):
            spec.worldbody.add_geom(
                name=f"{floor.name}_border_{i}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[cx, cy, -depth],
                size=[sx, sy, depth], contype=floor.contype, conaffinity=floor.conaffinity, rgba=floor.rgba,
                material=floor.material,
            )

    # -- height lookup -----------------------------------------------------------------------------------------
    def height_at(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Terrain height (m) at world points `x`, `y` (same shape, e.g. [N, K]) -> float32 of that shape.

        Linear on MuJoCo's triangles (diagonal from vertex (i, j) to (i + 1, j + 1)): the collision surface
        itself. Points off the map read the border's 0."""
        h = self.cfg.horizontal_scale
        gx = (x.float() - self.x0) / h
        gy = (y.float() - self.y0) / h
        inside = (gx >= 0) & (gx <= self.nx - 1) & (gy >= 0) & (gy <= self.ny - 1)
        ix = gx.floor().clamp(0, self.nx - 2)
        iy = gy.floor().clamp(0, self.ny - 2)
        u = (gx - ix).clamp(0, 1)
        v = (gy - iy).clamp(0, 1)
        i00 = ix.long() * self.ny + iy.long()
        if self._heights_t.device != i00.device:  # moved to the points' device once (a task on a GPU)
            self._heights_t = self._heights_t.to(i00.device)
        hm = self._heights_t
        h00, h10, h01, h11 = hm[i00], hm[i00 + self.ny], hm[i00 + 1], hm[i00 + self.ny + 1]
        z = torch.where(u >= v, h00 + u * (h10 - h00) + v * (h11 - h10), h00 + v * (h01 - h00) + u * (h11 - h01))
        return torch.where(inside, z, torch.zeros_like(z))
