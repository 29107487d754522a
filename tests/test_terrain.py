"""go2-rough: the heightfield MuJoCo collides with is the one the task reads, and the curriculum moves envs."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import make_task
from robolearn.sim.terrain import Terrain, TerrainCfg, generate_heights

SMALL_TERRAIN = {"tile_size": 4.0, "num_rows": 3, "num_cols": 7, "platform_size": 1.0, "border": 5.0}


@pytest.fixture(scope="module")
def rough():
    task = make_task("go2-rough", 14, seed=1, overrides={"terrain": SMALL_TERRAIN, "max_init_level": 2})
    yield task
    task.close()


def test_heights_are_deterministic_and_tiles_follow_their_type():
    cfg = TerrainCfg(**SMALL_TERRAIN, seed=3)
    a, types = generate_heights(cfg)
    b, _ = generate_heights(cfg)
    assert np.array_equal(a, b)
    assert types == ["flat", "rough", "slope_up", "slope_down", "stairs_up", "stairs_down", "obstacles"]
    n = cfg.cells_per_tile
    # Interiors of the hardest row's tiles (vertices on a shared edge belong to the neighbour tile).
    tile = {t: a[2 * n + 1:3 * n, j * n + 1:(j + 1) * n] for j, t in enumerate(types)}
    assert np.abs(tile["flat"]).max() == 0.0
    assert tile["stairs_up"].min() < -0.3 and tile["stairs_down"].max() > 0.3  # pits and peaks of steps
    steps = np.unique(np.round(tile["stairs_down"], 6))
    assert np.allclose(np.diff(steps), cfg.step_height[1])  # equal risers of the hardest step height
    c = n // 2 - 1
    assert tile["slope_up"][c, c] < tile["slope_up"][c, 0]  # the center of an up-slope tile is its lowest point
    assert np.abs(a[1:n, n + 1:2 * n]).max() <= cfg.noise_amplitude[0] + 1e-9  # row 0 is the easiest
    assert np.abs(tile["rough"]).max() > cfg.noise_amplitude[0]


def test_height_lookup_matches_mujoco_collision_surface(rough):
    """Rays cast straight down in MuJoCo hit the heightfield at exactly the height the task computes."""
    model = rough.sim.model
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    terrain: Terrain = rough.terrain
    rng = np.random.default_rng(0)
    xs = rng.uniform(terrain.x0 + 0.05, -terrain.x0 - 0.05, 300)
    ys = rng.uniform(terrain.y0 + 0.05, -terrain.y0 - 0.05, 300)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    hits = []
    for x, y in zip(xs, ys, strict=True):
        geomid = np.array([-1], dtype=np.int32)
        dist = mujoco.mj_ray(model, data, np.array([x, y, 5.0]), np.array([0.0, 0.0, -1.0]), None, 1, -1, geomid)
        if geomid[0] == floor:
            hits.append((x, y, 5.0 - dist))
    assert len(hits) > 250
    pts = torch.tensor(hits, dtype=torch.float64)
    expected = terrain.height_at(pts[:, 0], pts[:, 1])
    assert torch.allclose(expected.double(), pts[:, 2], atol=2e-3), (expected - pts[:, 2]).abs().max()


def test_privileged_holds_the_height_scan_and_robots_start_above_the_ground(rough):
    obs = rough.reset()
    assert obs["policy"].shape == (14, 45)
    assert obs["privileged"].shape == (14, 45 + 11 + 17 * 11)
    scan = obs["privileged"][:, 56:]
    assert torch.all(scan.abs() <= 1.0)
    clearance = rough.sim.qpos[:, 2].float() - rough.terrain.height_at(rough.sim.qpos[:, 0], rough.sim.qpos[:, 1])
    assert torch.all(clearance > 0.2), clearance
    zero = torch.zeros(14, rough.num_actions)
    for _ in range(50):
        _, _, _, terminated, _, _ = rough.step(zero)
    assert not terminated.any()  # standing on every terrain type at levels 0-2, no fall through the heightfield
    assert torch.all(rough.base_height > 0.15) and torch.all(rough.base_height < 0.4), rough.base_height


def test_curriculum_promotes_far_walkers_and_demotes_short_ones(rough):
    n = rough.num_envs
    before = rough.terrain_level.clone()
    rough.terrain_level[:4] = torch.tensor([1, 1, 2, 0])
    rough.commands[:4, :2] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    tile = rough.cfg.terrain.tile_size
    mask = torch.arange(n) < 4  # envs 4.. are not ending: they keep their rows whatever their distance
    rough.update_curriculum(mask, torch.cat([torch.tensor([tile, 0.1, tile, 0.0]), torch.full((n - 4,), tile)]))
    # 0: walked a tile -> harder; 1: far short of its command -> easier; 2: beyond the hardest row -> a random
    # row; 3: standing command, walked 0 -> stays.
    assert rough.terrain_level[0] == 2 and rough.terrain_level[1] == 0 and rough.terrain_level[3] == 0
    assert 0 <= rough.terrain_level[2] < rough.cfg.terrain.num_rows
    assert torch.equal(rough.terrain_level[4:], before[4:])


def test_bad_terrain_config_names_the_field():
    with pytest.raises(ConfigError, match="terrain.tile_size must be a positive multiple of horizontal_scale"):
        TerrainCfg(tile_size=4.05)
    with pytest.raises(ConfigError, match="terrain.proportions"):
        TerrainCfg(proportions={"lava": 1.0})
    with pytest.raises(ConfigError, match="max_init_level must be in"):
        make_task("go2-rough", 2, overrides={"terrain": SMALL_TERRAIN, "max_init_level": 5})
