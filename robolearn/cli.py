"""The `robolearn` command line: train, play, eval, distill, compare, list, bench, export, deploy, record, teleop,
dataset."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robolearn.errors import RobolearnError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="robolearn: train robot policies in simulation and take them to real robots.")
console = Console()


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set ppo.learning_rate=3e-4 --set task_overrides.commands.lin_vel_x=[0,1]` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RobolearnError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise RobolearnError(f"--set {key}: cannot parse value {raw!r}") from None
        _set_path(out, key, value)
    return out


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="task name (see `robolearn list`)")],
    backend: Annotated[Optional[str], typer.Option(help="simulation backend")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (GPU backends); cuda also applies the "
                                                       "config's `gpu` section")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="parallel environments")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="PPO iterations")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="wall-clock budget in seconds (0: none)")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    config: Annotated[Optional[Path], typer.Option(help="training config (default policies/ppo/TASK.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: key.sub=value")] = [],  # noqa: B006
    name: Annotated[Optional[str], typer.Option(help="run name (default TASK-<time>)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="run folder or checkpoint to continue from")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    nproc: Annotated[int, typer.Option(help="processes (ranks) on this machine, started with torchrun; "
                                            "--num-envs is per process")] = 1,
) -> None:
    """Train a policy with PPO; writes runs/<name>/ (config, checkpoints, TensorBoard, summary.json).

    Multi-process: `--nproc N`, or `torchrun --nproc_per_node=N -m robolearn.cli train TASK ...`."""
    from robolearn.policies.runner import OnPolicyRunner
    from robolearn.policies.train_cfg import load_train_cfg

    overrides = _parse_sets(set_)
    for key, value in (("backend", backend), ("device", device), ("num_envs", num_envs),
                       ("max_iterations", iterations), ("max_time_s", max_time), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    cfg = load_train_cfg(task, config, overrides)
    run_name = name or f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    _new_run_dir(runs_dir / run_name, resume)
    if _launch_workers(nproc, run_name if name is None else None, task=task, resume=resume,
                       dist_backend=cfg.dist_backend, device=cfg.device):
        return  # the workers have trained; rank 0 printed the summary
    runner = OnPolicyRunner(cfg, runs_dir / run_name, console=console)
    finished = False
    try:
        if resume is not None:
            runner.resume(resume)
        if runner.is_main:
            ranks = f" x {runner.world_size} ranks" if runner.world_size > 1 else ""
            console.print(f"[bold]training[/] {task} on {cfg.backend} ({runner.device}) with {cfg.num_envs} "
                          f"envs{ranks} -> {runs_dir / run_name}")
        summary = runner.learn(progress=progress)
        finished = True
    finally:
        runner.close(wait_for_peers=finished)
    if runner.is_main:
        _print_summary(summary)
        console.print(f"run folder: {runs_dir / run_name}")


def _new_run_dir(run_dir: Path, resume: Path | None = None) -> Path:
    """`run_dir`, refused when it already holds a run's checkpoints (a second run would overwrite them),
    unless it is the run being resumed."""
    ckpts = run_dir / "checkpoints"
    resuming_it = resume is not None and (resume.resolve() == run_dir.resolve()
                                          or resume.resolve().parent.parent == run_dir.resolve())
    if ckpts.is_dir() and any(ckpts.glob("*.pt")) and not resuming_it:
        raise RobolearnError(f"run folder {run_dir} already holds a run ({ckpts}); pick another --name, or continue "
                             f"that run with --resume {run_dir} --name {run_dir.name}")
    return run_dir


def _launch_workers(nproc: int, run_name: str | None, *, task: str, resume: Path | None, dist_backend: str,
                    device: str) -> bool:
    """`--nproc N` outside torchrun: run this same command line as N torchrun workers on this machine and wait.
    Returns False when this process is to train itself (N == 1, or already a torchrun worker)."""
    import os
    import subprocess

    if nproc < 1:
        raise RobolearnError(f"--nproc must be >= 1, got {nproc}")
    local_world = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE"))
    if local_world is not None:  # a worker: torchrun (or another launcher) decided the process count
        if nproc > 1 and local_world != str(nproc):
            raise RobolearnError(f"--nproc {nproc} but the launcher started {local_world} processes per node")
        return False
    if nproc == 1:
        return False
    # Fail once, here, rather than in N workers.
    import torch

    from robolearn.policies.distributed import resolve_backend
    from robolearn.policies.runner import load_checkpoint

    resolve_backend(dist_backend, torch.device(device))
    if resume is not None:
        load_checkpoint(resume, task=task)
    # Same arguments (plus the run name, so that all ranks agree on it); workers see WORLD_SIZE and train.
    args = [*sys.argv[1:], *(["--name", run_name] if run_name else [])]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "--", "robolearn.cli", *args]  # `--`: torchrun must not read our options (--nproc) as its own
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    console.print(f"[bold]launching[/] {nproc} processes: {' '.join(cmd[1:])}", highlight=False, soft_wrap=True)
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise typer.Exit(code)
    return True


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['task']}: summary", show_header=False)
    for key in ("iterations", "env_steps", "wall_time_s", "steps_per_s", "final_mean_reward"):
        table.add_row(key, str(summary[key]))
    for key, value in summary.get("eval", {}).items():
        table.add_row(f"eval/{key}", f"{value:.4g}")
    console.print(table)


@app.command()
def play(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    episodes: Annotated[int, typer.Option(help="episodes to run (one env each)")] = 4,
    video: Annotated[bool, typer.Option(help="render env 0 to an mp4")] = True,
    output: Annotated[Optional[Path], typer.Option(help="mp4 path (default RUN/videos/play.mp4)")] = None,
    task: Annotated[Optional[str], typer.Option(help="check that the run was trained on this task")] = None,
    eval_settings: Annotated[bool, typer.Option("--eval-settings/--train-settings",
                                                help="use the config's evaluation overrides")] = True,
    seed: Annotated[int, typer.Option()] = 1000,
    backend: Annotated[Optional[str], typer.Option(help="simulation backend (default: the run's)")] = None,
    device: Annotated[Optional[str], typer.Option(help="device (default: the run's)")] = None,
) -> None:
    """Run a trained policy, print per-episode metrics and render an mp4 offscreen."""
    from robolearn.policies.evaluate import evaluate
    from robolearn.policies.runner import load_policy, run_folder
    from robolearn.sim.tasks import make_task

    cfg, policy, _ = load_policy(run, task=task)
    overrides = cfg.eval_task_overrides() if eval_settings else cfg.task_overrides
    if backend is None and device is None and cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():  # a GPU run played on a machine without one
            backend, device = "mujoco", "cpu"
            console.print(f"the run trained on {cfg.backend} ({cfg.device}); no CUDA device here: playing it on "
                          "mujoco (cpu)", highlight=False)
    env = make_task(cfg.task, episodes, backend=backend or cfg.backend, device=device or cfg.device, seed=seed,
                    overrides=overrides)
    recorder = None
    if video:
        from robolearn.sim.render import VideoRecorder

        recorder = VideoRecorder(env, output or run_folder(run) / "videos" / "play.mp4")
    summary, results = evaluate(policy, env, on_step=recorder)
    env.close()
    _print_episodes(f"{cfg.task}: {len(results)} episodes", summary, results)
    if recorder is not None:
        console.print(f"video: {recorder.close()}")


def _print_episodes(title: str, summary: dict[str, float], results: list[Any]) -> None:
    """Per-episode metrics table and the summary line (play, eval)."""
    table = Table(title=title)
    metric_keys = list(results[0].metrics) if results else []
    for col in ["env", "length s", "survived", "return", *metric_keys]:
        table.add_column(col)
    for r in results:
        table.add_row(str(r.env_id), f"{r.length_s:.2f}", "yes" if r.survived else "no", f"{r.episode_return:.2f}",
                      *(f"{r.metrics[k]:.3f}" for k in metric_keys))
    console.print(table)
    console.print(" ".join(f"{k}={v:.4g}" for k, v in summary.items()))


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    backend: Annotated[str, typer.Option(help="physics backend (see `robolearn list`); pybullet: sim2sim")] = "mujoco",
    episodes: Annotated[Optional[int], typer.Option(help="episodes (default: the config's eval.num_envs)")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="envs stepped together (default: all episodes)")] = None,
    randomization: Annotated[str, typer.Option(help="train (the training ranges) or a held-out set named in the "
                                                    "config's eval.randomization, e.g. wide")] = "train",
    video: Annotated[Optional[Path], typer.Option(help="render the first episode to this mp4")] = None,
    seed: Annotated[Optional[int], typer.Option(help="task seed (default: the run's seed + 1000, as its "
                                                     "final evaluation)")] = None,
    task: Annotated[Optional[str], typer.Option(help="check that the run was trained on this task")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (GPU backends)")] = "cpu",
) -> None:
    """Evaluate a trained policy (PPO run, teacher or distilled student) with the run's evaluation settings
    (deterministic actions, one episode per env); prints per-episode metrics and writes
    RUN/eval_<backend>.json (eval_<backend>_<randomization>.json for a held-out randomization)."""
    import json

    from robolearn.policies.eval_run import evaluate_run
    from robolearn.policies.runner import run_folder

    recorder = None

    def first_batch(env: Any) -> Any:
        nonlocal recorder
        console.print(f"[bold]eval[/] {run} on {backend} ({randomization} randomization): {env.num_envs} envs per "
                      "batch", highlight=False)
        if video is not None:
            from robolearn.sim.render import VideoRecorder

            recorder = VideoRecorder(env, video)
        return recorder

    report, results = evaluate_run(run, backend=backend, episodes=episodes, num_envs=num_envs, seed=seed,
                                   randomization=randomization, task=task, on_first_batch=first_batch,
                                   device=device)
    _print_episodes(f"{report['task']} on {backend}: {len(results)} episodes", report["summary"], results)
    suffix = "" if randomization == "train" else f"_{randomization}"
    out = run_folder(run) / f"eval_{backend}{suffix}.json"
    try:
        out.write_text(json.dumps(report, indent=2))
    except OSError as exc:
        raise RobolearnError(f"cannot write {out}: {exc.strerror}") from None
    if recorder is not None:
        console.print(f"video: {recorder.close()}")
    console.print(f"{len(results)} episodes in {report['wall_time_s']:.0f} s -> {out}")


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option(help="the teacher's run folder or checkpoint (robolearn train)")],
    student: Annotated[Optional[str], typer.Option(help="dagger | rma | hib (default: the config's)")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="parallel environments")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="distillation iterations")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="wall-clock budget in seconds (0: none)")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    config: Annotated[Optional[Path], typer.Option(help="distillation config (default "
                                                        "policies/distill/<teacher's task>.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: key.sub=value")] = [],  # noqa: B006
    name: Annotated[Optional[str], typer.Option(help="run name (default <task>-<student>-<time>)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs"),
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Distil a privileged teacher into a student that reads only proprioceptive history (DAgger, RMA
    adaptation module or historical information bottleneck); writes a run folder that play, eval and export
    take."""
    from robolearn.policies.distill import Distiller, load_distill_cfg
    from robolearn.policies.runner import load_checkpoint

    task = load_checkpoint(teacher)["task"]
    overrides = _parse_sets(set_)
    for key, value in (("num_envs", num_envs), ("max_iterations", iterations), ("max_time_s", max_time),
                       ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if student is not None:
        _set_path(overrides, "student.kind", student)
    cfg = load_distill_cfg(teacher, task, config, overrides)
    run_name = name or f"{task}-{cfg.student.kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    distiller = Distiller(cfg, _new_run_dir(runs_dir / run_name), console=console)
    console.print(f"[bold]distilling[/] {teacher} into a {cfg.student.kind} student (history {cfg.student.history}, "
                  f"{cfg.student.encoder} encoder) with {cfg.num_envs} envs -> {runs_dir / run_name}")
    summary = distiller.learn(progress=progress)
    table = Table(title=f"{task}: {cfg.student.kind} student", show_header=False)
    for key in ("iterations", "env_steps", "wall_time_s", "steps_per_s"):
        table.add_row(key, str(summary[key]))
    for key, value in {**summary["final_losses"], **{f"eval/{k}": v for k, v in summary["eval"].items()}}.items():
        table.add_row(key, f"{value:.4g}")
    console.print(table)
    console.print(f"run folder: {runs_dir / run_name}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders; the first is the reference (the teacher)")],
    randomization: Annotated[list[str], typer.Option(help="randomization sets (repeat), e.g. train, wide")] = [  # noqa: B006
        "train"],
    label: Annotated[Optional[list[str]], typer.Option(help="a name per run for the table (default: folder names)")
                     ] = None,
    episodes: Annotated[Optional[int], typer.Option(help="episodes per run and set (default: eval.num_envs)")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="envs stepped together (default: all episodes)")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="a label (e.g. the blind PPO run's): add the paired "
                                                         "per-episode difference to it, with a 95% interval")] = None,
    output: Annotated[Path, typer.Option(help="folder for the JSON, markdown and PNG")] = Path("benchmarks/results"),
) -> None:
    """Evaluate several runs under the same episodes and randomization sets; table (with retention vs the
    first run, 95% intervals, and the paired difference to --baseline) and plot in --output."""
    from robolearn.policies.compare import check_baseline, comparison_rows, summary_table, write_comparison
    from robolearn.policies.eval_run import evaluate_run

    labels = label or [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise RobolearnError(f"--label given {len(labels)} times for {len(runs)} runs")
    check_baseline(baseline, labels)  # before minutes of evaluation
    reports = []
    for name in randomization:
        for run, lab in zip(runs, labels, strict=True):
            report, _ = evaluate_run(run, episodes=episodes, num_envs=num_envs, randomization=name)
            console.print(f"{lab} ({name}): " + " ".join(f"{k}={v:.4g}" for k, v in report["summary"].items()),
                          highlight=False, soft_wrap=True)
            reports.append(report)
    tasks = {r["task"] for r in reports}
    if len(tasks) > 1:
        raise RobolearnError(f"runs are for different tasks: {', '.join(sorted(tasks))}")
    rows = comparison_rows(reports, [lab for _ in randomization for lab in labels], baseline)
    text_rows = summary_table(rows)
    table = Table(title=f"{reports[0]['task']}: policies side by side (95% intervals)")
    for col in text_rows[0]:
        table.add_column(col)
    for row in text_rows:
        table.add_row(*row.values())
    console.print(table)
    meta = {"task": reports[0]["task"], "runs": [str(r) for r in runs], "labels": labels,
            "randomization": randomization, "episodes": reports[0]["episodes"], "baseline": baseline,
            "task_overrides": {r["randomization"]: r["task_overrides"] for r in reports}}
    paths = write_comparison(rows, reports[0]["task"], output, meta)
    console.print(f"wrote {', '.join(map(str, paths))}", markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_() -> None:
    """Tasks, robots, backends, hardware profiles and shipped bundles, one line each."""
    from robolearn.hardware.bundle import shipped_bundles
    from robolearn.hardware.profile import load_profile, profile_names
    from robolearn.sim.backends import BACKENDS
    from robolearn.sim.robots.robot_cfg import load_robot_cfg, robot_names
    from robolearn.sim.tasks import task_description, task_names

    sections = {
        "tasks": [(name, task_description(name)) for name in task_names()],
        "robots": [(name, load_robot_cfg(name).description) for name in robot_names()],
        "backends": [(name, description) for name, (_, description) in BACKENDS.items()],
        "hardware profiles": [(name, load_profile(name).description) for name in profile_names()],
        "shipped policy bundles": [(name, f"policies/bundles/{name}") for name in shipped_bundles()],
    }
    for title, rows in sections.items():
        console.print(f"[bold]{title}[/]")
        for name, description in rows:  # descriptions may hold [brackets]: printed as text, not markup
            console.print(f"  {name:<16} {description}", highlight=False, soft_wrap=True, markup=False)

@app.command()
def bench(
    task: Annotated[str, typer.Option(help="task to benchmark")] = "go2-flat",
    backend: Annotated[Optional[list[str]], typer.Option(help="backend, default mujoco (repeat for several); 'all': "
                                                              "every registered one whose dependencies import")] = None,
    num_envs: Annotated[list[int], typer.Option(help="env counts (repeat the option for several)")] = [1024],  # noqa: B006
    steps: Annotated[int, typer.Option(help="policy steps timed per measurement")] = 100,
    max_seconds: Annotated[float, typer.Option(help="time budget per point (build + warm-up + timing); timing stops "
                                                    "at it and a point over it ends that backend's sweep")] = 60.0,
    device: Annotated[str, typer.Option(help="device of the GPU backends: auto (cuda; skipped without a GPU), cpu, "
                                             "cuda, cuda:N; mujoco and pybullet always run on the CPU")] = "auto",
    output: Annotated[Path, typer.Option(help="folder for the JSON, markdown and PNG results")] = Path(
        "benchmarks/results"),
    tag: Annotated[Optional[str], typer.Option(help="machine tag in file names (default: GPU name or cpu<N>)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    max_total_seconds: Annotated[float, typer.Option(help="start no point after this many seconds of the "
                                                          "sweep (0: no limit)")] = 0.0,
) -> None:
    """Env steps/s of TASK (physics + observations + rewards) next to raw physics, per backend and env count;
    writes bench_<task>_<tag>_<date>.{json,md,png} to --output."""
    import math

    from robolearn.bench import print_table, run_sweep, write_report

    sweep = run_sweep(task, backend or ["mujoco"], num_envs, steps=steps, max_seconds=max_seconds, device=device,
                      console=console, progress=progress,
                      max_total_seconds=max_total_seconds if max_total_seconds > 0 else math.inf,
                      on_point=lambda partial: write_report(partial, output, tag))
    print_table(sweep, console)
    paths, note = write_report(sweep, output, tag)
    console.print(f"wrote {', '.join(map(str, paths))}" + (f" ({note})" if note else ""), markup=False,
                  highlight=False, soft_wrap=True)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    output: Annotated[Optional[Path], typer.Option(help="bundle folder (default RUN/export)")] = None,
) -> None:
    """Export a trained policy to a bundle: policy.onnx + deploy.yaml, checked against torch (1e-5)."""
    from robolearn.export import EXPORT_TOLERANCE, export_run

    report = export_run(run, output)
    console.print(f"[bold]bundle[/] {report.folder}: policy.onnx ({report.onnx_bytes / 1024:.0f} KiB), deploy.yaml, "
                  f"parity.npz")
    console.print(f"onnxruntime vs torch on {report.parity_samples} recorded observations: max abs error "
                  f"{report.parity_max_error:.2e} (tolerance {EXPORT_TOLERANCE:.0e})")


@app.command()
def deploy(
    robot: Annotated[str, typer.Option(help="hardware profile name (hardware/<robot>.yaml) or YAML path")],
    policy: Annotated[Path, typer.Option(help="policy bundle folder (robolearn export) or shipped bundle name")],
    transport: Annotated[str, typer.Option(help="sim | dds | ros2")] = "sim",
    duration: Annotated[float, typer.Option(help="seconds to run (0: until Ctrl-C)")] = 0.0,
    auto: Annotated[bool, typer.Option(help="stand, run and stop on a timer instead of keys")] = False,
    cmd: Annotated[Optional[str], typer.Option(help="command while running: 'vx,vy,wz' (or a target x,y,z)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a profile field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the session report (timing, trips) as JSON")] = None,
) -> None:
    """Run a policy bundle on a robot through the deploy runtime (Passive -> Stand -> Run -> Damp).

    On a terminal, single keys drive it (listed at start); `--auto` stands, runs and stops on a timer.
    Ctrl-C damps and exits."""
    import json
    import logging
    import threading

    from rich.live import Live

    from robolearn.config import from_dict, merge, to_dict
    from robolearn.hardware.bundle import load_bundle
    from robolearn.hardware.profile import HardwareProfile, load_profile
    from robolearn.hardware.runtime import DeployRuntime
    from robolearn.hardware.session import make_robot, run_session

    if transport == "ros2":  # the rclpy node owns the loop; same profile, bundle and runtime
        from robolearn.ros.node import run_node

        run_node(["--ros-args", "-p", f"robot:={robot}", "-p", f"policy:={policy}"])
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("robolearn").setLevel(logging.INFO)
    prof = load_profile(robot)
    if set_:
        prof = from_dict(HardwareProfile, merge(to_dict(prof), _parse_sets(set_)), where=f"{prof.source} (--set)")
    bundle = load_bundle(policy)
    command = None
    if cmd is not None:
        try:
            command = [float(x) for x in cmd.split(",")]
        except ValueError:
            raise RobolearnError(f"--cmd expects three numbers 'vx,vy,wz', got {cmd!r}") from None
    rt = DeployRuntime(bundle, prof, make_robot(prof, transport))
    if command is not None and not auto:
        rt.set_command(command)
    twist = None
    if transport == "dds":  # /cmd_vel over DDS (e.g. from a ROS 2 teleop node on the same network)
        from robolearn.ros.dds import DdsTwistSource

        twist = DdsTwistSource(prof.dds.cmd_vel_topic, domain_id=prof.dds.domain_id,
                               network_interface=prof.dds.network_interface or None)
    stop = threading.Event()
    keys = None if auto or not sys.stdin.isatty() else _KeyControl(rt, stop)
    console.print(f"[bold]deploy[/] {bundle.folder} on {prof.name} via {transport}: control {prof.control_hz:g} Hz, "
                  f"policy {bundle.manifest.policy_hz:g} Hz" + ("" if keys is None else f"  keys: {_KeyControl.HELP}"))
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            result = run_session(rt, duration=duration or float("inf"), auto=auto, command=command,
                                 on_status=lambda line: live.update(line), stop=stop,
                                 command_source=twist.read if twist is not None else None)
    except KeyboardInterrupt:
        rt.stop()
        rt.spin(0.5)
        result = {"final_mode": rt.mode.value, "trips": [t.reason for t in rt.trips], "interrupted": True}
    finally:
        if keys is not None:
            keys.close()
        rt.close()
        rt.robot.close()
        if twist is not None:
            twist.close()
    console.print_json(data=result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))


class _KeyControl:
    """Single-key control of the runtime in a terminal (cbreak mode, no X)."""

    HELP = "s stand | r run | space damp | e e-stop | x reset | i/k vx +-0.1 | j/l wz +-0.2 | u/o vy +-0.1 | q quit"

    def __init__(self, rt: Any, stop: Any) -> None:
        import termios
        import threading
        import tty

        self.rt, self.stop = rt, stop
        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        import numpy as np

        steps = {"i": (0, 0.1), "k": (0, -0.1), "u": (1, 0.1), "o": (1, -0.1), "j": (2, 0.2), "l": (2, -0.2)}
        while not self.stop.is_set():
            key = sys.stdin.read(1)
            rt = self.rt
            if key == "s":
                rt.stand()
            elif key == "r":
                rt.run()
            elif key == " ":
                rt.stop()
            elif key == "e":
                rt.estop()
            elif key == "x":
                rt.reset()
            elif key in steps:
                axis, delta = steps[key]
                command = np.array(rt.command)
                command[axis] += delta
                rt.set_command(command)
            elif key == "q":
                rt.stop()
                self.stop.set()

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def _policy_fn(policy: str, task_name: str) -> Any:
    """`--policy expert` (the task's scripted expert) or a run folder / checkpoint trained on `task_name`:
    a function (task, obs) -> actions [1, A]."""
    if policy == "expert":
        from robolearn.teleop.experts import make_expert

        experts: dict[int, Any] = {}

        def act(task: Any, obs: Any) -> Any:
            expert = experts.setdefault(id(task), make_expert(task))
            return expert.act()

        return act
    from robolearn.policies.runner import load_policy

    _, net, _ = load_policy(Path(policy), task=task_name)
    if net.history > 1:
        raise RobolearnError(f"--policy {policy}: a student that reads a {net.history}-frame history cannot drive "
                             "the recorder yet; record with its teacher or a PPO policy")
    net.eval()

    def act(task: Any, obs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return net.act_mean(net.actor_input(obs))

    return act


def _record(task: str, dataset: Path, episodes: int, driver_factory: Any, *, seed: int, rosbag: bool,
            realtime: bool, overrides: dict[str, Any], report: Optional[Path], help_line: str = "") -> None:
    import json

    from rich.live import Live

    from robolearn.teleop.recorder import Recorder

    recorder = Recorder(task, dataset, driver_factory, seed=seed, overrides=overrides, rosbag=rosbag,
                        realtime=realtime)
    console.print(f"[bold]recording[/] {task} at {recorder.fps} fps into {dataset} "
                  f"({recorder.writer.num_episodes} episodes there already)"
                  + (f"\n{help_line or recorder.driver.help}" if (help_line or recorder.driver.help) else ""),
                  highlight=False)
    live_line = console.is_terminal

    def on_episode(record: dict[str, Any]) -> None:
        if not live_line:
            console.print(f"episode {record['episode_index']}: {record['frames']} frames, "
                          f"success {record['success']}", highlight=False)

    try:
        with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=live_line) as live:
            result = recorder.run(episodes, on_status=(lambda line: live.update(line)) if live_line else None,
                                  on_episode=on_episode)
    finally:
        recorder.close()
    data = result.as_dict()
    console.print(f"saved {result.episodes_saved} episodes ({result.successes} successful, "
                  f"{result.episodes_discarded} discarded), {result.frames} frames in {result.wall_time_s:.1f} s: "
                  f"{result.achieved_fps:.1f} fps (target {result.target_fps:.0f}, worst second "
                  f"{result.worst_second_fps:.0f}, late frames {result.late_frames}); loop p50 "
                  f"{result.loop_ms_p50:.1f} ms, p99 {result.loop_ms_p99:.1f} ms", highlight=False)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(data, indent=2))


@app.command()
def record(
    task: Annotated[str, typer.Option(help="manipulation task to record (panda-push, panda-lift)")] = "panda-push",
    dataset: Annotated[Path, typer.Option(help="dataset folder (LeRobot v3); appended to if it exists")] = Path(
        "datasets/panda-push"),
    expert: Annotated[bool, typer.Option(help="drive with the task's scripted expert")] = False,
    policy: Annotated[Optional[str], typer.Option(help="drive with a trained policy (run folder, checkpoint)")] = None,
    episodes: Annotated[int, typer.Option(help="episodes to save")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    rosbag: Annotated[bool, typer.Option(help="also write each episode as rosbag2 (MCAP), DATASET/rosbag")] = False,
    realtime: Annotated[bool, typer.Option(help="pace the loop at the task's fps (as with a person)")] = True,
    set_: Annotated[list[str], typer.Option("--set", help="override a task field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the recording report (fps, episodes) as JSON")] = None,
) -> None:
    """Record demonstrations without a person: the scripted expert (--expert) or a trained policy (--policy)."""
    from robolearn.teleop.recorder import Driver, ExpertDriver, Step

    if expert == (policy is not None):
        raise RobolearnError("record needs exactly one driver: --expert or --policy RUN")
    if episodes < 1:
        raise RobolearnError(f"--episodes must be >= 1, got {episodes}")
    if expert:
        factory: Any = ExpertDriver
    else:
        act = _policy_fn(policy, task)

        class PolicyDriver(Driver):
            def act(self, task_: Any, obs: Any) -> Any:
                return Step(act(task_, obs))

        factory = lambda _task: PolicyDriver()  # noqa: E731
    _record(task, dataset, episodes, factory, seed=seed, rosbag=rosbag, realtime=realtime,
            overrides=_parse_sets(set_), report=report)


SIM_ROBOTS = {"panda-sim": "the simulated Franka Panda with gripper (tasks panda-push, panda-lift)"}


@app.command()
def teleop(
    robot: Annotated[str, typer.Option(help=f"{', '.join(SIM_ROBOTS)} (a simulated scene with cameras), or an arm's "
                                            "hardware profile (panda, so100) driven through --transport")
                     ] = "panda-sim",
    device: Annotated[str, typer.Option(help="keyboard | gamepad | spacemouse | leader")] = "keyboard",
    dataset: Annotated[Optional[Path], typer.Option(help="dataset folder (LeRobot v3); appended to if it exists; "
                                                         "required for panda-sim")] = None,
    task: Annotated[str, typer.Option(help="panda-sim: the task (scene) to record")] = "panda-push",
    policy: Annotated[Optional[str], typer.Option(help="panda-sim: a policy drives and you take over "
                                                       "(interventions): 'expert' or a run folder")] = None,
    episodes: Annotated[int, typer.Option(help="episodes to save")] = 10,
    transport: Annotated[str, typer.Option(help="hardware profiles: sim (the MuJoCo twin) | dds")] = "sim",
    duration: Annotated[float, typer.Option(help="hardware profiles: seconds to run (0: until quit)")] = 0.0,
    max_speed: Annotated[float, typer.Option(help="hardware profiles: end-effector speed at full input, m/s")] = 0.1,
    device_path: Annotated[Optional[str], typer.Option(help="device node (/dev/input/js0, /dev/hidraw3)")] = None,
    leader: Annotated[Optional[str], typer.Option(help="leader arm: hardware profile (device leader)")] = None,
    leader_transport: Annotated[str, typer.Option(help="leader arm transport: sim | dds")] = "dds",
    seed: Annotated[int, typer.Option()] = 0,
    rosbag: Annotated[bool, typer.Option(help="also write each episode as rosbag2 (MCAP), DATASET/rosbag")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="override a task field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the session report as JSON")] = None,
) -> None:
    """Teleoperate a robot and record demonstrations (LeRobot v3 dataset). panda-sim: a simulated scene with a
    camera, optionally under a policy you can take over (the intervention flag marks the frames you drove). A
    hardware profile: the real arm (or its twin) through the deploy runtime's transports, with the safety layer.
    ROS 2 robots: ros2 launch robolearn teleop.launch.py. Keys/buttons are listed at start."""
    from robolearn.teleop.devices import make_device
    from robolearn.teleop.recorder import InterventionDriver, TeleopDriver, leader_options

    options: dict[str, Any] = {}
    if device_path is not None:
        options["path"] = device_path
    overrides = _parse_sets(set_)
    if device == "leader":
        if leader is None:
            raise RobolearnError("--device leader needs --leader PROFILE (the leader arm's hardware profile)")
        from robolearn.hardware.profile import load_profile
        from robolearn.hardware.session import make_robot

        options["leader"] = make_robot(load_profile(leader), leader_transport)
        overrides.setdefault("action_space", "joint")
    if robot not in SIM_ROBOTS:
        _teleop_hardware(robot, transport, device, options, dataset=dataset, episodes=episodes, duration=duration,
                         max_speed=max_speed, report=report)
        return
    if dataset is None:
        raise RobolearnError("teleop --robot panda-sim records a dataset: give --dataset PATH")
    policy_fn = _policy_fn(policy, task) if policy is not None else None

    def factory(task_: Any) -> Any:
        opts = dict(options)
        if device == "leader":
            opts.update(leader_options(task_, list(opts["leader"].joint_names)))
        dev = make_device(device, **opts)
        return TeleopDriver(dev) if policy_fn is None else InterventionDriver(policy_fn, dev)

    _record(task, dataset, episodes, factory, seed=seed, rosbag=rosbag, realtime=True, overrides=overrides,
            report=report)


def _teleop_hardware(robot: str, transport: str, device: str, options: dict[str, Any], *, dataset: Optional[Path],
                     episodes: int, duration: float, max_speed: float, report: Optional[Path]) -> None:
    """Teleop of an arm through the deploy runtime's robot interfaces (ArmTeleop + safety layer)."""
    import json

    from rich.live import Live

    from robolearn.hardware.profile import load_profile
    from robolearn.hardware.session import make_robot
    from robolearn.teleop.arm_teleop import ArmTeleop, record_arm_teleop
    from robolearn.teleop.devices import make_device

    if transport not in ("sim", "dds"):
        raise RobolearnError(f"--transport must be sim or dds for teleop, got {transport!r} (ROS 2: ros2 launch "
                             f"robolearn teleop.launch.py)")
    prof = load_profile(robot)
    arm = make_robot(prof, transport)
    if device == "leader":
        options["joint_names"] = list(prof.joint_names)
    dev = make_device(device, **options)
    try:
        teleop = ArmTeleop(prof, arm, max_speed=max_speed)
        console.print(f"[bold]teleop[/] {prof.name} via {transport} with {device} at {prof.control_hz:g} Hz"
                      + (f", recording into {dataset}" if dataset else "") + f"\n{getattr(dev, 'HELP', '')}",
                      highlight=False)
        live_line = console.is_terminal
        with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=live_line) as live:
            def status(t: Any, rep: dict[str, Any]) -> None:
                if live_line:
                    pos = t.kin.fk(t.last_state.q[t.index]) if t.last_state is not None else [0, 0, 0]
                    live.update(f"ee [{pos[0]:+.3f} {pos[1]:+.3f} {pos[2]:+.3f}] m  frames {rep['frames']}  saved "
                                f"{rep['episodes_saved']}" + (f"  DAMPED: {t.damped}" if t.damped else ""))

            result = record_arm_teleop(teleop, dev, duration=duration or float("inf"), dataset=dataset,
                                       episodes=episodes, on_status=status)
    finally:
        dev.close()
        arm.close()
    console.print_json(data=result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))


dataset_app = typer.Typer(no_args_is_help=True, help="Inspect, check and replay recorded datasets (LeRobot v3).")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("info")
def dataset_info(path: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Summary: fps, robot, episodes, frames, features, tasks, per-episode length and success."""
    import numpy as np

    from robolearn.data import DatasetReader

    reader = DatasetReader(path)
    info = reader.info
    console.print(f"[bold]{path}[/]: LeRobot {info['codebase_version']}, robot {info.get('robot_type')}, "
                  f"{reader.fps} fps, {reader.num_episodes} episodes, {reader.num_frames} frames "
                  f"({reader.num_frames / max(reader.fps, 1):.1f} s)", highlight=False)
    table = Table(title="features")
    for col in ("feature", "dtype", "shape", "names"):
        table.add_column(col)
    for name, feat in reader.features.items():
        names = feat.get("names")
        table.add_row(name, str(feat["dtype"]), str(feat["shape"]),
                      escape(str(names if not isinstance(names, list) or len(names) <= 6 else names[:6] + ["..."])))
    console.print(table)
    console.print("tasks: " + "; ".join(reader.tasks), highlight=False, markup=False)
    episodes = Table(title="episodes")
    for col in ("episode", "frames", "seconds", "success", "intervention frames"):
        episodes.add_column(col)
    for i in range(reader.num_episodes):
        data = reader.episode(i)
        n = len(data["frame_index"])
        success = "yes" if "next.success" in data and bool(np.asarray(data["next.success"]).any()) else "no"
        human = str(int(np.asarray(data["intervention"]).sum())) if "intervention" in data else "-"
        episodes.add_row(str(i), str(n), f"{n / reader.fps:.1f}", success, human)
    console.print(episodes)


@dataset_app.command("validate")
def dataset_validate(path: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Check the LeRobot v3 layout, metadata, every data file and every video; exit 2 on any problem."""
    from robolearn.data import validate_dataset

    problems = validate_dataset(path)
    if problems:
        for problem in problems:
            Console(stderr=True).print(f"[red]invalid:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print(f"{path}: valid LeRobot v3.0 dataset", highlight=False)


@dataset_app.command("replay")
def dataset_replay(
    path: Annotated[Path, typer.Argument(help="dataset folder")],
    episode: Annotated[int, typer.Option(help="episode index")] = 0,
    video: Annotated[Optional[Path], typer.Option(help="mp4 of the replay (default DATASET/replay/episode_N.mp4)")
                     ] = None,
    no_video: Annotated[bool, typer.Option("--no-video", help="do not render")] = False,
) -> None:
    """Replay an episode's recorded actions in simulation from its first frame; report how closely the replay
    follows the recording and render it with the task's camera."""
    from robolearn.teleop.replay import replay_episode

    out = None if no_video else (video or path / "replay" / f"episode_{episode:06d}.mp4")
    result = replay_episode(path, episode, video=out)
    console.print(f"episode {result.episode_index}: {result.frames} frames replayed; max joint deviation "
                  f"{result.max_state_error:.2e} rad, final block deviation {result.final_object_error:.2e} m; "
                  f"success recorded {result.recorded_success}, replayed {result.replayed_success}"
                  + (f"; video {result.video}" if result.video else ""), highlight=False)


def main() -> None:
    try:
        app()
    except RobolearnError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
