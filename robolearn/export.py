"""`robolearn export RUN`: checkpoint -> policy bundle (policy.onnx + deploy.yaml + parity.npz).

The ONNX graph is the deterministic actor with the observation normalizer baked in; a distilled student's
input is its stacked history (manifest `policy.history` frames, oldest first). The exporter records
observations by running the policy in the training task, checks onnxruntime against torch on them
(max abs error <= 1e-5), and stores a sample so the robot computer can repeat the check at load time.
"""

from __future__ import annotations

import datetime
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robolearn.deploy.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    PARITY,
    BundleManifest,
    JointSpec,
    ObsTerm,
    OnnxPolicy,
    PolicySpec,
    sha256_file,
    write_manifest,
)
from robolearn.errors import BundleError
from robolearn.learn.checkpoint import load_policy, run_folder
from robolearn.learn.config import TrainCfg
from robolearn.learn.history import PolicyInput
from robolearn.sim.robots.urdf_import import resolve_urdf_path, urdf_velocity_limits
from robolearn.sim.tasks import Task, make_task

__all__ = ["ExportReport", "export_run", "EXPORT_TOLERANCE"]

EXPORT_TOLERANCE = 1e-5
PARITY_SAMPLES = 64


class _DeterministicActor(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act_mean(obs)


@dataclass
class ExportReport:
    folder: Path
    parity_max_error: float
    parity_samples: int
    obs_dim: int
    action_dim: int
    onnx_bytes: int


def _onnx_bytes(actor: nn.Module, obs_dim: int) -> bytes:
    example = torch.zeros(2, obs_dim)
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(actor, (example,), buffer, input_names=["obs"], output_names=["actions"],
                          dynamic_shapes={"obs": {0: torch.export.Dim("batch", min=1)}}, dynamo=True,
                          external_data=False, verbose=False)
    return buffer.getvalue()


@torch.no_grad()
def _record_observations(policy: nn.Module, task: Task, steps: int) -> np.ndarray:
    """The policy's inputs [(steps + 1) * N, history * P] along its own rollout (stacked frames for students)."""
    policy_input = PolicyInput(policy, task.num_envs)
    x = policy_input(task.reset())
    rows = [x]
    for _ in range(steps):
        obs, _, _, terminated, truncated, _ = task.step(policy.act_mean(x))
        x = policy_input(obs, terminated | truncated)
        rows.append(x)
    return torch.cat(rows).numpy()


def _manifest(task: Task, cfg: TrainCfg, run: Path, ckpt: dict, sha256: str, history: int) -> BundleManifest:
    robot, rcfg = task.robot, task.robot_cfg
    velocity = urdf_velocity_limits(resolve_urdf_path(rcfg.urdf, relative_to=rcfg.folder))
    missing = [j for j in robot.joint_names if j not in velocity]
    if missing:
        raise BundleError(f"{rcfg.urdf}: joints {missing} declare no <limit velocity>; the bundle needs one")
    layout = task.policy_obs_layout()
    return BundleManifest(
        format=BUNDLE_FORMAT, version=BUNDLE_VERSION, task=cfg.task, robot=rcfg.name, kind=rcfg.kind,
        policy=PolicySpec(sha256=sha256, obs_dim=history * task.obs_dims["policy"], action_dim=task.num_actions,
                          history=history),
        observation=[ObsTerm(name=t["name"], dim=t["dim"], scale=t["scale"]) for t in layout],
        joints=JointSpec(
            names=list(robot.joint_names),
            default_pos=[float(x) for x in robot.default_joint_pos],
            kp=[float(x) for x in robot.kp],
            kd=[float(x) for x in robot.kd],
            pos_limits=[(float(lo), float(hi)) for lo, hi in robot.joint_range],
            vel_limits=[velocity[j] for j in robot.joint_names],
            torque_limits=[float(x) for x in robot.effort_limit],
        ),
        action_scale=task.cfg.action_scale, clip_actions=task.cfg.clip_actions,
        policy_hz=1.0 / task.dt, sim_hz=1.0 / task.cfg.sim_dt,
        commands={k: (float(lo), float(hi)) for k, (lo, hi) in task.command_ranges().items()},
        source={"run": str(run), "iteration": int(ckpt.get("iteration", 0)),
                "exported": datetime.datetime.now().isoformat(timespec="seconds")},
    )


def export_run(run: str | Path, output: str | Path | None = None, *, record_envs: int = 16,
               record_steps: int = 100, seed: int = 0, checkpoint: int | None = None) -> ExportReport:
    """Export the run's latest checkpoint (or model_<checkpoint>.pt, or the checkpoint file `run`) to the bundle
    folder `output` (default RUN/export). Raises BundleError if onnxruntime and torch disagree by more than 1e-5."""
    cfg, policy, ckpt = load_policy(run, checkpoint=checkpoint)
    if policy.reads_privileged:
        raise BundleError(f"{run}: this policy is a privileged teacher (its actor reads simulator-only state); "
                          f"distil it into a deployable student with `robolearn distill --teacher {run}`")
    policy.eval()
    folder = Path(output) if output is not None else run_folder(run) / "export"
    task = make_task(cfg.task, record_envs, backend="mujoco", seed=seed, overrides=cfg.task_overrides)
    try:
        frame_dim = task.obs_dims["policy"]
        if sum(t["dim"] for t in task.policy_obs_layout()) != frame_dim:
            raise BundleError(f"task {cfg.task}: policy_terms do not add up to the policy observation ({frame_dim})")
        obs_dim = policy.actor_dim  # history * frame_dim
        recorded = _record_observations(policy, task, record_steps)
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = folder / "policy.onnx"
        onnx_path.write_bytes(_onnx_bytes(_DeterministicActor(policy), obs_dim))
        with torch.no_grad():
            reference = policy.act_mean(torch.from_numpy(recorded)).numpy()
        manifest = _manifest(task, cfg, run, ckpt, sha256_file(onnx_path), policy.history)
        runtime = OnnxPolicy(onnx_path, manifest.policy).batch(recorded)
        error = float(np.abs(runtime - reference).max())
        if not error <= EXPORT_TOLERANCE:
            raise BundleError(f"{onnx_path}: onnxruntime differs from torch by {error:.2e} on {len(recorded)} "
                              f"recorded observations (tolerance {EXPORT_TOLERANCE:.0e})")
        pick = np.random.default_rng(seed).choice(len(recorded), size=min(PARITY_SAMPLES, len(recorded)),
                                                  replace=False)
        np.savez(folder / PARITY, obs=recorded[pick], actions=reference[pick])
        write_manifest(manifest, folder)
    finally:
        task.close()
    return ExportReport(folder=folder, parity_max_error=error, parity_samples=len(recorded), obs_dim=obs_dim,
                        action_dim=task.num_actions, onnx_bytes=onnx_path.stat().st_size)
