"""The policy bundle: `policy.onnx` + `deploy.yaml` (+ `parity.npz`), the only thing the deploy runtime reads.

deploy.yaml holds everything a robot computer needs to run the policy without training code: joint names
in policy order, default pose, action scale and clip, PD gains, joint position/velocity/torque limits, the
observation layout (named terms with dims and scales, and the history length), the policy and simulation
rates, the command ranges seen in training, and the SHA-256 of policy.onnx. parity.npz holds recorded
observations and the exporter's torch actions for them, so the robot computer checks its own onnxruntime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robolearn.config import declarations_root, from_dict, load_yaml, to_dict
from robolearn.errors import BundleError, ConfigError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "MANIFEST", "ObsTerm", "JointSpec", "PolicySpec", "BundleManifest",
           "sha256_file", "read_manifest", "write_manifest", "OnnxPolicy", "Bundle", "shipped_bundles", "load_bundle"]

BUNDLE_FORMAT = "robolearn-bundle"
BUNDLE_VERSION = 1
MANIFEST = "deploy.yaml"
PARITY = "parity.npz"
PARITY_TOLERANCE = 1e-4  # onnxruntime on the robot vs the exporter's torch (the exporter itself checks 1e-5)


@dataclass(kw_only=True)
class ObsTerm:
    name: str
    dim: int
    scale: list[float]


@dataclass(kw_only=True)
class JointSpec:
    names: list[str]  # policy order
    default_pos: list[float]
    kp: list[float]
    kd: list[float]
    pos_limits: list[tuple[float, float]]
    vel_limits: list[float]
    torque_limits: list[float]


@dataclass(kw_only=True)
class PolicySpec:
    file: str = "policy.onnx"
    sha256: str
    input: str = "obs"
    output: str = "actions"
    obs_dim: int
    action_dim: int
    history: int = 1  # frames of the observation layout, oldest first


@dataclass(kw_only=True)
class BundleManifest:
    format: str
    version: int
    task: str
    robot: str
    kind: str  # legged | arm
    policy: PolicySpec
    observation: list[ObsTerm]
    joints: JointSpec
    action_scale: float
    clip_actions: float
    policy_hz: float
    sim_hz: float
    commands: dict[str, tuple[float, float]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format != BUNDLE_FORMAT:
            raise ConfigError(f"format is {self.format!r}, expected {BUNDLE_FORMAT!r}")
        if self.version != BUNDLE_VERSION:
            raise ConfigError(f"version {self.version} is not supported (this robolearn reads {BUNDLE_VERSION})")
        n = len(self.joints.names)
        for key in ("default_pos", "kp", "kd", "pos_limits", "vel_limits", "torque_limits"):
            if len(getattr(self.joints, key)) != n:
                raise ConfigError(f"joints.{key} has {len(getattr(self.joints, key))} entries, joints.names has {n}")
        if self.policy.action_dim != n:
            raise ConfigError(f"policy.action_dim is {self.policy.action_dim}, but there are {n} joints")
        frame = sum(t.dim for t in self.observation)
        if frame * self.policy.history != self.policy.obs_dim:
            raise ConfigError(f"observation terms sum to {frame} x history {self.policy.history}, "
                              f"but policy.obs_dim is {self.policy.obs_dim}")
        for t in self.observation:
            if len(t.scale) != t.dim:
                raise ConfigError(f"observation term {t.name!r}: {len(t.scale)} scales for dim {t.dim}")

    @property
    def frame_dim(self) -> int:
        return sum(t.dim for t in self.observation)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(manifest: BundleManifest, folder: Path) -> Path:
    path = Path(folder) / MANIFEST
    path.write_text(yaml.safe_dump(to_dict(manifest), sort_keys=False, default_flow_style=None, width=120))
    return path


def read_manifest(folder: Path) -> BundleManifest:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        shipped = ", ".join(shipped_bundles()) or "none"
        raise BundleError(f"policy bundle not found: {folder} (expected a folder with {MANIFEST} and policy.onnx, "
                          f"or a shipped bundle: {shipped})")
    if not path.is_file():
        raise BundleError(f"{folder}: not a policy bundle, {MANIFEST} is missing")
    try:
        return from_dict(BundleManifest, load_yaml(path), where=str(path))
    except ConfigError as exc:
        msg = str(exc)
        raise BundleError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


class OnnxPolicy:
    """policy.onnx in onnxruntime, one thread: `policy(obs [obs_dim]) -> actions [action_dim]` (float32)."""

    def __init__(self, path: Path, spec: PolicySpec) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for malformed models
            raise BundleError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if spec.input not in inputs or inputs[spec.input][-1] != spec.obs_dim:
            raise BundleError(f"{path}: expected input {spec.input!r} of size {spec.obs_dim}, the model has {inputs}")
        if spec.output not in outputs or outputs[spec.output][-1] != spec.action_dim:
            raise BundleError(f"{path}: expected output {spec.output!r} of size {spec.action_dim}, "
                              f"the model has {outputs}")
        self.input, self.output = spec.input, spec.output

    def batch(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: np.asarray(obs, dtype=np.float32)})[0]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.batch(np.asarray(obs, dtype=np.float32)[None])[0]


@dataclass
class Bundle:
    folder: Path
    manifest: BundleManifest
    policy: OnnxPolicy
    parity_error: float | None  # max |onnxruntime - exporter torch| on the recorded observations


def shipped_bundles() -> list[str]:
    """Bundles that ship with robolearn (policies/bundles/<name>/)."""
    root = declarations_root() / "policies" / "bundles"
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def load_bundle(folder: str | Path) -> Bundle:
    """Read and verify a bundle (a folder, or the name of a shipped one): manifest fields, ONNX checksum,
    model input/output sizes, parity."""
    folder = Path(folder)
    if not folder.exists() and len(folder.parts) == 1 and folder.name in shipped_bundles():
        folder = declarations_root() / "policies" / "bundles" / folder.name
    manifest = read_manifest(folder)
    onnx_path = folder / manifest.policy.file
    if not onnx_path.is_file():
        raise BundleError(f"{folder}: {manifest.policy.file} is missing")
    digest = sha256_file(onnx_path)
    if digest != manifest.policy.sha256:
        raise BundleError(f"{onnx_path}: checksum mismatch, sha256 {digest[:16]}... but {MANIFEST} says "
                          f"{manifest.policy.sha256[:16]}...; the file was changed or corrupted, re-export the bundle")
    policy = OnnxPolicy(onnx_path, manifest.policy)
    parity_error = None
    if (folder / PARITY).is_file():
        data = np.load(folder / PARITY)
        parity_error = float(np.abs(policy.batch(data["obs"]) - data["actions"]).max())
        if not parity_error <= PARITY_TOLERANCE:
            raise BundleError(f"{folder / PARITY}: onnxruntime here differs from the exporter by {parity_error:.2e} "
                              f"(tolerance {PARITY_TOLERANCE:.0e})")
    return Bundle(folder=folder, manifest=manifest, policy=policy, parity_error=parity_error)
