"""Wiping: hold a pad on the table and drag it along a moving target line while pressing, under a force limit.

The contact-rich arm task of the safety stack (costs, PPO-Lagrangian, the Q_risk safety filter). The robot
(`panda_wiper`) holds a pad (a sphere below the tool centre point); the table is the floor. Each episode draws a
line on the table: for `settle_s` the target waits at its start (the arm comes down), then it moves to the end at
constant speed for the rest of the episode. The reward asks for tracking the target and for pressing, up to
`press_force` (wiping cleans better the harder it presses), which lies above the force the surface or the robot
tolerates (`force_limit`): the `force_limit` cost is 1 on every step whose contact force exceeded it at any physics
substep. An unconstrained policy therefore presses too hard; a constrained one (or a safety filter) must trade
pressing for safety.

Actions are joint position targets (default pose + action_scale x action, bounded to the joint ranges) for a
compliant joint impedance (`panda_wiper`): the pressing force follows how deep the target lies below the surface,
so an action can ease the force within one policy step, which is what a safety filter needs of it.

Contact force: a MuJoCo touch sensor on a sphere site around the tool point (`force_site_radius`): the normal force
of every contact of the hand, its fingers and the pad within it (N). The policy observes it as a real Franka
estimates its external wrench (scaled by `force_obs_scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks.base import ObsTermCfg
from robolearn.sim.tasks.reach import ReachCfg, ReachTask

__all__ = ["WipeCfg", "WipeTask"]

Range = tuple[float, float]


@dataclass(kw_only=True)
class WipeCfg(ReachCfg):
    line_x: Range = (0.38, 0.62)  # m, base frame: where the line's ends lie on the table
    line_y: Range = (-0.2, 0.2)
    line_min_length: float = 0.12  # m
    settle_s: float = 1.0  # s the target waits at the line's start
    pad_radius: float = 0.015  # m, the pad sphere; its centre lies pad_radius below the tool centre point
    pad_friction: float = 0.1  # a damp pad on a smooth table (with 0.3 the pad sticks and slips: force chatter)
    pad_timeconst: float = 0.05  # s: the pad's contact softness (MuJoCo solref time constant; a sponge, not steel)
    force_site_radius: float = 0.08  # m around the tool point: contacts counted by the force sensor
    contact_force: float = 2.0  # N: the pad touches the table above this force
    press_force: float = 50.0  # N: the press reward grows up to this force
    force_limit: float = 30.0  # N: above this the force_limit cost is 1
    force_obs_scale: float = 0.02  # the observed force is force x scale (1 at 50 N)
    wipe_tolerance: float = 0.03  # m, horizontal tool-to-target distance that counts as wiping
    success_fraction: float = 0.8  # success: wiping during this fraction of the moving phase
    init_joint_noise: float = 0.1
    rewards: dict[str, float] = field(default_factory=lambda: {"distance": -2.0, "precision": 2.0, "press": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pad_radius", "pad_timeconst", "press_force", "force_obs_scale", "wipe_tolerance"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.pad_friction < 0:
            raise ConfigError(f"pad_friction must be >= 0, got {self.pad_friction}")
        if self.force_site_radius <= 2 * self.pad_radius:
            raise ConfigError(f"force_site_radius ({self.force_site_radius}) must exceed the pad's reach below the "
                              f"tool point (2 x pad_radius = {2 * self.pad_radius})")
        if not 0 < self.success_fraction <= 1:
            raise ConfigError(f"success_fraction must be in (0, 1], got {self.success_fraction}")
        for name in ("line_x", "line_y"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ConfigError(f"{name} must be [low, high] with low < high, got {[lo, hi]}")
        if not 0 < self.contact_force < self.force_limit:
            raise ConfigError(f"contact_force must be in (0, force_limit={self.force_limit}), got {self.contact_force}")
        if self.settle_s >= self.episode_length_s:
            raise ConfigError(f"settle_s ({self.settle_s}) must be shorter than episode_length_s "
                              f"({self.episode_length_s})")
        span = math.hypot(self.line_x[1] - self.line_x[0], self.line_y[1] - self.line_y[0])
        if not 0 < self.line_min_length < span:
            raise ConfigError(f"line_min_length must be in (0, {span:.3f}) (the line box's diagonal), got "
                              f"{self.line_min_length}")


class WipeTask(ReachTask):
    """Policy observations: reach's (joints, tool point, target, target error, last action) plus the contact force
    and the target's velocity. The target's height is where the tool point is when the pad touches the table."""

    cfg_cls = WipeCfg
    cfg: WipeCfg

    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        super().add_to_scene(spec, render)
        c = self.cfg
        site = spec.site(self.robot_cfg.end_effector)
        tool = site.parent
        down = [0.0, 0.0, c.pad_radius]  # the tool frame's z points out of the hand, into the table
        centre = [float(site.pos[i] + down[i]) for i in range(3)]
        tool.add_geom(name="pad", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[c.pad_radius, 0, 0], pos=centre,
                      friction=[c.pad_friction, 0.005, 0.0001], priority=1, solref=[c.pad_timeconst, 1.0], contype=1,
                      conaffinity=0,
                      rgba=[0.2, 0.5, 0.9, 1.0])
        tool.add_site(name="force_zone", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[c.force_site_radius, 0, 0],
                      pos=[float(p) for p in site.pos], rgba=[0, 0, 0, 0])
        spec.add_sensor(name="ee_force", type=mujoco.mjtSensor.mjSENS_TOUCH, objtype=mujoco.mjtObj.mjOBJ_SITE,
                        objname="force_zone")

    def setup(self) -> None:
        super().setup()
        n, dev = self.num_envs, self.device
        self._force_cols = self.sensor("ee_force")
        self.line_start = torch.zeros(n, 3, device=dev)
        self.line_end = torch.zeros(n, 3, device=dev)
        self.target_vel = torch.zeros(n, 3, device=dev)
        self.wiping_steps = torch.zeros(n, device=dev)
        self.force = torch.zeros(n, device=dev)
        self.peak_force = torch.zeros(n, device=dev)
        self.episode_peak_force = torch.zeros(n, device=dev)
        self._settle_steps = int(round(self.cfg.settle_s / self.dt))
        self._moving_steps = self.max_episode_steps - self._settle_steps - 1  # the last step observes the end
        self._counted_steps = self.max_episode_steps - self._settle_steps  # steps after the settling, all scored

    def _draw_lines(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n lines (start, end) [n, 3] in the line box, each at least line_min_length long (rejection sampling in
        a few batched rounds; a line still short after them is stretched along its direction)."""
        c, g, dev = self.cfg, self.generator, self.device
        lo = torch.tensor([c.line_x[0], c.line_y[0]], device=dev)
        hi = torch.tensor([c.line_x[1], c.line_y[1]], device=dev)
        start = lo + (hi - lo) * torch.rand((n, 2), generator=g, device=dev)
        end = lo + (hi - lo) * torch.rand((n, 2), generator=g, device=dev)
        for _ in range(8):
            short = (end - start).norm(dim=1) < c.line_min_length
            fresh = lo + (hi - lo) * torch.rand((n, 2), generator=g, device=dev)
            end = torch.where(short.unsqueeze(1), fresh, end)
        d = end - start
        length = d.norm(dim=1, keepdim=True).clamp(min=1e-6)
        end = torch.where(length < c.line_min_length, start + d / length * c.line_min_length, end)
        z = torch.full((n, 1), self._contact_height, device=dev)
        return torch.cat([start, z], dim=1), torch.cat([end, z], dim=1)

    @property
    def _contact_height(self) -> float:
        """Tool-point height (m) when the pad rests on the table."""
        return 2.0 * self.cfg.pad_radius

    def reset_idx(self, mask: torch.Tensor) -> None:
        super().reset_idx(mask)  # joints and the episode bookkeeping (its uniform target is replaced here)
        start, end = self._draw_lines(self.num_envs)
        rows = mask.unsqueeze(1)
        self.line_start = torch.where(rows, start, self.line_start)
        self.line_end = torch.where(rows, end, self.line_end)
        self.wiping_steps = torch.where(mask, 0.0, self.wiping_steps)
        self.episode_peak_force = torch.where(mask, 0.0, self.episode_peak_force)
        self._move_target()

    def _move_target(self) -> None:
        """The target at the current episode step (waiting, then moving along the line)."""
        moved = (self.episode_step - self._settle_steps).clamp(min=0).float() / self._moving_steps
        moving = (moved > 0) & (moved < 1)
        path = self.line_end - self.line_start
        self.target = self.line_start + path * moved.clamp(max=1.0).unsqueeze(1)
        self.target_vel = torch.where(moving.unsqueeze(1), path / (self._moving_steps * self.dt), 0.0)

    def update_state(self) -> None:
        super().update_state()
        forces = self.sensors[:, :, self._force_cols].squeeze(-1).float()  # [N, decimation]
        self.force = forces.mean(dim=1)
        self.peak_force = forces.max(dim=1).values
        self.planar_error = (self.target - self.ee_pos)[:, :2].norm(dim=1)

    def after_step(self) -> None:
        super().after_step()
        wiping = (self.force > self.cfg.contact_force) & (self.planar_error < self.cfg.wipe_tolerance)
        moving = self.episode_step > self._settle_steps
        self.wiping_steps = self.wiping_steps + (wiping & moving).float()
        self.episode_peak_force = torch.maximum(self.episode_peak_force, self.peak_force)
        self._move_target()  # the target of the next step, observed with it
        self.distance = (self.target - self.ee_pos).norm(dim=1)
        self.planar_error = (self.target - self.ee_pos)[:, :2].norm(dim=1)

    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        groups = super().default_observations()
        groups["policy"] = [*groups["policy"][:-1], ObsTermCfg(term="ee_force"), ObsTermCfg(term="target_vel"),
                            groups["policy"][-1]]
        return groups

    def _obs_ee_force(self) -> torch.Tensor:
        """Contact force at the tool (N) x force_obs_scale, normal to the surface, averaged over the policy step."""
        return (self.force * self.cfg.force_obs_scale).unsqueeze(1)

    def _obs_target_vel(self) -> torch.Tensor:
        """Velocity of the target (m/s, base frame)."""
        return self.target_vel

    def command_ranges(self) -> dict[str, tuple[float, float]]:
        c = self.cfg
        return {"line_x": c.line_x, "line_y": c.line_y}

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"ee_distance": self.distance, "contact_force": self.force}

    def wiped_fraction(self) -> torch.Tensor:
        """Fraction of the moving phase so far spent wiping (pad on the table within wipe_tolerance of the target)."""
        return self.wiping_steps / self._counted_steps

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        wiped = self.wiped_fraction()
        return {"success": (wiped >= self.cfg.success_fraction).float(), "wiped": wiped,
                "peak_force": self.episode_peak_force}

    def _reward_press(self) -> torch.Tensor:
        """Contact force up to press_force, normalized to [0, 1], where the pad is on the line: weighted by
        exp(-horizontal error / wipe_tolerance) (pressing elsewhere cleans nothing)."""
        on_line = torch.exp(-self.planar_error / self.cfg.wipe_tolerance)
        return (self.force / self.cfg.press_force).clamp(0.0, 1.0) * on_line

    def _cost_force_limit(self) -> torch.Tensor:
        """1 when the contact force exceeded force_limit at any physics substep of this step."""
        return (self.peak_force > self.cfg.force_limit).float()
