"""The safety filter: a learned risk critic Q_risk(s, a) between the policy and the controller, at control rate.

A bundle with a `safety_critic` graph (inputs: the current observation frame and an action; output: the risk, the
discounted probability of a constraint violation, see docs/bundle.md) gets this filter in the deploy runtime. At
every control tick (500 Hz on the Go2, up to 1 kHz on arms, above the policy's 50 Hz) it scores the action being
executed in the state just measured (a critic whose graph has `history` H > 1 reads the frames of the last H - 1
policy steps, `observe`d by the runtime, then the frame measured now):

- risk <= threshold: the action passes;
- else the filter scores candidates in one batch (the action shrunk toward the default pose, 0 in action units, or
  with `shrink_toward: measured` toward the action that holds the measured joints, in `shrink_steps` steps, and
  `random_candidates` Gaussian perturbations of it) and executes the lowest-risk one
  (`selection: lowest_risk`) or the one closest to the command among those at or below the threshold
  (`closest_safe`); if none is at or below it, the runtime damps (`Decision.damp`);
- a risk that is NaN/inf, or a critic that fails, is a fault: the runtime damps.

While the risk of the commanded action is above `impedance_threshold`, the joint gains (the arm's impedance) are
scaled by `impedance_scale`, and ramp back to 1 over `impedance_recover_s` once it is not. Every intervention is
counted and the latest are kept with their risks (`FilterLog`) for the deploy report.

Numpy and onnxruntime only (the deploy layer imports no torch).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from robolearn.deploy.bundle import BundleError, GraphSpec, OnnxGraph
from robolearn.deploy.profile import SafetyFilterCfg

__all__ = ["Decision", "FilterLog", "SafetyFilter"]


@dataclass(frozen=True)
class Decision:
    action: np.ndarray  # the action to execute (the commanded one, or the chosen candidate)
    risk: float  # Q_risk of the commanded action
    chosen_risk: float  # Q_risk of the executed action (= risk when it passed)
    replaced: bool  # a candidate replaced the commanded action
    damp: str | None  # a reason to damp (no candidate under the threshold, or a critic fault), else None


@dataclass
class FilterLog:
    ticks: int = 0  # actions scored
    replaced: int = 0  # ticks where a candidate replaced the command
    damped: int = 0  # ticks that sent the robot to damping
    max_risk: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=1000))  # (time, risk, chosen risk, kind)

    def summary(self) -> dict[str, float | int]:
        return {"ticks": self.ticks, "replaced": self.replaced, "damped": self.damped, "max_risk": self.max_risk}


class SafetyFilter:
    """`decide(frame, action, now) -> Decision`; `gain_scale(now)` for the controller's gains."""

    def __init__(self, graph: OnnxGraph, cfg: SafetyFilterCfg, *, frame_dim: int, action_dim: int,
                 seed: int = 0) -> None:
        spec = graph.spec
        self.history = spec.history
        self.obs_name, self.action_name = _inputs(spec, frame_dim, action_dim)
        self.graph, self.cfg = graph, cfg
        # the frames of the last history - 1 policy steps before the newest one (`_newest`), oldest first
        self._past: deque[np.ndarray] = deque(maxlen=max(self.history - 1, 1))
        self._newest: np.ndarray | None = None
        self.output = spec.outputs[0].name
        self.rng = np.random.default_rng(seed)
        k = np.arange(1, cfg.shrink_steps + 1, dtype=np.float32)
        self.shrink = (1.0 - k / cfg.shrink_steps)[:, None]  # fractions of the command toward 0, down to 0
        self.log = FilterLog()
        self._high_until: float | None = None  # last time the risk was above the impedance threshold

    def _risk(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        out = self.graph.session.run([self.output], {self.obs_name: frames, self.action_name: actions})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def candidates(self, action: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
        """[K, A] float32: the command shrunk toward the default pose (or toward `measured`, the action holding the
        measured joints, with shrink_toward: measured), then random perturbations of it."""
        cfg = self.cfg
        noise = self.rng.standard_normal((cfg.random_candidates, action.shape[0]), dtype=np.float32) * cfg.noise
        anchor = np.zeros_like(action) if measured is None else np.asarray(measured, dtype=np.float32)
        return np.concatenate([anchor + self.shrink * (action - anchor), action + noise]).astype(np.float32)

    def observe(self, frame: np.ndarray) -> None:
        """A policy step's observation frame (only a critic with a history keeps them)."""
        if self.history > 1:
            if self._newest is not None:
                self._past.append(self._newest)
            self._newest = np.asarray(frame, dtype=np.float32).copy()

    def stack(self, frame: np.ndarray) -> np.ndarray:
        """[1, history x frame]: the critic's input with `frame` measured now (the oldest frame repeated to fill a
        short history, as on a fresh start)."""
        now = np.asarray(frame, dtype=np.float32)
        if self.history == 1:
            return now[None]
        past = list(self._past) if self._past else [now]
        past = [past[0]] * (self.history - 1 - len(past)) + past
        return np.concatenate([*past, now])[None]

    def decide(self, frame: np.ndarray, action: np.ndarray, now: float, measured: np.ndarray | None = None
               ) -> Decision:
        """The action to execute. `frame`: the observation frame measured now. `measured`: the action that holds
        the measured joints (needed with shrink_toward: measured)."""
        if self.cfg.shrink_toward == "measured" and measured is None:
            raise ValueError("safety filter with shrink_toward: measured needs the measured action")
        a = np.asarray(action, dtype=np.float32)
        f = self.stack(frame)
        self.log.ticks += 1
        try:
            risk = float(self._risk(f, a[None])[0])
        except Exception as exc:  # onnxruntime's own exception types
            return self._damp(a, float("nan"), f"safety critic failed: {type(exc).__name__}: {exc}", now)
        if not np.isfinite(risk):
            return self._damp(a, risk, f"safety critic returned {risk} for the commanded action", now)
        self.log.max_risk = max(self.log.max_risk, risk)
        if risk > self.cfg.impedance_threshold:
            self._high_until = now
        if risk <= self.cfg.threshold:
            return Decision(a, risk, risk, False, None)
        cands = self.candidates(a, measured if self.cfg.shrink_toward == "measured" else None)
        try:
            risks = self._risk(np.repeat(f, len(cands), axis=0), cands)
        except Exception as exc:
            return self._damp(a, risk, f"safety critic failed: {type(exc).__name__}: {exc}", now)
        risks = np.where(np.isfinite(risks), risks, np.inf)  # a NaN candidate is never chosen
        best = int(np.argmin(risks))
        safe = risks <= self.cfg.threshold
        if self.cfg.selection == "closest_safe" and safe.any():  # the least change among the safe candidates
            best = int(np.argmin(np.where(safe, np.linalg.norm(cands - a, axis=1), np.inf)))
        if risks[best] > self.cfg.threshold:
            return self._damp(a, risk, f"safety filter: risk {risk:.3f} over the threshold {self.cfg.threshold:g} "
                                       f"and no candidate under it (lowest {risks[best]:.3f})", now)
        self.log.replaced += 1
        self.log.recent.append((now, risk, float(risks[best]), "replaced"))
        return Decision(cands[best], risk, float(risks[best]), True, None)

    def _damp(self, a: np.ndarray, risk: float, reason: str, now: float) -> Decision:
        self.log.damped += 1
        self.log.recent.append((now, risk, float("nan"), "damp"))
        return Decision(a, risk, float("nan"), False, reason)

    def gain_scale(self, now: float) -> float:
        """1 normally; `impedance_scale` while the risk is high, ramping back to 1 over `impedance_recover_s`."""
        if self._high_until is None:
            return 1.0
        low, recover = self.cfg.impedance_scale, self.cfg.impedance_recover_s
        progress = (now - self._high_until) / recover if recover > 0 else 1.0
        if progress >= 1.0:
            self._high_until = None
            return 1.0
        return low + (1.0 - low) * max(progress, 0.0)

    def reset(self) -> None:
        self._high_until = None
        self._past.clear()
        self._newest = None


def _inputs(spec: GraphSpec, frame_dim: int, action_dim: int) -> tuple[str, str]:
    """The critic's (observation input, action input) names, checked against the bundle's frame and action."""
    by_meaning = {t.meaning: t for t in spec.inputs}
    obs, act = by_meaning.get("observation"), by_meaning.get("action")
    if obs is None or act is None or len(spec.inputs) != 2:
        raise BundleError(f"graph {spec.name!r} (safety_critic): expected two inputs with meanings observation and "
                          f"action, got {[(t.name, t.meaning) for t in spec.inputs]}")
    if spec.history < 1 or obs.shape[-1] != spec.history * frame_dim or act.shape[-1] != action_dim:
        raise BundleError(f"graph {spec.name!r} (safety_critic): inputs {obs.name} [{obs.shape[-1]}] and {act.name} "
                          f"[{act.shape[-1]}] must be its history of {spec.history} observation frame(s) "
                          f"[{spec.history} x {frame_dim}] and one action [{action_dim}]")
    return obs.name, act.name
