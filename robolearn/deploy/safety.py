"""The safety layer between the policy and the low-level controller.

Checks, each a reason string when it trips (None when all is well):
- robot state: NaN/inf, staleness (watchdog), joints beyond their range, joint speed, body tilt (legged);
- policy: NaN/inf observations and actions;
- targets: NaN/inf, beyond the joint range by more than a margin (trip), else clamped into the range,
  rate-limited, and clipped so the PD torque stays within the torque limits.
Arrays are in the policy's joint order; messages name the joint.
"""

from __future__ import annotations

import math
import re

import numpy as np

from robolearn.deploy.observations import projected_gravity
from robolearn.deploy.profile import SafetyCfg
from robolearn.errors import ConfigError

__all__ = ["SafetyLayer"]


class SafetyLayer:
    def __init__(self, cfg: SafetyCfg, *, joint_names: list[str], pos_limits: np.ndarray, vel_limits: np.ndarray,
                 torque_limits: np.ndarray, control_dt: float, legged: bool) -> None:
        self.cfg = cfg
        self.names = joint_names
        self.lo, self.hi = np.asarray(pos_limits, dtype=float).T
        self.vel = np.asarray(vel_limits, dtype=float) * cfg.velocity_limit_scale
        self.torque = np.asarray(torque_limits, dtype=float) * cfg.torque_limit_scale
        self.max_step = np.array([self._rate(j) for j in joint_names]) * control_dt
        self.legged = legged
        self.min_up = math.cos(math.radians(cfg.max_tilt_deg))

    def _rate(self, joint: str) -> float:
        hits = [r for pattern, r in self.cfg.joint_target_rates.items() if re.fullmatch(pattern, joint)]
        if len(hits) > 1:
            raise ConfigError(f"safety.joint_target_rates: joint {joint!r} matches several patterns of "
                              f"{list(self.cfg.joint_target_rates)}")
        rate = hits[0] if hits else self.cfg.max_target_rate
        if not rate > 0:
            raise ConfigError(f"safety.joint_target_rates: the rate of joint {joint!r} must be > 0, got {rate}")
        return float(rate)

    def _first(self, bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    def check_state(self, q: np.ndarray, dq: np.ndarray, quat: np.ndarray | None, gyro: np.ndarray | None,
                    age_s: float, *, active: bool) -> str | None:
        for label, value in (("q", q), ("dq", dq), ("imu quaternion", quat), ("imu gyro", gyro)):
            if value is not None and not np.all(np.isfinite(value)):
                where = f" ({self.names[self._first(~np.isfinite(value))]})" if label in ("q", "dq") else ""
                return f"robot state has NaN/inf in {label}{where}"
        if age_s * 1000.0 > self.cfg.state_timeout_ms:
            return (f"robot state is stale: last one {age_s * 1000.0:.1f} ms ago "
                    f"(limit {self.cfg.state_timeout_ms:g} ms)")
        if not active:
            return None
        m = self.cfg.joint_limit_margin
        out = (q < self.lo - m) | (q > self.hi + m)
        if out.any():
            i = self._first(out)
            return (f"joint {self.names[i]} at {q[i]:.3f} rad is beyond its range "
                    f"[{self.lo[i]:.3f}, {self.hi[i]:.3f}] by more than {m:g} rad")
        fast = np.abs(dq) > self.vel
        if fast.any():
            i = self._first(fast)
            return f"joint {self.names[i]} moves at {dq[i]:.2f} rad/s, over its limit {self.vel[i]:.2f} rad/s"
        if self.legged and quat is not None:
            up = -projected_gravity(quat)[2]  # cos(tilt)
            if up < self.min_up:
                tilt = math.degrees(math.acos(max(-1.0, min(1.0, up))))
                return f"body tilted {tilt:.0f} deg (limit {self.cfg.max_tilt_deg:g} deg)"
        return None

    @staticmethod
    def check_finite(label: str, value: np.ndarray) -> str | None:
        if not np.all(np.isfinite(value)):
            return f"policy {label} has NaN/inf at index {int(np.flatnonzero(~np.isfinite(value))[0])}"
        return None

    def filter_targets(self, target: np.ndarray, previous: np.ndarray, q: np.ndarray, dq: np.ndarray,
                       kp: np.ndarray, kd: np.ndarray) -> tuple[np.ndarray, str | None]:
        """(safe joint targets, trip reason or None)."""
        if not np.all(np.isfinite(target)):
            return previous, f"joint target is NaN/inf for {self.names[self._first(~np.isfinite(target))]}"
        m = self.cfg.target_limit_margin
        out = (target < self.lo - m) | (target > self.hi + m)
        if out.any():
            i = self._first(out)
            return previous, (f"target {target[i]:.3f} rad for joint {self.names[i]} is beyond its range "
                              f"[{self.lo[i]:.3f}, {self.hi[i]:.3f}] by more than {m:g} rad")
        safe = np.clip(target, self.lo, self.hi)
        safe = np.clip(safe, previous - self.max_step, previous + self.max_step)
        # |kp (q* - q) - kd dq| <= torque limit  <=>  q* in q + (kd dq +- limit) / kp
        stiff = kp > 0
        if stiff.any():
            k = np.where(stiff, kp, 1.0)
            low = q + (kd * dq - self.torque) / k
            high = q + (kd * dq + self.torque) / k
            safe = np.where(stiff, np.clip(safe, low, high), safe)
        return safe, None
