"""The `robolearn` command line: train, play, list, bench."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
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
) -> None:
    """Train a policy with PPO; writes runs/<name>/ (config, checkpoints, TensorBoard, summary.json)."""
    from robolearn.policies.runner import OnPolicyRunner
    from robolearn.policies.train_cfg import load_train_cfg

    overrides = _parse_sets(set_)
    for key, value in (("backend", backend), ("num_envs", num_envs), ("max_iterations", iterations),
                       ("max_time_s", max_time), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    cfg = load_train_cfg(task, config, overrides)
    run_name = name or f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    runner = OnPolicyRunner(cfg, runs_dir / run_name, console=console)
    if resume is not None:
        runner.resume(resume)
    console.print(f"[bold]training[/] {task} on {cfg.backend} with {cfg.num_envs} envs -> {runs_dir / run_name}")
    summary = runner.learn(progress=progress)
    _print_summary(summary)
    console.print(f"run folder: {runs_dir / run_name}")


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
) -> None:
    """Run a trained policy, print per-episode metrics and render an mp4 offscreen."""
    from robolearn.config import from_dict
    from robolearn.policies.evaluate import evaluate
    from robolearn.policies.runner import build_policy, load_checkpoint
    from robolearn.policies.train_cfg import TrainCfg
    from robolearn.sim.tasks import make_task

    ckpt = load_checkpoint(run, task=task)
    cfg = from_dict(TrainCfg, ckpt["config"], where=f"{run} (checkpoint config)")
    overrides = cfg.eval_task_overrides() if eval_settings else cfg.task_overrides
    env = make_task(cfg.task, episodes, backend=cfg.backend, seed=seed, overrides=overrides)
    policy = build_policy(cfg, ckpt["obs_dims"], ckpt["num_actions"])
    policy.load_state_dict(ckpt["model"])
    recorder = None
    if video:
        from robolearn.sim.render import VideoRecorder

        run_dir = run if run.is_dir() else run.parent.parent
        recorder = VideoRecorder(env, output or run_dir / "videos" / "play.mp4")
    summary, results = evaluate(policy, env, on_step=recorder)
    env.close()
    table = Table(title=f"{cfg.task}: {len(results)} episodes")
    metric_keys = list(results[0].metrics) if results else []
    for col in ["env", "length s", "survived", "return", *metric_keys]:
        table.add_column(col)
    for r in results:
        table.add_row(str(r.env_id), f"{r.length_s:.2f}", "yes" if r.survived else "no", f"{r.episode_return:.2f}",
                      *(f"{r.metrics[k]:.3f}" for k in metric_keys))
    console.print(table)
    console.print(" ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    if recorder is not None:
        console.print(f"video: {recorder.close()}")


@app.command("list")
def list_() -> None:
    """Tasks, robots and backends, one line each."""
    from robolearn.sim.backends import BACKENDS
    from robolearn.sim.robots.robot_cfg import load_robot_cfg, robot_names
    from robolearn.sim.tasks import task_description, task_names

    console.print("[bold]tasks[/]")
    for name in task_names():
        console.print(f"  {name:<16} {task_description(name)}", highlight=False, soft_wrap=True)
    console.print("[bold]robots[/]")
    for name in robot_names():
        console.print(f"  {name:<16} {load_robot_cfg(name).description}", highlight=False, soft_wrap=True)
    console.print("[bold]backends[/]")
    for name, (_, description) in BACKENDS.items():
        console.print(f"  {name:<16} {description}", highlight=False, soft_wrap=True)


@app.command()
def bench(
    task: Annotated[str, typer.Option(help="task to benchmark")] = "go2-flat",
    backend: Annotated[str, typer.Option()] = "mujoco",
    num_envs: Annotated[list[int], typer.Option(help="env counts (repeat the option for several)")] = [1024],  # noqa: B006
    steps: Annotated[int, typer.Option(help="policy steps timed per measurement")] = 100,
) -> None:
    """Env steps/s of TASK (physics + observations + rewards) next to raw mujoco.rollout physics."""
    from robolearn.bench import bench_task

    table = Table(title=f"bench {task} on {backend}")
    for col in ("envs", "env steps/s", "raw physics steps/s", "raw env steps/s", "env / raw"):
        table.add_column(col, justify="right")
    for n in num_envs:
        r = bench_task(task, backend=backend, num_envs=n, steps=steps)
        table.add_row(str(n), f"{r.env_steps_per_s:,.0f}", f"{r.raw_physics_steps_per_s:,.0f}",
                      f"{r.raw_env_steps_per_s:,.0f}", f"{r.ratio:.0%}")
    console.print(table)
    console.print(f"decimation {r.decimation}: raw env steps/s = raw physics steps/s / {r.decimation}")


def main() -> None:
    try:
        app()
    except RobolearnError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
