"""`robolearn export RUN`: a deployable Policy -> a policy bundle (ONNX graph(s) + deploy.yaml + parity.npz).

`export_run` loads a checkpoint as an `ActorPolicy` (the deterministic actor with the observation normalizer
baked in; a distilled student reads its stacked history) and hands it to `export_policy`, which takes any
`robolearn.learn.policy.Policy` (chunked ones included) and optional extra graphs (a safety critic, a
high-level policy). The exporter records observations by running the policy in the training task, checks
onnxruntime against torch on them (max abs error <= 1e-5), stores a sample so the robot computer can repeat
the check at load time, and writes deploy.yaml version 2: the whole training contract, read from the task
(observation terms, action mapping, PD law, latency, randomization, initial state, robot model). docs/bundle.md
documents the format. `upgrade_bundle` turns a version 1 bundle into version 2 from its task's config.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch
from torch import nn

from robolearn.config import to_dict
from robolearn.deploy.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    MANIFEST,
    PARITY,
    ActionSpec,
    BundleManifest,
    ChunkSpec,
    CollisionGeom,
    CommandMapSpec,
    CommandSpec,
    ControlSpec,
    DiffusionCamera,
    DiffusionSpec,
    DomainSpec,
    EeActionSpec,
    GraphSpec,
    InitialStateSpec,
    JointSpec,
    KinematicLink,
    NavigationSpec,
    ObsTerm,
    OnnxGraph,
    OnnxPolicy,
    RobotModelSpec,
    SimulatorSpec,
    TensorSpec,
    UrdfRef,
    diffusion_parity,
    read_manifest,
    sha256_file,
    write_manifest,
)
from robolearn.deploy.observations import COMMAND_CONTRACT, TERM_CONTRACT
from robolearn.errors import BundleError, ConfigError
from robolearn.learn.checkpoint import load_checkpoint, load_policy, run_folder
from robolearn.learn.history import FrameHistory
from robolearn.learn.onnx_graph import onnx_bytes
from robolearn.learn.policy import ActorPolicy, Policy
from robolearn.sim.robots.urdf_import import resolve_urdf_path, urdf_velocity_limits
from robolearn.sim.tasks import Task, make_task
from robolearn.sim.tasks.gym_env import GYM_PREFIX

__all__ = ["ExportReport", "ExtraGraph", "export_run", "export_policy", "export_hierarchy", "export_diffusion",
           "add_graphs", "upgrade_bundle", "bundle_contract", "kinematic_chain", "onnx_bytes", "EXPORT_TOLERANCE"]

EXPORT_TOLERANCE = 1e-5
PARITY_SAMPLES = 64
ERD = "example-robot-data"
_SHAPES = {int(mujoco.mjtGeom.mjGEOM_SPHERE): "sphere", int(mujoco.mjtGeom.mjGEOM_CAPSULE): "capsule",
           int(mujoco.mjtGeom.mjGEOM_BOX): "box", int(mujoco.mjtGeom.mjGEOM_CYLINDER): "cylinder",
           int(mujoco.mjtGeom.mjGEOM_ELLIPSOID): "ellipsoid", int(mujoco.mjtGeom.mjGEOM_MESH): "mesh"}
_SIZE_DIMS = {"sphere": 1, "capsule": 2, "box": 3, "cylinder": 2, "ellipsoid": 3, "mesh": 0}


@dataclass
class ExportReport:
    folder: Path
    parity_max_error: float
    parity_samples: int
    obs_dim: int
    action_dim: int
    onnx_bytes: int
    graph_file: str = "policy.onnx"
    parity_of: str = "recorded observations"  # what the parity check compared
    tolerance: float = EXPORT_TOLERANCE  # a diffusion sampler's whole loop: DIFFUSION_EXPORT_TOLERANCE


@dataclass
class ExtraGraph:
    """A further graph for the bundle: `module(*inputs) -> outputs`, each input and output (name, size, meaning),
    batch first. E.g. a safety critic: inputs [("obs", 45, "observation"), ("action", 12, "action")], outputs
    [("q_risk", 1, "cost_value")], role safety_critic, at the control rate."""

    name: str
    role: str
    rate_hz: float
    module: nn.Module
    inputs: list[tuple[str, int, str]]
    outputs: list[tuple[str, int, str]]
    history: int = 1
    file: str = ""  # default <name>.onnx
    # rate_hz 0: the control rate the task trained with (a safety critic scores every control tick)


@torch.no_grad()
def _record_observations(policy: Policy, task: Task, steps: int) -> np.ndarray:
    """The policy's inputs [(steps + 1) * N, history * P] along its own rollout (stacked frames); a chunked policy
    runs its model every `execute` steps and applies its chunk's actions in between."""
    graph, n = policy.graph(), task.num_envs
    history = FrameHistory(n, policy.frame_dim, policy.history) if policy.history > 1 else None
    obs = task.reset()["policy"]
    x = obs if history is None else history.push(obs)
    rows, chunk = [x], None
    for k in range(steps):
        if policy.chunk is None:
            action = graph(x)
        else:
            if k % policy.chunk.execute == 0:
                chunk = graph(x)
            action = chunk[:, k % policy.chunk.execute]
        obs, _, _, terminated, truncated, _ = task.step(action)
        obs = obs["policy"]
        x = obs if history is None else history.push(obs, terminated | truncated)
        rows.append(x)
    return torch.cat(rows).numpy()


# -- the contract, from the task ---------------------------------------------------------------------------------
def _observation(task: Task, group: str = "policy") -> list[ObsTerm]:
    groups = task._obs_groups  # the task's declared observation groups (terms with scale and noise)
    noise = {e.term: e.noise * task.cfg.noise_scale for e in groups[group] if e.term}
    terms = []
    for t in task.policy_obs_layout(group):
        meaning = TERM_CONTRACT.get(t["name"])
        if meaning is None:
            raise BundleError(f"task {task.name}: observation term {t['name']!r} has no stated meaning "
                              f"(robolearn.deploy.observations.TERM_CONTRACT); a robot cannot rebuild it")
        terms.append(ObsTerm(name=t["name"], dim=t["dim"], scale=t["scale"], clip=None, units=meaning.units,
                             frame=meaning.frame, reference=meaning.reference, sign=meaning.sign,
                             noise=[float(noise[t["name"]])] * t["dim"]))
    return terms


def _commands(task: Task) -> list[CommandSpec]:
    out = []
    for name, (lo, hi) in task.command_ranges().items():
        units, frame = COMMAND_CONTRACT.get(name, (None, None))
        if units is None:
            raise BundleError(f"task {task.name}: command {name!r} has no stated units and frame "
                              f"(robolearn.deploy.observations.COMMAND_CONTRACT)")
        out.append(CommandSpec(name=name, units=units, frame=frame, range=(float(lo), float(hi))))
    return out


def _per_dof(values: np.ndarray, adr: np.ndarray) -> list[float]:
    return [float(values[a]) for a in adr]


def _urdf_ref(task: Task) -> UrdfRef:
    rcfg = task.robot_cfg
    path = resolve_urdf_path(rcfg.urdf, relative_to=rcfg.folder)
    if rcfg.urdf.startswith(f"{ERD}:"):
        return UrdfRef(package=ERD, path=rcfg.urdf.split(":", 1)[1], version=importlib.metadata.version(ERD),
                       sha256=sha256_file(path))
    return UrdfRef(package=None, path=str(path), version=None, sha256=sha256_file(path))


def _collision(model: mujoco.MjModel) -> list[CollisionGeom]:
    geoms = []
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        if body == 0 or not (model.geom_contype[g] or model.geom_conaffinity[g]):
            continue  # the world's (floor) or a visual geom
        shape = _SHAPES.get(int(model.geom_type[g]))
        if shape is None:
            raise BundleError(f"collision geom {model.geom(g).name!r}: type {int(model.geom_type[g])} has no name "
                              f"in the bundle format")
        name = model.geom(g).name
        geoms.append(CollisionGeom(
            link=model.body(body).name, shape=shape,
            size=[round(float(x), 6) for x in model.geom_size[g][: _SIZE_DIMS[shape]]],
            pos=[round(float(x), 6) for x in model.geom_pos[g]], quat=[round(float(x), 6) for x in model.geom_quat[g]],
            mesh=name.split("/", 1)[1] if "/" in name else None))
    return geoms


def kinematic_chain(model: mujoco.MjModel, site: str, joint_names: list[str], link: str | None = None
                    ) -> list[KinematicLink]:
    """The frames from the world to `site` (an arm's end effector) as `model` places them, for the deploy
    runtime's numpy forward kinematics (`robolearn.deploy.kinematics`): bodies with at most one hinge or slide
    joint each (one of `joint_names`), then the site on its body, named `link` (the URDF link it marks)."""
    site_id = model.site(site).id
    body = int(model.site_bodyid[site_id])
    chain = [KinematicLink(link=link or site, pos=[float(x) for x in model.site_pos[site_id]],
                           quat=[float(x) for x in model.site_quat[site_id]])]
    kinds = {int(mujoco.mjtJoint.mjJNT_HINGE): "revolute", int(mujoco.mjtJoint.mjJNT_SLIDE): "prismatic"}
    while body != 0:
        name = model.body(body).name
        joints = range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body])
        if len(joints) > 1 or any(int(model.jnt_type[j]) not in kinds for j in joints):
            raise BundleError(f"body {name!r} on the chain to {site!r}: the bundle's kinematic chain takes one "
                              f"hinge or slide joint per link")
        entry = KinematicLink(link=name, pos=[float(x) for x in model.body_pos[body]],
                              quat=[float(x) for x in model.body_quat[body]])
        for j in joints:
            joint = model.joint(j).name
            if joint not in joint_names:
                raise BundleError(f"joint {joint!r} on the chain to {site!r} is not one of the policy's joints")
            if np.any(model.jnt_pos[j] != 0) or model.qpos0[model.jnt_qposadr[j]] != 0:
                raise BundleError(f"joint {joint!r}: the bundle's kinematic chain needs the joint at its link's "
                                  f"origin with reference position 0")
            entry.joint, entry.joint_type = joint, kinds[int(model.jnt_type[j])]
            entry.axis = [float(x) for x in model.jnt_axis[j]]
        chain.append(entry)
        body = int(model.body_parentid[body])
    return chain[::-1]


def _simulator(task: Task, backend: str) -> SimulatorSpec:
    m = task.model
    robot_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] != 0 and (m.geom_contype[g] or m.geom_conaffinity[g])]
    g0 = robot_geoms[0] if robot_geoms else 0
    return SimulatorSpec(
        engine=f"mujoco ({backend} backend)", version=mujoco.__version__, timestep_s=float(m.opt.timestep),
        integrator=mujoco.mjtIntegrator(m.opt.integrator).name[len("mjINT_"):].lower(),
        gravity=[float(x) for x in m.opt.gravity],
        contact={"model": "soft contacts (MuJoCo)", "condim": int(m.geom_condim[g0]),
                 "cone": mujoco.mjtCone(m.opt.cone).name[len("mjCONE_"):].lower(),
                 "solref": [float(x) for x in m.geom_solref[g0]], "solimp": [float(x) for x in m.geom_solimp[g0]],
                 "friction_combination": "max of the two geoms' coefficients",
                 "nominal_friction": [float(x) for x in m.geom_friction[g0]],
                 "self_collision": False})


def _action_bounds(task: Task) -> list[tuple[float, float]] | None:
    """The task's per-action clamp (`action_bounds: joint_range`), or None where it is only +-clip_actions."""
    if getattr(task.cfg, "action_bounds", "none") == "none":
        return None
    return [(float(lo), float(hi)) for lo, hi in zip(task.action_low.tolist(), task.action_high.tolist(), strict=True)]


def _range(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _write_task_bundle(folder: Path, task_name: str, task: Task, graphs: list[GraphSpec], contract: dict[str, Any],
                       source: dict[str, Any]) -> None:
    """deploy.yaml of a bundle exported from a run on `task`: its graphs, the task's contract, and `source` stamped
    with the export time."""
    manifest = BundleManifest(
        format=BUNDLE_FORMAT, version=BUNDLE_VERSION, task=task_name, robot=task.robot_cfg.name,
        kind=task.robot_cfg.kind, graphs=graphs, **contract,
        source={**source, "exported": datetime.datetime.now().isoformat(timespec="seconds")})
    write_manifest(manifest, folder)


def bundle_contract(task: Task, *, backend: str = "mujoco", observation: list[ObsTerm] | None = None,
                    commands: list[CommandSpec] | None = None) -> dict[str, Any]:
    """The version 2 contract sections of a bundle for a policy trained on `task` (read from the task and its
    config): observation, commands, action, control, joints, initial_state, domain, robot_model. `observation`
    and `commands` replace the task's policy terms and commands (a policy learned from demonstrations observes
    the recorded features)."""
    cfg, robot, rcfg, model = task.cfg, task.robot, task.robot_cfg, task.model
    ee_action = task.ee_action() if hasattr(task, "ee_action") else None
    if ee_action is None and type(task).action_to_ctrl is not Task.action_to_ctrl:
        raise BundleError(f"task {task.name}: its actions are not joint position offsets (it maps them to joint "
                          f"targets in its own way); the bundle format cannot describe that mapping yet")
    velocity = urdf_velocity_limits(resolve_urdf_path(rcfg.urdf, relative_to=rcfg.folder))
    missing = [j for j in robot.joint_names if j not in velocity]
    if missing:
        raise BundleError(f"{rcfg.urdf}: joints {missing} declare no <limit velocity>; the bundle needs one")
    deploy_targets = bool(getattr(cfg, "deploy_targets", False))
    rate = float(getattr(cfg, "max_target_rate", 0.0))
    lo, hi = cfg.action_delay_substeps
    latency = (0.0, 0.0) if deploy_targets else (lo * cfg.sim_dt, hi * cfg.sim_dt)
    rand = getattr(cfg, "randomization", None)
    push_s = getattr(rand, "push_interval_s", 0.0) or 0.0
    init_noise = getattr(rand, "init_joint_noise", getattr(cfg, "init_joint_noise", 0.0))
    terrain = getattr(cfg, "terrain", None)
    sites = rcfg.sites
    base = rcfg.base_link or model.body(1).name
    if ee_action is not None:
        scale = ee_action.pop("scale")
        if cfg.action_space == "ee_target":  # positions inside the workspace, and the grip in [-1, 1]
            low, high = ee_action["workspace_low"], ee_action["workspace_high"]
            action = ActionSpec(type="ee_target", dim=task.num_actions, scale=scale,
                                clip=max(1.0, *map(abs, low), *map(abs, high)), target_clip="joint_range",
                                bounds=[*zip(low, high, strict=True), (-1.0, 1.0)], ee=EeActionSpec(**ee_action))
        else:
            action = ActionSpec(type="ee_delta", dim=task.num_actions, scale=scale, clip=1.0,
                                target_clip="joint_range", ee=EeActionSpec(**ee_action))
    else:
        action = ActionSpec(dim=task.num_actions, scale=float(cfg.action_scale), clip=float(cfg.clip_actions),
                            target_clip="joint_range" if deploy_targets else "none",
                            max_target_rate=rate if deploy_targets and rate > 0 else None,
                            target_fault_margin=float(cfg.target_limit_margin) if deploy_targets else None,
                            bounds=_action_bounds(task))
    return {
        "observation": observation if observation is not None else _observation(task),
        "commands": commands if commands is not None else _commands(task),
        "action": action,
        "control": ControlSpec(rate_hz=1.0 / cfg.sim_dt, between_steps="linear" if deploy_targets else "hold",
                               latency_s=(float(latency[0]), float(latency[1]))),
        "joints": JointSpec(
            names=list(robot.joint_names),
            default_pos=[float(x) for x in robot.default_joint_pos],
            kp=[float(x) for x in robot.kp],
            kd=[float(x) for x in robot.kd],
            pos_limits=[(float(a), float(b)) for a, b in robot.joint_range],
            vel_limits=[velocity[j] for j in robot.joint_names],
            torque_limits=[float(x) for x in robot.effort_limit],
            armature=_per_dof(model.dof_armature, robot.qvel_adr),
            friction_loss=_per_dof(model.dof_frictionloss, robot.qvel_adr),
            damping=_per_dof(model.dof_damping, robot.qvel_adr),
        ),
        "initial_state": InitialStateSpec(
            base_pos=[0.0, 0.0, float(rcfg.init_height)] if rcfg.floating_base else None,
            base_yaw_range=((-math.pi, math.pi) if getattr(rand, "init_yaw", False) else (0.0, 0.0))
            if rcfg.floating_base else None,
            joint_pos=[float(x) for x in robot.default_joint_pos], joint_pos_noise=float(init_noise)),
        "domain": DomainSpec(
            simulator=_simulator(task, backend), episode_length_s=float(cfg.episode_length_s),
            terrain={"type": "flat"} if terrain is None else {"type": "heightfield tiles", **to_dict(terrain)},
            friction=_range(getattr(rand, "friction", None)),
            added_base_mass_kg=_range(getattr(rand, "added_base_mass", None)),
            motor_strength=_range(getattr(rand, "motor_strength", None)),
            push_interval_s=float(push_s) if push_s > 0 else None,
            push_velocity_m_s=float(rand.push_velocity) if push_s > 0 else None,
            randomization=to_dict(rand) if rand is not None else {}),
        "robot_model": RobotModelSpec(
            urdf=_urdf_ref(task), floating_base=rcfg.floating_base, base_link=base, imu_link=sites.get("imu"),
            feet=[sites[f] for f in rcfg.feet], end_effector=sites.get(rcfg.end_effector or ""),
            armature=float(rcfg.armature), friction_loss=float(rcfg.frictionloss),
            joint_damping=float(rcfg.joint_damping), collide_with=rcfg.collide_with, collision=_collision(model),
            chain=kinematic_chain(model, rcfg.end_effector, list(robot.joint_names), sites.get(rcfg.end_effector))
            if rcfg.end_effector and not rcfg.floating_base else []),
        "navigation": NavigationSpec(**task.navigation_contract()) if hasattr(task, "navigation_contract") else None,
    }


# -- writing graphs ---------------------------------------------------------------------------------------------
def _policy_graph(policy: Policy, onnx_path: Path, rate_hz: float) -> GraphSpec:
    example = torch.zeros(2, policy.obs_dim)
    onnx_path.write_bytes(onnx_bytes(policy.graph(), (example,), ["obs"], ["actions"]))
    chunk = policy.chunk
    out_shape = [-1, policy.action_dim] if chunk is None else [-1, chunk.horizon, policy.action_dim]
    return GraphSpec(
        name="policy", role="policy", file=onnx_path.name, sha256=sha256_file(onnx_path), rate_hz=rate_hz,
        history=policy.history, inputs=[TensorSpec(name="obs", shape=[-1, policy.obs_dim], meaning="observation")],
        outputs=[TensorSpec(name="actions", shape=out_shape, meaning="action" if chunk is None else "action_chunk")],
        chunk=None if chunk is None else ChunkSpec(horizon=chunk.horizon, execute=chunk.execute,
                                                   interpolation=chunk.interpolation))


def _extra_graph(extra: ExtraGraph, folder: Path) -> GraphSpec:
    path = folder / (extra.file or f"{extra.name}.onnx")
    example = tuple(torch.zeros(2, size) for _, size, _ in extra.inputs)
    extra.module.eval()
    path.write_bytes(onnx_bytes(extra.module, example, [n for n, _, _ in extra.inputs],
                                 [n for n, _, _ in extra.outputs]))
    spec = GraphSpec(
        name=extra.name, role=extra.role, file=path.name, sha256=sha256_file(path), rate_hz=float(extra.rate_hz),
        history=extra.history, inputs=[TensorSpec(name=n, shape=[-1, s], meaning=m) for n, s, m in extra.inputs],
        outputs=[TensorSpec(name=n, shape=[-1, s], meaning=m) for n, s, m in extra.outputs])
    gen = torch.Generator().manual_seed(0)  # the graph must compute what the module does
    feeds = [torch.randn(3, s, generator=gen) for _, s, _ in extra.inputs]
    with torch.no_grad():
        want = extra.module(*feeds)
    want = want if isinstance(want, tuple) else (want,)
    got = OnnxGraph(path, spec).run({n: f.numpy() for (n, _, _), f in zip(extra.inputs, feeds, strict=True)})
    for (name, _, _), w in zip(extra.outputs, want, strict=True):
        error = float(np.abs(got[name] - w.numpy()).max())
        if not error <= EXPORT_TOLERANCE:
            raise BundleError(f"{path}: output {name!r} differs from torch by {error:.2e}")
    return spec


def _check_parity(policy: Policy, onnx_path: Path, spec: GraphSpec, recorded: np.ndarray, parity_file: Path,
                  seed: int) -> float:
    """The exported graph in onnxruntime against the policy in torch on the `recorded` observations (a BundleError
    beyond EXPORT_TOLERANCE); PARITY_SAMPLES of them with torch's outputs go to `parity_file` for the robot to
    check its own runtime. Returns the max error."""
    with torch.no_grad():
        reference = policy.graph()(torch.from_numpy(recorded)).numpy()
    error = float(np.abs(OnnxPolicy(onnx_path, spec).batch(recorded) - reference).max())
    if not error <= EXPORT_TOLERANCE:
        raise BundleError(f"{onnx_path}: onnxruntime differs from torch by {error:.2e} on {len(recorded)} "
                          f"recorded observations (tolerance {EXPORT_TOLERANCE:.0e})")
    pick = np.random.default_rng(seed).choice(len(recorded), size=min(PARITY_SAMPLES, len(recorded)), replace=False)
    np.savez(parity_file, obs=recorded[pick], actions=reference[pick])
    return error


def export_policy(policy: Policy, task_name: str, output: str | Path, *, task_overrides: dict[str, Any] | None = None,
                  backend: str = "mujoco", extra_graphs: list[ExtraGraph] | None = None,
                  source: dict[str, Any] | None = None, record_envs: int = 16, record_steps: int = 100,
                  seed: int = 0) -> ExportReport:
    """Any Policy trained on task `task_name` (with `task_overrides`, as trained on `backend`) -> a version 2 bundle
    in `output`: policy.onnx (+ one ONNX file per extra graph), deploy.yaml, parity.npz. Raises BundleError if
    onnxruntime and torch disagree by more than 1e-5."""
    folder = Path(output)
    if task_name.startswith(GYM_PREFIX):
        raise BundleError(f"task {task_name}: a Gymnasium env has no robot to deploy to; bundles are exported from "
                          f"robolearn tasks (robolearn list)")
    task = make_task(task_name, record_envs, backend="mujoco", seed=seed, overrides=task_overrides)
    try:
        frame_dim = task.obs_dims["policy"]
        if sum(t["dim"] for t in task.policy_obs_layout()) != frame_dim:
            raise BundleError(f"task {task_name}: policy_terms do not add up to the policy observation ({frame_dim})")
        if policy.frame_dim != frame_dim or policy.action_dim != task.num_actions:
            raise BundleError(f"policy reads frames of {policy.frame_dim} and acts with {policy.action_dim} values; "
                              f"task {task_name} has {frame_dim} and {task.num_actions}")
        contract = bundle_contract(task, backend=backend)
        recorded = _record_observations(policy, task, record_steps)
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = folder / "policy.onnx"
        graph = _policy_graph(policy, onnx_path, rate_hz=1.0 / task.dt)
        control_hz = contract["control"].rate_hz  # an extra graph of rate 0 runs at the control rate
        graphs = [graph] + [_extra_graph(dataclasses.replace(e, rate_hz=e.rate_hz or control_hz), folder)
                            for e in extra_graphs or []]
        error = _check_parity(policy, onnx_path, graph, recorded, folder / PARITY, seed)
        _write_task_bundle(folder, task_name, task, graphs, contract, dict(source or {}))
    except ConfigError as exc:
        raise BundleError(f"export: {exc}") from None
    finally:
        task.close()
    return ExportReport(folder=folder, parity_max_error=error, parity_samples=len(recorded), obs_dim=policy.obs_dim,
                        action_dim=task.num_actions, onnx_bytes=onnx_path.stat().st_size)


def export_run(run: str | Path, output: str | Path | None = None, *, record_envs: int = 16,
               record_steps: int = 100, seed: int = 0, checkpoint: int | None = None,
               sampling: dict[str, Any] | None = None) -> ExportReport:
    """Export the run's latest checkpoint (or model_<checkpoint>.pt, or the checkpoint file `run`) to the bundle
    folder `output` (default RUN/export). Raises BundleError if onnxruntime and torch disagree by more than 1e-5.
    `sampling` (diffusion runs): execute, sampler, warm_steps, warm_schedule_steps for the robot instead of the
    run's."""
    ckpt, file = load_checkpoint(run, checkpoint=checkpoint, with_path=True)
    if ckpt["format"] == "robolearn-diffusion":
        return export_diffusion(ckpt, file, output if output is not None else run_folder(run) / "export", seed=seed,
                                sampling=sampling)
    if sampling:
        raise BundleError(f"{file}: --{next(iter(sampling)).replace('_', '-')} is for diffusion runs; this is a "
                          f"{ckpt['format']} checkpoint")
    cfg, model, ckpt = load_policy(file)
    if model.reads_privileged:
        raise BundleError(f"{run}: this policy is a privileged teacher (its actor reads simulator-only state); "
                          f"distil it into a deployable student with `robolearn distill --teacher {run}`")
    folder = Path(output) if output is not None else run_folder(run) / "export"
    if cfg.hierarchy.skill:  # a high level over a frozen skill bundle: one bundle with both levels
        return export_hierarchy(ActorPolicy(model), cfg, folder, record_envs=record_envs, record_steps=record_steps,
                                seed=seed, source={"run": str(run), "iteration": int(ckpt.get("iteration", 0))})
    extra = []
    if "risk_critic" in ckpt:  # trained with safety_critic.enabled: the deploy runtime's safety filter runs it
        from robolearn.learn.risk_critic import RiskCritic

        critic = RiskCritic.from_checkpoint(ckpt["risk_critic"])
        extra.append(ExtraGraph(name="q_risk", role="safety_critic", rate_hz=0.0, module=critic,
                                inputs=[("obs", critic.obs_dim, "observation"),
                                        ("action", ckpt["num_actions"], "action")],
                                outputs=[("q_risk", 1, "cost_value")], history=critic.history))
    return export_policy(ActorPolicy(model), cfg.task, folder, task_overrides=cfg.task_overrides,
                         backend=cfg.backend, record_envs=record_envs, record_steps=record_steps, seed=seed,
                         source={"run": str(run), "iteration": int(ckpt.get("iteration", 0))}, extra_graphs=extra)


def export_hierarchy(policy: Policy, cfg: Any, output: str | Path, *, source: dict[str, Any] | None = None,
                     record_envs: int = 16, record_steps: int = 20, seed: int = 0) -> ExportReport:
    """A high level trained over a frozen skill bundle (`hierarchy.skill`) -> one bundle with both levels: the high
    level (`high_level.onnx`: its own observation terms, the map of its output onto the skill's command ranges, its
    rate = the skill's / `hierarchy.period`) over the skill's graph unchanged (`low_level.onnx`, role low_level, with
    the skill's parity data), the contract of the task it was trained in (and its navigation section). The high
    level's parity data (`parity_high_level.npz`) are observations recorded along its own rollout."""
    from robolearn.config import declarations_root
    from robolearn.learn.hierarchical import make_policy_task

    folder = Path(output)
    skill_folder = Path(cfg.hierarchy.skill)
    if not skill_folder.is_absolute() and not skill_folder.exists():
        skill_folder = declarations_root() / skill_folder
    if not (skill_folder / MANIFEST).is_file():
        raise BundleError(f"hierarchy.skill {cfg.hierarchy.skill}: a two-level bundle is made over a skill bundle; "
                          f"export the skill run first (robolearn export) and train the high level over it")
    skill = read_manifest(skill_folder)
    h = cfg.hierarchy
    env = make_policy_task(cfg, record_envs, backend="mujoco", device="cpu", seed=seed, overrides=cfg.task_overrides)
    task = env.task
    try:
        if policy.frame_dim != env.obs_dims["policy"] or policy.action_dim != env.num_actions:
            raise BundleError(f"policy reads frames of {policy.frame_dim} and outputs {policy.action_dim} values; the "
                              f"high level of {cfg.task} reads {env.obs_dims['policy']} and outputs {env.num_actions}")
        # the low level's terms as the task feeds the skill (its group, which must be the skill's own layout)
        low_terms = _observation(task, h.skill_group)
        if [(t.name, t.dim, t.scale) for t in low_terms] != [(t.name, t.dim, t.scale) for t in skill.observation]:
            raise BundleError(f"task {cfg.task}: observation group {h.skill_group!r} is not the layout of skill "
                              f"{skill_folder} ({', '.join(t.name for t in skill.observation)})")
        contract = bundle_contract(task, backend=cfg.backend, observation=low_terms, commands=_commands(task))
        if contract["joints"].names != skill.joints.names or contract["action"].scale != skill.action.scale:
            raise BundleError(f"task {cfg.task} and skill {skill_folder} differ in joints or action scale")
        recorded = _record_observations(policy, env, record_steps)
        folder.mkdir(parents=True, exist_ok=True)
        high_path = folder / "high_level.onnx"
        high_path.write_bytes(onnx_bytes(policy.graph(), (torch.zeros(2, policy.obs_dim),), ["obs"], ["command"]))
        high = GraphSpec(name="high_level", role="high_level", file=high_path.name, sha256=sha256_file(high_path),
                         rate_hz=skill.policy_hz / h.period, history=policy.history,
                         inputs=[TensorSpec(name="obs", shape=[-1, policy.obs_dim], meaning="observation")],
                         outputs=[TensorSpec(name="command", shape=[-1, policy.action_dim], meaning="command")],
                         observation=_observation(task),
                         command=CommandMapSpec(low=[float(v) for v in h.command_low],
                                                high=[float(v) for v in h.command_high]))
        low_spec = skill.policy
        shutil.copyfile(skill_folder / low_spec.file, folder / "low_level.onnx")
        low = dataclasses.replace(low_spec, name="low_level", role="low_level", file="low_level.onnx")
        if (skill_folder / PARITY).is_file():
            shutil.copyfile(skill_folder / PARITY, folder / PARITY)
        error = _check_parity(policy, high_path, high, recorded, folder / "parity_high_level.npz", seed)
        _write_task_bundle(folder, cfg.task, task, [high, low], contract,
                           {**(source or {}), "skill": str(skill_folder), "skill_source": skill.source})
    except ConfigError as exc:
        raise BundleError(f"export: {exc}") from None
    finally:
        env.close()
    return ExportReport(folder=folder, parity_max_error=error, parity_samples=len(recorded), obs_dim=policy.obs_dim,
                        action_dim=policy.action_dim, onnx_bytes=high_path.stat().st_size,
                        graph_file=high_path.name)


# -- diffusion policies -----------------------------------------------------------------------------------------
DIFFUSION_PARITY_PLANS = 8
DIFFUSION_EXPORT_TOLERANCE = 1e-4  # raw actions after a whole denoising loop (10 graph calls)


def _recorded_observation(task: Task, obs_keys: list[str]) -> list[ObsTerm]:
    """The deploy terms of the recorded features `obs_keys` (unscaled: the bundle's diffusion section normalizes)."""
    from robolearn.learn.diffusion_eval import recorded_columns

    terms_of = task.recording_terms() if hasattr(task, "recording_terms") else {}
    terms = []
    for key, (feature, cols) in zip(obs_keys, recorded_columns(task, obs_keys), strict=True):
        if feature not in terms_of:
            raise BundleError(f"task {task.name}: feature {feature!r} has no deploy observation terms "
                              f"(recording_terms: {', '.join(terms_of) or 'none'})")
        chosen, start = [], 0
        for name, dim in terms_of[feature]:
            span = list(range(start, start + dim))
            start += dim
            if cols is None or set(span) <= set(cols):
                chosen.append((name, dim, span))
        if cols is not None and [c for _, _, span in chosen for c in span] != cols:  # whole terms, in order
            raise BundleError(f"task {task.name}: observation key {key!r} takes part of a deploy observation term "
                              f"or reorders them ({', '.join(f'{n}: {d} columns' for n, d in terms_of[feature])}); "
                              "select whole terms, in their order")
        for name, dim, _ in chosen:
            meaning = TERM_CONTRACT[name]
            terms.append(ObsTerm(name=name, dim=dim, scale=[1.0] * dim, clip=None, units=meaning.units,
                                 frame=meaning.frame, reference=meaning.reference, sign=meaning.sign,
                                 noise=[0.0] * dim))
    return terms


def _diffusion_spec(model: Any, sampler: str) -> DiffusionSpec:
    cfg, ddim = model.cfg, model.ddim
    ddim.set_timesteps(cfg.warm_schedule_steps or cfg.inference_steps)
    warm = [int(t) for t in ddim.timesteps[-cfg.warm_steps:]]
    ddim.set_timesteps(cfg.inference_steps)
    clip = float(ddim.config.clip_sample_range) if ddim.config.clip_sample else None
    return DiffusionSpec(
        sampler="warm" if sampler == "warm" else "ddim", obs_horizon=cfg.obs_horizon, pred_horizon=cfg.pred_horizon,
        alphas_cumprod=[float(a) for a in ddim.alphas_cumprod], final_alpha_cumprod=float(ddim.final_alpha_cumprod),
        timesteps=[int(t) for t in ddim.timesteps], warm_timesteps=warm, clip_sample=clip,
        obs_low=[float(x) for x in model.obs_norm.low], obs_span=[float(x) for x in model.obs_norm.span],
        action_low=[float(x) for x in model.action_norm.low], action_span=[float(x) for x in model.action_norm.span],
        action_constant=[bool(x) for x in model.action_norm.constant])


class _EncoderGraph(nn.Module):
    """The camera encoder as the bundle runs it: image [B, 3, h, w] (0..255, float32) -> features [B, F], center
    crop (evaluation mode)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def _encoder_graph(model: Any, folder: Path, rate_hz: float) -> GraphSpec:
    h, w = model.cfg.image_size
    path = folder / "encoder.onnx"
    module = _EncoderGraph(model.encoder).eval()
    path.write_bytes(onnx_bytes(module, (torch.zeros(2, 3, h, w),), ["image"], ["features"]))
    return GraphSpec(name="encoder", role="encoder", file=path.name, sha256=sha256_file(path), rate_hz=rate_hz,
                     inputs=[TensorSpec(name="image", shape=[-1, 3, h, w], meaning="image")],
                     outputs=[TensorSpec(name="features", shape=[-1, model.cfg.image_features], meaning="latent")])


@torch.no_grad()
def export_diffusion(ckpt: dict[str, Any], file: Path, output: str | Path, *, seed: int = 0,
                     sampling: dict[str, Any] | None = None) -> ExportReport:
    """A diffusion run's checkpoint -> a version 2 bundle: denoiser.onnx (eps(x, t, cond)), deploy.yaml with the
    sampler (`graphs[0].diffusion`) and the recorded features as observation terms, parity.npz with observations
    from closed-loop rollouts, their initial noise and the chunks torch + diffusers plan from them. The deploy
    runtime's sampler (onnxruntime + numpy DDIM) must plan the same chunks (max abs error <= 1e-4 here)."""
    from robolearn.deploy.diffusion import DiffusionSampler
    from robolearn.learn.diffusion_eval import CameraFrames, observation_frames
    from robolearn.learn.diffusion_run import load_diffusion

    cfg, model = load_diffusion(ckpt, file)
    if sampling:
        try:  # checked as the config is: execute within the chunk, warm_steps within the warm schedule
            model.cfg = dataclasses.replace(model.cfg, **sampling)
        except ConfigError as exc:
            raise BundleError(f"export: {exc}") from None
    dcfg = model.cfg
    if dcfg.sampler == "ddpm":
        raise BundleError(f"{file}: a bundle plans with ddim or warm (--sampler ddim|warm), not ddpm (all "
                          f"{dcfg.train_steps} steps)")
    folder = Path(output)
    task = make_task(cfg.task, 4, backend="mujoco", seed=seed, overrides=cfg.task_overrides)
    try:
        if not hasattr(task, "goal_ranges") or task.ee_action() is None:
            raise BundleError(f"task {cfg.task}: a diffusion bundle deploys end-effector manipulation policies "
                              f"(panda-push, panda-lift with action_space ee)")
        commands = [CommandSpec(name=k, units=COMMAND_CONTRACT[k][0], frame=COMMAND_CONTRACT[k][1],
                                range=(float(lo), float(hi))) for k, (lo, hi) in task.goal_ranges().items()]
        contract = bundle_contract(task, observation=_recorded_observation(task, list(cfg.obs_keys)),
                                   commands=commands)
        frame = sum(t.dim for t in contract["observation"])
        if frame != model.obs_dim or task.num_actions != model.action_dim:
            raise BundleError(f"{file}: the model reads {model.obs_dim} values per frame and acts with "
                              f"{model.action_dim}; task {cfg.task}'s recorded features give {frame} and "
                              f"{task.num_actions}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "denoiser.onnx"
        tp, to, a = dcfg.pred_horizon, dcfg.obs_horizon, model.action_dim
        example = (torch.zeros(2, tp, a), torch.zeros(2, dtype=torch.long), torch.zeros(2, model.cond_dim))
        path.write_bytes(onnx_bytes(model.denoiser.eval(), example, ["x", "t", "cond"], ["eps"]))
        spec = _diffusion_spec(model, dcfg.sampler)
        encoders: list[GraphSpec] = []
        if model.cameras:  # one encoder graph, shared by the cameras as in training
            encoders.append(_encoder_graph(model, folder, rate_hz=1.0 / task.dt))
            spec.cameras = [DiffusionCamera(name=key.rsplit(".", 1)[-1], feature=key, height=dcfg.image_size[0],
                                            width=dcfg.image_size[1], graph=encoders[0].name)
                            for key in cfg.image_keys]
        graph = GraphSpec(
            name="denoiser", role="policy", file=path.name, sha256=sha256_file(path), rate_hz=1.0 / task.dt,
            history=to,
            inputs=[TensorSpec(name="x", shape=[-1, tp, a], meaning="noisy_action_chunk"),
                    TensorSpec(name="t", shape=[-1], dtype="int64", meaning="noise_level"),
                    TensorSpec(name="cond", shape=[-1, model.cond_dim], meaning="observation")],
            outputs=[TensorSpec(name="eps", shape=[-1, tp, a], meaning="noise")],
            chunk=ChunkSpec(horizon=tp - to + 1, execute=dcfg.execute, interpolation="hold"), diffusion=spec)
        # parity: closed-loop observations (and camera frames), their noise, the torch chunks; the runtime's
        # sampler must agree
        gen = torch.Generator().manual_seed(seed)
        task.reset()
        cameras = CameraFrames(task, cfg.image_keys, dcfg.image_size) if model.cameras else None
        frames = observation_frames(task, cfg.obs_keys).unsqueeze(1).repeat(1, to, 1)
        images = None if cameras is None else cameras().unsqueeze(1).repeat(1, to, 1, 1, 1, 1)
        obs, noise, chunks, shots = [], [], [], []
        try:
            for _ in range(DIFFUSION_PARITY_PLANS // task.num_envs):
                eps = torch.randn(task.num_envs, tp, a, generator=gen)
                chunk = model.action_norm.inverse(model.denoise(frames, noise=eps, images=images))[:, to - 1:]
                obs.append(frames.reshape(task.num_envs, -1).clone())
                noise.append(eps)
                chunks.append(chunk)
                if images is not None:
                    shots.append(images.clone())
                for k in range(dcfg.execute):
                    task.step(chunk[:, k])
                    frames = torch.cat((frames[:, 1:], observation_frames(task, cfg.obs_keys).unsqueeze(1)), dim=1)
                    if cameras is not None:
                        images = torch.cat((images[:, 1:], cameras().unsqueeze(1)), dim=1)
        finally:
            if cameras is not None:
                cameras.close()
        obs_np, noise_np, chunks_np = (torch.cat(x).numpy() for x in (obs, noise, chunks))
        parity = {"obs": obs_np, "noise": noise_np, "chunks": chunks_np}
        if shots:
            parity["images"] = torch.cat(shots).numpy()  # [N, To, K, 3, h, w] uint8
        np.savez(folder / PARITY, **parity)
        check_graph = dataclasses.replace(graph, diffusion=dataclasses.replace(spec, sampler="ddim"))
        sampler = DiffusionSampler(OnnxGraph(path, graph), check_graph,
                                   encoders={e.name: OnnxGraph(folder / e.file, e) for e in encoders})
        try:
            error = diffusion_parity(folder / PARITY, sampler, tolerance=DIFFUSION_EXPORT_TOLERANCE)
        except BundleError as exc:
            raise BundleError(f"{path}: the runtime's sampler (onnxruntime + numpy DDIM) differs from torch + "
                              f"diffusers: {exc}") from None
        _write_task_bundle(folder, cfg.task, task, [graph, *encoders], contract,
                           {"run": str(run_folder(file)), "iteration": int(ckpt.get("iteration", 0)),
                            "algorithm": "diffusion", "dataset": str(cfg.dataset)})
    except ConfigError as exc:
        raise BundleError(f"export: {exc}") from None
    finally:
        task.close()
    return ExportReport(folder=folder, parity_max_error=error, parity_samples=len(obs_np), obs_dim=graph.obs_dim,
                        action_dim=model.action_dim, onnx_bytes=path.stat().st_size, graph_file=path.name,
                        parity_of="planned chunks (runtime sampler vs torch + diffusers)",
                        tolerance=DIFFUSION_EXPORT_TOLERANCE)


def add_graphs(folder: str | Path, extra_graphs: list[ExtraGraph]) -> Path:
    """Export `extra_graphs` (e.g. a safety critic trained after the policy) into the version 2 bundle `folder` and
    add them to its manifest; a graph of the same name is replaced. The acting graph is left as it is."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.version != 2:
        raise BundleError(f"{folder}: version {manifest.version}; upgrade it first (robolearn.export.upgrade_bundle)")
    names = {e.name for e in extra_graphs}
    if manifest.policy.name in names:
        raise BundleError(f"{folder}: {manifest.policy.name!r} is the acting graph; give the extra graph another name")
    kept = [g for g in manifest.graphs if g.name not in names]
    manifest.graphs = kept + [_extra_graph(e, folder) for e in extra_graphs]
    manifest.__post_init__()  # the graph checks (one acting graph, roles, inputs)
    write_manifest(manifest, folder)
    return folder


def upgrade_bundle(folder: str | Path, output: str | Path, *, task_overrides: dict[str, Any] | None = None,
                   backend: str = "mujoco") -> Path:
    """A version 1 bundle -> version 2 in `output`, its graph and parity data unchanged, its contract read from its
    task's config as declared now (`source.contract` says so). Refuses when the version 1 manifest disagrees
    with the task (observation layout, joints, gains, action scale and clip, rates)."""
    folder, output = Path(folder), Path(output)
    old = read_manifest(folder)
    if old.version != 1:
        raise BundleError(f"{folder}: already version {old.version}")
    task = make_task(old.task, 1, overrides=task_overrides)
    try:
        contract = bundle_contract(task, backend=backend)
        dt = task.dt
    finally:
        task.close()
    new_terms, joints = contract["observation"], contract["joints"]
    checks = {
        "observation": ([(t.name, t.dim, t.scale) for t in old.observation],
                        [(t.name, t.dim, t.scale) for t in new_terms]),
        "joints.names": (old.joints.names, joints.names),
        "joints.default_pos": (old.joints.default_pos, joints.default_pos),
        "joints.kp": (old.joints.kp, joints.kp), "joints.kd": (old.joints.kd, joints.kd),
        "action_scale": (old.action_scale, contract["action"].scale),
        "clip_actions": (old.clip_actions, contract["action"].clip),
        "policy_hz": (old.policy_hz, 1.0 / dt), "sim_hz": (old.sim_hz, contract["control"].rate_hz),
    }
    for key, (was, now) in checks.items():
        if not np.allclose(np.asarray(_flat(was), dtype=float), np.asarray(_flat(now), dtype=float)) \
                if _numeric(was) else was != now:
            raise BundleError(f"{folder / MANIFEST}: {key} differs from task {old.task}'s config ({was} vs {now}); "
                              f"re-export from the checkpoint instead")
    output.mkdir(parents=True, exist_ok=True)
    for spec in old.graphs:
        shutil.copyfile(folder / spec.file, output / spec.file)
    if (folder / PARITY).is_file():
        shutil.copyfile(folder / PARITY, output / PARITY)
    manifest = BundleManifest(
        format=BUNDLE_FORMAT, version=BUNDLE_VERSION, task=old.task, robot=old.robot, kind=old.kind,
        graphs=old.graphs, **contract,
        source={**old.source, "upgraded_from_version": 1,
                "contract": f"read from task {old.task}'s config at upgrade time "
                            f"({datetime.datetime.now().isoformat(timespec='seconds')}), not from the training run"})
    write_manifest(manifest, output)
    return output


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [y for x in value for y in _flat(x)]
    return [value]


def _numeric(value: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in _flat(value))
