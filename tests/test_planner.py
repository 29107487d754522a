"""The 2-D waypoint planner: occupancy grids (cells, boxes, inflation), A* with shortcutting (collision-free by
dense sampling, exact endpoints), resampling, the one-line errors, and planning time on a 200 x 200 grid."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from robolearn.errors import ConfigError
from robolearn.planning import OccupancyGrid, plan_path, resample


def _collision_free(grid: OccupancyGrid, path: np.ndarray, step: float = 0.005) -> bool:
    """Every point of the polyline, sampled every `step` m, lies in a free cell of the grid."""
    for a, b in zip(path[:-1], path[1:], strict=True):
        n = max(2, math.ceil(np.linalg.norm(b - a) / step) + 1)
        for x, y in np.linspace(a, b, n):
            row, col = grid.to_cell(x, y)
            if not grid.contains(row, col) or grid.occupied[row, col]:
                return False
    return True


def _wall_grid() -> OccupancyGrid:
    """10 x 6 m at 0.1 m; a wall at x = 5 from the floor up to y = 4.5 (the way round is above it)."""
    return OccupancyGrid.from_boxes([(4.9, 0.0, 5.1, 4.5)], size=(10.0, 6.0), resolution=0.1)


def test_grid_cells_boxes_and_inflation_disk() -> None:
    grid = OccupancyGrid.from_boxes([(1.0, 2.0, 1.02, 2.5)], size=(3.0, 4.0), resolution=0.1, origin=(-1.0, 0.5))
    assert grid.shape == (40, 30) and grid.extent == pytest.approx((-1.0, 2.0, 0.5, 4.5))
    assert grid.to_cell(-1.0, 0.5) == (0, 0) and grid.to_cell(1.96, 4.49) == (39, 29)
    assert grid.to_world(0, 0) == pytest.approx((-0.95, 0.55))
    assert grid.to_cell(*grid.to_world(12, 7)) == (12, 7)
    rows, cols = np.nonzero(grid.occupied)  # a box thinner than a cell still occupies one column
    assert set(cols) == {20} and (rows.min(), rows.max()) == (15, 19)
    one = np.zeros((9, 9), dtype=bool)
    one[4, 4] = True
    disk = OccupancyGrid(one, 0.5).inflate(1.0)  # radius 2 cells: the 13 cells within 2 of the center
    rr, cc = np.mgrid[:9, :9]
    np.testing.assert_array_equal(disk.occupied, (rr - 4) ** 2 + (cc - 4) ** 2 <= 4)
    assert OccupancyGrid(one, 0.5).inflate(0.0).occupied.sum() == 1
    corner = np.zeros((4, 4), dtype=bool)
    corner[0, 0] = True  # a disk cut by the grid's edge
    assert OccupancyGrid(corner, 1.0).inflate(1.5).occupied.sum() == 4


def test_path_goes_around_the_wall_collision_free_with_exact_endpoints() -> None:
    grid = _wall_grid().inflate(0.3)
    start, goal = (1.0, 1.0), (9.0, 1.0)
    path = plan_path(grid, start, goal)
    assert path.ndim == 2 and path.shape[1] == 2 and len(path) >= 3
    assert tuple(path[0]) == start and tuple(path[-1]) == goal  # exactly as given
    assert path[:, 1].max() > 4.5 + 0.3  # over the wall's top and its inflation
    assert _collision_free(grid, path)
    # nearly as short as the way round the inflated wall's end (shortcut, not a staircase of cells)
    length = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
    assert length < 2 * math.hypot(4.0, 3.85) + 0.5
    path4 = plan_path(grid, start, goal, allow_diagonal=False)
    assert _collision_free(grid, path4) and tuple(path4[-1]) == goal


@pytest.mark.parametrize("allow_diagonal", [True, False])
def test_shortcut_makes_a_straight_line_in_an_empty_grid(allow_diagonal: bool) -> None:
    grid = OccupancyGrid(np.zeros((60, 100), dtype=bool), 0.1, origin=(-5.0, -3.0))
    path = plan_path(grid, (-4.63, -2.71), (4.38, 2.55), allow_diagonal=allow_diagonal)
    np.testing.assert_array_equal(path, [[-4.63, -2.71], [4.38, 2.55]])
    same = plan_path(grid, (0.5, 0.5), (0.5, 0.5))  # start = goal
    np.testing.assert_array_equal(same, [[0.5, 0.5], [0.5, 0.5]])


def test_shortcut_never_crosses_an_occupied_cell_on_random_grids() -> None:
    rng = np.random.default_rng(0)
    planned = 0
    for _ in range(6):
        occupied = rng.random((50, 50)) < 0.3
        occupied[0, 0] = occupied[-1, -1] = False
        grid = OccupancyGrid(occupied, 0.2)
        try:
            path = plan_path(grid, (0.1, 0.1), (9.9, 9.9))
        except ConfigError as e:
            assert "no path" in str(e)
            continue
        planned += 1
        assert _collision_free(grid, path, step=0.002)
    assert planned >= 1


def _gap_grid(gap: float) -> OccupancyGrid:
    """10 x 10 m at 0.1 m; a wall across y = 5 with a gap from x = 4 to x = 4 + gap."""
    return OccupancyGrid.from_boxes([(0.0, 4.9, 4.0, 5.1), (4.0 + gap, 4.9, 10.0, 5.1)], size=(10.0, 10.0),
                                    resolution=0.1)


def test_inflation_blocks_a_narrow_gap_and_keeps_a_wide_one_open() -> None:
    radius, start, goal = 0.3, (4.2, 1.0), (4.2, 9.0)
    narrow = _gap_grid(0.4)  # narrower than 2 x radius
    assert _collision_free(narrow, plan_path(narrow, start, goal))  # the bare grid lets a point through
    with pytest.raises(ConfigError, match="no path from"):
        plan_path(narrow.inflate(radius), start, goal)
    wide = _gap_grid(1.0).inflate(radius)
    path = plan_path(wide, start, goal)
    assert _collision_free(wide, path)
    crossing = [a + (b - a) * (5.0 - a[1]) / (b[1] - a[1]) for a, b in zip(path[:-1], path[1:], strict=True)
                if min(a[1], b[1]) <= 5.0 < max(a[1], b[1])]
    assert len(crossing) == 1 and 4.0 + radius <= crossing[0][0] <= 5.0 - radius  # through the gap


def test_resample_spacing_along_the_polyline() -> None:
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    out = resample(path, 0.3)
    np.testing.assert_allclose(out, [[0, 0], [0.3, 0], [0.6, 0], [0.9, 0], [1, 0.2], [1, 0.5], [1, 0.8], [1, 1]],
                               atol=1e-12)
    np.testing.assert_array_equal(out[[0, -1]], path[[0, -1]])  # first and last kept exactly
    arc = np.where(out[:, 1] == 0.0, out[:, 0], 1.0 + out[:, 1])  # arc length of each point
    np.testing.assert_allclose(np.diff(arc), [0.3] * 6 + [0.2])
    np.testing.assert_allclose(resample(path, 0.5), [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1]], atol=1e-12)
    np.testing.assert_array_equal(resample(path, 5.0), path[[0, -1]])
    np.testing.assert_array_equal(resample(np.array([[2.0, 3.0], [2.0, 3.0]]), 0.1), [[2.0, 3.0], [2.0, 3.0]])
    with pytest.raises(ConfigError, match="spacing > 0"):
        resample(path, 0.0)


def test_errors_are_one_line_and_say_what() -> None:
    grid = _wall_grid()
    extent = r"\(x in \[0, 10\], y in \[0, 6\]\)$"
    cases = [
        ((-1.0, 2.0), (9.0, 1.0), r"^plan_path: start \(-1, 2\) is outside the grid " + extent),
        ((1.0, 1.0), (9.0, 6.5), r"^plan_path: goal \(9, 6.5\) is outside the grid " + extent),
        ((5.0, 1.0), (9.0, 1.0), r"^plan_path: start \(5, 1\) is in an occupied cell \(row 10, col 50\)"),
        ((1.0, 1.0), (5.0, 2.0), r"^plan_path: goal \(5, 2\) is in an occupied cell \(row 20, col 50\)"),
    ]
    for start, goal, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            plan_path(grid, start, goal)
        assert "\n" not in str(e.value)
    split = OccupancyGrid.from_boxes([(4.9, 0.0, 5.1, 6.0)], size=(10.0, 6.0), resolution=0.1)  # wall to the top
    with pytest.raises(ConfigError, match=r"^no path from \(1, 1\) to \(9, 1\): the goal is not reachable in the "
                                          r"grid \(2940 free cells reachable from the start\)$"):
        plan_path(split, (1.0, 1.0), (9.0, 1.0))  # left of the wall: 49 columns x 60 rows


def test_a_200_by_200_grid_plans_in_under_a_second() -> None:
    occupied = np.zeros((200, 200), dtype=bool)
    occupied[20:, 50] = occupied[:180, 100] = occupied[20:, 150] = True  # a serpentine: three long walls
    grid = OccupancyGrid(occupied, 0.05)
    t0 = time.perf_counter()
    path = plan_path(grid, (0.1, 0.1), (9.9, 0.1))
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    assert _collision_free(grid, path) and path[:, 1].max() > 9.0  # over the middle wall's top
