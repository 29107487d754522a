"""Velocity-tracking locomotion on rough terrain with a terrain curriculum (legged_gym), for privileged teachers.

The flat task's MDP on a heightfield of tiles (robolearn.sim.terrain). Differences from `locomotion`:
- each env walks on one terrain type (a column of the map) at a difficulty level (a row); resets place the
  robot at the center of its tile, on top of the local terrain;
- base height (reward, metric, privileged observation) is measured from the terrain under the robot;
- curriculum at each episode end: walked more than half a tile -> one row harder; walked less than half of the
  commanded distance (|v_cmd| * episode_length_s / 2) -> one row easier; beyond the hardest row -> a random row;
- the `privileged` group appends a height scan (`height_scan` points, base z - terrain z - offset, clipped).
  The `policy` group is the flat task's, term for term: a blind student and its exported bundle see the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import torch

from robolearn.errors import ConfigError
from robolearn.sim.math import quat_rotate, yaw_points_to_world
from robolearn.sim.scene import FLOOR
from robolearn.sim.tasks.base import ObsTermCfg, ScanGridCfg
from robolearn.sim.tasks.locomotion import LocomotionCfg, LocomotionTask
from robolearn.sim.terrain import Terrain, TerrainCfg

__all__ = ["HeightScanCfg", "RoughLocomotionCfg", "RoughLocomotionTask"]


@dataclass(kw_only=True)
class HeightScanCfg(ScanGridCfg):
    """A grid of terrain samples around the base, aligned with the base's yaw (legged_gym: 17 x 11 points)."""

    key: ClassVar[str] = "height_scan"
    size: tuple[float, float] = (1.6, 1.0)  # m, along the base's forward (x) and left (y) axes, centered on it
    resolution: float = 0.1  # m between points
    offset: float = 0.5  # m: each point reads base z - terrain z - offset
    clip: float = 1.0  # readings are clipped to [-clip, clip]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip <= 0:
            raise ConfigError(f"height_scan.clip must be > 0, got {self.clip}")


@dataclass(kw_only=True)
class RoughLocomotionCfg(LocomotionCfg):
    terrain: TerrainCfg = field(default_factory=TerrainCfg)
    height_scan: HeightScanCfg = field(default_factory=HeightScanCfg)
    curriculum: bool = True  # move envs between rows by how far they walked; else they keep their start row
    max_init_level: int = 4  # start rows are uniform in [0, max_init_level]
    origin_noise: float = 0.5  # m, start xy uniform in the tile center +- this
    spawn_clearance: float = 0.4  # m: the start height is taken over the highest terrain within +- this of the start

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.max_init_level < self.terrain.num_rows:
            raise ConfigError(f"max_init_level must be in [0, terrain.num_rows - 1 = {self.terrain.num_rows - 1}], "
                              f"got {self.max_init_level}")
        if not 0 <= self.origin_noise < self.terrain.tile_size / 2:
            raise ConfigError(f"origin_noise must be in [0, terrain.tile_size / 2), got {self.origin_noise}")
        if self.spawn_clearance < 0:
            raise ConfigError(f"spawn_clearance must be >= 0, got {self.spawn_clearance}")


class RoughLocomotionTask(LocomotionTask):
    """`locomotion` on a terrain curriculum. Privileged = the flat task's privileged group (45 + 11 for the Go2)
    followed by the height scan [N, K]; policy = the flat task's (45 for 12 joints)."""

    cfg_cls = RoughLocomotionCfg
    cfg: RoughLocomotionCfg

    def __init__(self, cfg: RoughLocomotionCfg, num_envs: int, **kwargs) -> None:
        self.terrain = Terrain(cfg.terrain)  # before the scene is built: the heightfield is part of it
        super().__init__(cfg, num_envs, **kwargs)

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        super().add_to_scene(spec, render)
        self.terrain.add_to_spec(spec, spec.geom(FLOOR))

    def setup(self) -> None:
        super().setup()
        n, tc, dev = self.num_envs, self.cfg.terrain, self.device
        # Terrain type: a column per env, envs spread evenly over the columns; level: a row per env.
        self.terrain_col = torch.arange(n, device=dev) * tc.num_cols // n
        self.terrain_level = torch.randint(0, self.cfg.max_init_level + 1, (n,), generator=self.generator,
                                           device=dev)
        self.start_xy = torch.zeros(n, 2, device=dev)
        self._scan_points = self.cfg.height_scan.points(dev)  # [K, 2], base yaw frame
        c = self.cfg.spawn_clearance
        side = torch.linspace(-c, c, 5, device=dev)
        self._spawn_points = torch.cartesian_prod(side, side)  # [25, 2]
        self._forward_axis = torch.tensor([1.0, 0.0, 0.0], device=dev).expand(n, 3)

    # -- resets and curriculum ---------------------------------------------------------------------------
    def update_curriculum(self, mask: torch.Tensor, distance: torch.Tensor) -> None:
        """Move the envs in `mask` between rows by the distance (m) [N] they walked this episode."""
        tile, cmd_speed = self.cfg.terrain.tile_size, self.commands[:, :2].norm(dim=1)
        up = distance > tile / 2
        down = (distance < cmd_speed * self.cfg.episode_length_s / 2) & ~up
        level = self.terrain_level + up.long() - down.long()
        rows = self.cfg.terrain.num_rows
        random_row = torch.randint(0, rows, (self.num_envs,), generator=self.generator, device=self.device)
        moved = torch.where(level >= rows, random_row, level.clamp(min=0))
        self.terrain_level = torch.where(mask, moved, self.terrain_level)

    def state_dict(self) -> dict[str, Any]:
        return {"terrain_level": self.terrain_level.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The curriculum goes on from each env's row (new rows take effect at each env's next reset); with another
        number of envs it starts over."""
        level = state.get("terrain_level")
        if level is not None and level.shape == self.terrain_level.shape:
            self.terrain_level = level.to(self.device)

    def reset_idx(self, mask: torch.Tensor) -> None:
        if self.cfg.curriculum:
            ran = mask & (self.episode_step > 0)  # not the first reset, at construction
            self.update_curriculum(ran, (self.sim.qpos[:, :2].float() - self.start_xy).norm(dim=1))
        super().reset_idx(mask)  # pose, randomization and commands; the base placed by `initial_qpos`

    def initial_qpos(self, mask: torch.Tensor) -> torch.Tensor:
        """The flat task's start pose moved to the env's tile center (plus noise), above the highest ground
        within `spawn_clearance`."""
        qpos = super().initial_qpos(mask)
        noise = self.cfg.origin_noise
        xy = self.terrain.tile_center(self.terrain_level, self.terrain_col)
        xy = xy + (2 * torch.rand(self.num_envs, 2, generator=self.generator, device=self.device) - 1) * noise
        ground = self.terrain.height_at(xy[:, :1] + self._spawn_points[:, 0], xy[:, 1:] + self._spawn_points[:, 1])
        qpos[:, :2] = xy.double()
        qpos[:, 2] += ground.amax(dim=1).double()
        self.start_xy = torch.where(mask.unsqueeze(1), xy, self.start_xy)
        return qpos

    # -- state -------------------------------------------------------------------------------------------
    def scan_xy(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World (x [N, K], y [N, K]) of `points` [K, 2] given in every base's yaw frame."""
        qpos = self.sim.qpos.float()
        forward = quat_rotate(qpos[:, 3:7], self._forward_axis)
        return yaw_points_to_world(qpos[:, :2], torch.atan2(forward[:, 1], forward[:, 0]), points)

    def update_state(self) -> None:
        super().update_state()
        base_z = self.sim.qpos[:, 2].float().unsqueeze(1)
        self.terrain_heights = self.terrain.height_at(*self.scan_xy(self._scan_points))  # [N, K]
        self.base_height = (base_z - self.terrain_heights).mean(dim=1)  # legged_gym: over the scan

    def height_scan(self) -> torch.Tensor:
        """[N, K] base z - terrain z - offset at the scan points, clipped to [-clip, clip]."""
        s = self.cfg.height_scan
        base_z = self.sim.qpos[:, 2].float().unsqueeze(1)
        return (base_z - self.terrain_heights - s.offset).clamp(-s.clip, s.clip)

    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        groups = super().default_observations()
        groups["privileged"] = [*groups["privileged"], ObsTermCfg(term="height_scan")]
        return groups

    def _obs_height_scan(self) -> torch.Tensor:
        return self.height_scan()

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        """Adds `terrain_level`: the row of each ending episode (before the curriculum moves it)."""
        return {**super().episode_metrics(), "terrain_level": self.terrain_level.float()}
