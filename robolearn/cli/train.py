"""`robolearn train` (PPO, PPO-Lagrangian, Diffusion Policy) and `robolearn distill` (teacher -> student): all run by
the learning core's Runner."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from robolearn.cli.app import app, console, new_run_dir, parse_sets, set_path
from robolearn.errors import RobolearnError

__all__ = ["train", "distill"]


def _train_config(task: str, config: Optional[Path], overrides: dict[str, Any], resume: Optional[Path],
                  checkpoint: Optional[int]) -> Any:
    """The run's config: for --resume the checkpoint's own (same task settings, network, device), else the task's
    training config; `overrides` (the command line) on top of either."""
    from robolearn.config import from_dict, merge
    from robolearn.learn.checkpoint import PPO_FORMATS, load_checkpoint
    from robolearn.learn.config import TrainCfg, load_train_cfg

    if resume is None or config is not None:
        return load_train_cfg(task, config, overrides)
    ckpt, file = load_checkpoint(resume, task=task, checkpoint=checkpoint, with_path=True)
    if ckpt["format"] == "robolearn-diffusion" and overrides.get("algorithm", "diffusion") == "diffusion":
        return _diffusion_config(task, None, overrides, ckpt, file)
    if ckpt["format"] not in PPO_FORMATS:
        raise RobolearnError(f"{file}: a {ckpt['format']} checkpoint cannot be resumed by `train` (PPO)")
    if "algorithm" in overrides and overrides["algorithm"] != ckpt["config"].get("algorithm", "ppo"):
        raise RobolearnError(f"{file}: --algo {overrides['algorithm']}: this run was trained with "
                             f"{ckpt['config'].get('algorithm', 'ppo')}; resume it with that algorithm")
    return from_dict(TrainCfg, merge(ckpt["config"], overrides), where=f"{file} (checkpoint config) + command line")


def _diffusion_config(task: str, config: Optional[Path], overrides: dict[str, Any], ckpt: Any = None,
                      file: Any = None) -> Any:
    """A diffusion run's config: the task's policies/diffusion file (or `config`), or a resumed checkpoint's own;
    the command line on top. PPO options that mean nothing offline are one-line errors."""
    from robolearn.config import from_dict, merge
    from robolearn.learn.diffusion_run import DiffusionTrainCfg, load_diffusion_cfg

    if "num_envs" in overrides:
        raise RobolearnError("--num-envs: diffusion trains offline from the dataset (no envs); the closing "
                             "evaluation's envs are --set eval.num_envs=N")
    if ckpt is None:
        return load_diffusion_cfg(task, config, overrides)
    return from_dict(DiffusionTrainCfg, merge(ckpt["config"], overrides),
                     where=f"{file} (checkpoint config) + command line")


def _launch_workers(nproc: int, run_dir: Path, cfg: Any, resume: Optional[Path], checkpoint: Optional[int]) -> bool:
    """`--nproc N` outside torchrun: run this same command line as N torchrun workers and wait. Returns False when
    this process is to train itself (N == 1, or already a torchrun worker)."""
    import torch

    from robolearn.learn.checkpoint import load_checkpoint
    from robolearn.learn.distributed import launcher_world_size, resolve_backend, run_torchrun

    if nproc < 1:
        raise RobolearnError(f"--nproc must be >= 1, got {nproc}")
    local_world = launcher_world_size()
    if local_world is not None:  # a worker: torchrun (or another launcher) decided the process count
        if nproc > 1 and local_world != str(nproc):
            raise RobolearnError(f"--nproc {nproc} but the launcher started {local_world} processes per node")
        return False
    if nproc == 1:
        return False
    resolve_backend(cfg.dist_backend, torch.device(cfg.device))  # fail once, here, rather than in N workers
    if resume is not None:
        load_checkpoint(resume, task=cfg.task, checkpoint=checkpoint)
    # The same arguments plus the run folder, so that all ranks agree on it; workers see WORLD_SIZE and train.
    args = [*sys.argv[1:], "--runs-dir", str(run_dir.parent), "--name", run_dir.name]
    console.print(f"[bold]launching[/] {nproc} processes: robolearn {' '.join(args)}", highlight=False, soft_wrap=True)
    code = run_torchrun(nproc, ["robolearn.cli", *args])
    if code:
        raise typer.Exit(code)
    return True


def _print_summary(summary: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=f"{summary['task']}: summary", show_header=False)
    for key in keys:
        if key in summary:
            table.add_row(key, str(summary[key]))
    for key, value in {**summary.get("final_losses", {}), **{f"eval/{k}": v for k, v in summary.get("eval", {}).items()}
                       }.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def _run(runner: Any, progress: bool) -> dict[str, Any]:
    """runner.learn with the exit codes of an interrupted run (130) and a clean release of the process group."""
    from robolearn.learn.runner import TrainingInterrupted

    finished = False
    try:
        summary = runner.learn(progress=progress)
        finished = True
        return summary
    except TrainingInterrupted as exc:
        finished = True  # saved and consistent on every rank
        if runner.is_main:
            console.print(f"[yellow]{exc}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        runner.close(wait_for_peers=finished)


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="task name (see `robolearn list`)")],
    backend: Annotated[Optional[str], typer.Option(help="simulation backend")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (GPU backends); cuda also applies the "
                                                       "config's `gpu` section")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="parallel environments")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="PPO iterations (of this run; a resume gets as many "
                                                           "more)")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="wall-clock budget in seconds (0: none; counted from "
                                                           "the start of this command, also when resuming)")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    algo: Annotated[Optional[str], typer.Option(help="ppo; ppo-lag: PPO-Lagrangian under the per-episode cost "
                                                     "limit lagrangian.cost_limit (set it with --set); diffusion: "
                                                     "Diffusion Policy from --dataset (config "
                                                     "policies/diffusion/TASK.yaml)")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="--algo diffusion: the demonstrations (a robolearn record/"
                                                         "teleop folder or any LeRobot v3 dataset)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="training config (default policies/ppo/TASK.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: key.sub=value")] = [],  # noqa: B006
    name: Annotated[Optional[str], typer.Option(help="run name (default TASK-<time>; with --resume the resumed "
                                                     "run's folder)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="run folder (its latest checkpoint) or checkpoint file to "
                                                        "continue, in that run's folder")] = None,
    checkpoint: Annotated[Optional[int], typer.Option(help="with --resume RUN: continue from model_<N>.pt")] = None,
    init: Annotated[Optional[Path], typer.Option(help="a PPO run folder or checkpoint to start the actor-critic "
                                                      "from, in a new run: observation columns are matched by "
                                                      "term name, new terms start with zero weights (the same "
                                                      "network section)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar (or, without a terminal, log lines)")] = True,
    log_interval: Annotated[int, typer.Option(help="iterations between log lines without a terminal")] = 10,
    nproc: Annotated[int, typer.Option(help="processes (ranks) on this machine, started with torchrun; "
                                            "--num-envs is per process")] = 1,
    logger: Annotated[str, typer.Option(help="tensorboard, or wandb: TensorBoard and Weights & Biases (pip install "
                                             "\"robolearn\\[wandb]\"; project $WANDB_PROJECT, default robolearn; "
                                             "WANDB_MODE=offline: no account)")] = "tensorboard",
    video: Annotated[bool, typer.Option("--video", help="record an mp4 of the current policy (one env, "
                                                        "deterministic actions, eval settings) every "
                                                        "--video-interval iterations into RUN/videos/iter_<N>.mp4, "
                                                        "also logged to TensorBoard")] = False,
    video_interval: Annotated[int, typer.Option(help="iterations between videos (with --video)")] = 100,
    video_length: Annotated[int, typer.Option(help="policy steps per video (with --video)")] = 200,
) -> None:
    """Train a policy with PPO (PPO-Lagrangian: --algo ppo-lag; Diffusion Policy from demonstrations: --algo
    diffusion --dataset D); writes runs/<name>/ (config, checkpoints, TensorBoard, summary.json; videos/ with
    --video).

    Ctrl-C saves and exits 130; `--resume runs/<name>` continues that run in its folder (iterations, env steps and
    TensorBoard go on) with a fresh budget. Multi-process: `--nproc N`, or `torchrun --nproc_per_node=N -m
    robolearn.cli train TASK ...`."""
    from robolearn.learn.checkpoint import checkpoint_file, run_folder
    from robolearn.learn.loggers import TrainingVideo, check_logger
    from robolearn.learn.train import make_ppo_runner

    check_logger(logger)  # an unknown logger, or wandb not installed: one line, before any env is built
    if video and (video_interval < 1 or video_length < 1):
        raise RobolearnError(f"--video-interval and --video-length must be >= 1, got {video_interval} and "
                             f"{video_length}")
    overrides = parse_sets(set_, backend=backend, device=device, num_envs=num_envs, max_iterations=iterations,
                           max_time_s=max_time, seed=seed, algorithm=algo)
    if init is not None and resume is not None:
        raise RobolearnError("--init starts a new run from another run's weights; --resume continues a run: give "
                             "one of them")
    if init is not None:
        checkpoint_file(init)  # a missing run is an error now, not after the task is built
    if dataset is not None:
        overrides["dataset"] = str(dataset)
    if algo == "diffusion" and (resume is None or config is not None):
        cfg = _diffusion_config(task, config, overrides)
    else:
        if dataset is not None and algo != "diffusion" and resume is None:
            raise RobolearnError("--dataset is for --algo diffusion (learning from demonstrations)")
        cfg = _train_config(task, config, overrides, resume, checkpoint)
    offline = getattr(cfg, "algorithm", "") == "diffusion"
    if init is not None and offline:
        raise RobolearnError("--init starts a new PPO run from another run's weights: not with --algo diffusion")
    if offline and (nproc != 1 or video):
        raise RobolearnError("--algo diffusion: one process, no --video (the closing evaluation and `robolearn eval "
                             "RUN --video` record episodes)")
    if resume is not None:
        source = checkpoint_file(resume, checkpoint)
        run_dir = runs_dir / name if name else run_folder(source)
    else:
        run_dir = new_run_dir(runs_dir / (name or f"{task}-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
    if not offline and _launch_workers(nproc, run_dir, cfg, resume, checkpoint):
        return  # the workers have trained; rank 0 printed the summary
    if offline:
        from robolearn.learn.diffusion_run import make_diffusion_runner

        runner = make_diffusion_runner(cfg, run_dir, console=console, log_interval=log_interval)
    else:
        runner = make_ppo_runner(cfg, run_dir, console=console, log_interval=log_interval)
    try:
        runner.logger = logger
        if video and runner.is_main:  # its own 1-env task, built as the closing evaluation builds its own
            runner.video = TrainingVideo(cfg, device=runner.task.device, interval=video_interval,
                                         length=video_length)
        if init is not None:
            from robolearn.learn.warm_start import warm_start

            done = warm_start(runner.algorithm, runner.task, init, count_cap=5 * cfg.num_envs * cfg.steps_per_env)
            if runner.is_main:
                console.print(f"[bold]initialized[/] from {done['file']}: " + "; ".join(
                    f"{g} {kept} columns kept, {new} new (zero weights), {dropped} dropped"
                    for g, (kept, new, dropped) in ((g, done[g]) for g in ("policy", "privileged"))),
                    highlight=False)
        if resume is not None:
            file = runner.resume(source)
            if runner.is_main:
                budget = f"{cfg.max_iterations} more iterations" + (
                    f" or {cfg.max_time_s:g} s" if cfg.max_time_s > 0 else "")
                console.print(f"[bold]resuming[/] {file} at iteration {runner.iteration} ({runner.env_steps:,} env "
                              f"steps) in {run_dir}; budget from now: {budget}", highlight=False)
    except BaseException:
        runner.close(wait_for_peers=False)
        raise
    if offline:
        algorithm = runner.algorithm
        console.print(f"[bold]training[/] a diffusion policy for {task} from {cfg.dataset} ({algorithm.demos} "
                      f"episodes, {algorithm.frames} frames) on {cfg.device}: {cfg.max_iterations} iterations x "
                      f"{cfg.steps_per_iteration} gradient steps -> {run_dir}", highlight=False, soft_wrap=True)
    elif runner.is_main:
        ranks = f" x {runner.world_size} ranks" if runner.world_size > 1 else ""
        console.print(f"[bold]training[/] {task} on {runner.task.backend} ({cfg.device}) with {cfg.num_envs} "
                      f"envs{ranks} -> {run_dir}")
    summary = _run(runner, progress)
    if offline:
        _print_summary(summary, ("iterations", "gradient_steps", "demos", "wall_time_s"))
        console.print(f"run folder: {run_dir}")
    elif runner.is_main:
        _print_summary(summary, ("iterations", "env_steps", "wall_time_s", "steps_per_s", "final_mean_reward"))
        console.print(f"run folder: {run_dir}")


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
    progress: Annotated[bool, typer.Option(help="show the progress bar (or, without a terminal, log lines)")] = True,
    log_interval: Annotated[int, typer.Option(help="iterations between log lines without a terminal")] = 10,
) -> None:
    """Distil a privileged teacher into a student that reads only proprioceptive history (DAgger, RMA
    adaptation module or historical information bottleneck); writes a run folder that play, eval and export
    take. Ctrl-C saves and exits 130."""
    from robolearn.learn.checkpoint import load_checkpoint
    from robolearn.learn.distillation import load_distill_cfg, make_distillation_runner

    task = load_checkpoint(teacher)["task"]
    overrides = parse_sets(set_, num_envs=num_envs, max_iterations=iterations, max_time_s=max_time, seed=seed)
    if student is not None:
        set_path(overrides, "student.kind", student)
    cfg = load_distill_cfg(teacher, task, config, overrides)
    run_dir = new_run_dir(runs_dir / (name or f"{task}-{cfg.student.kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
    runner = make_distillation_runner(cfg, run_dir, console=console, log_interval=log_interval)
    console.print(f"[bold]distilling[/] {teacher} into a {cfg.student.kind} student (history {cfg.student.history}, "
                  f"{cfg.student.encoder} encoder) with {cfg.num_envs} envs -> {run_dir}")
    summary = _run(runner, progress)
    _print_summary(summary, ("iterations", "env_steps", "wall_time_s", "steps_per_s"))
    console.print(f"run folder: {run_dir}")


@app.command()
def finetune(
    run: Annotated[Path, typer.Argument(help="a diffusion run folder or checkpoint (train --algo diffusion)")],
    method: Annotated[str, typer.Option(help="dsrl: learn the diffusion policy's initial noise with SAC (the "
                                             "diffusion weights stay frozen)")] = "dsrl",
    num_envs: Annotated[Optional[int], typer.Option(help="parallel environments")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="iterations (num_envs x steps_per_env chunks each)")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="wall-clock budget in seconds (0: none)")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: key.sub=value (dsrl.bound, "
                                                          "dsrl.gradient_steps, eval.episodes, ...)")] = [],  # noqa: B006
    name: Annotated[Optional[str], typer.Option(help="run name (default <run>-dsrl)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="a DSRL run folder or checkpoint to continue in its folder "
                                                        "(the replay buffer refills)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar (or, without a terminal, log lines)")] = True,
    log_interval: Annotated[int, typer.Option(help="iterations between log lines without a terminal")] = 10,
) -> None:
    """Fine-tune a trained diffusion policy in simulation with the task's reward. DSRL (Wagenmaker et al. 2025):
    SAC learns, per observation, the noise the frozen policy denoises from; each step denoises one chunk (DDIM)
    and executes its actions. Writes a run folder (checkpoints hold the frozen base model too) that `robolearn eval`
    evaluates. Ctrl-C saves and exits 130; --resume continues it."""
    from robolearn.config import from_dict, merge
    from robolearn.learn.checkpoint import load_checkpoint, run_folder
    from robolearn.learn.dsrl_run import DSRLTrainCfg, load_dsrl_cfg, make_dsrl_runner

    if method != "dsrl":
        raise RobolearnError(f"--method must be dsrl, got {method!r}")
    overrides = parse_sets(set_, num_envs=num_envs, max_iterations=iterations, max_time_s=max_time, seed=seed)
    if resume is not None:
        ckpt, file = load_checkpoint(resume, with_path=True)
        if ckpt["format"] != "robolearn-dsrl":
            raise RobolearnError(f"{file}: --resume takes a DSRL run (robolearn finetune); this is a "
                                 f"{ckpt['format']} checkpoint")
        cfg = from_dict(DSRLTrainCfg, merge(ckpt["config"], overrides),
                        where=f"{file} (checkpoint config) + command line")
        run_dir = runs_dir / name if name else run_folder(file)
    else:
        cfg = load_dsrl_cfg(run, overrides)
        run_dir = new_run_dir(runs_dir / (name or f"{run_folder(run).name}-dsrl"))
    runner = make_dsrl_runner(cfg, run_dir, console=console, log_interval=log_interval)
    try:
        if resume is not None:
            console.print(f"[bold]resuming[/] {runner.resume(file)} at iteration {runner.iteration}",
                          highlight=False)
    except BaseException:
        runner.close(wait_for_peers=False)
        raise
    console.print(f"[bold]DSRL[/] steering {cfg.base} on {runner.meta['task']} with {cfg.num_envs} envs "
                  f"({runner.meta['num_actions']} noise dims, chunks of {runner.task.model.cfg.execute} actions) -> "
                  f"{run_dir}", highlight=False, soft_wrap=True)
    summary = _run(runner, progress)
    _print_summary(summary, ("iterations", "transitions", "sim_steps", "gradient_steps", "wall_time_s"))
    console.print(f"run folder: {run_dir}")


@app.command()
def risk(
    run: Annotated[Path, typer.Argument(help="a PPO run folder or checkpoint (robolearn train)")],
    iterations: Annotated[int, typer.Option(help="collect-and-fit iterations")] = 100,
    num_envs: Annotated[Optional[int], typer.Option(help="parallel environments (default: the run's)")] = None,
    steps_per_env: Annotated[int, typer.Option(help="steps per env per iteration")] = 24,
    max_time: Annotated[float, typer.Option(help="wall-clock budget in seconds (0: none)")] = 0.0,
    randomization: Annotated[str, typer.Option(help="train, or a held-out set of the run's eval.randomization "
                                                    "(e.g. wide)")] = "train",
    set_: Annotated[list[str], typer.Option("--set", help="override a safety_critic field: key=value (hidden, "
                                                          "history, gamma, terms, candidate_fraction, shrink_toward, "
                                                          "filter_in_training, filter_threshold, ...)")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option()] = 0,
    name: Annotated[Optional[str], typer.Option(help="run name (default <run>-risk)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs are written")] = Path("runs"),
    progress: Annotated[bool, typer.Option(help="show the progress bar (or, without a terminal, log lines)")] = True,
    log_interval: Annotated[int, typer.Option(help="iterations between log lines without a terminal")] = 10,
) -> None:
    """Fit a Q_risk safety critic to a trained policy (frozen, acting with its own noise in the run's task) and
    write a run folder with the policy and the critic: `eval --safety-filter` runs the filter in simulation,
    `export` puts the critic into the bundle as its safety_critic graph for the deploy runtime's filter."""
    from robolearn.learn.checkpoint import run_folder
    from robolearn.learn.risk_fit import make_risk_fit_runner

    critic = parse_sets(set_)
    run_dir = new_run_dir(runs_dir / (name or f"{run_folder(run).name}-risk"))
    runner = make_risk_fit_runner(run, run_dir, num_envs=num_envs, steps_per_env=steps_per_env,
                                  iterations=iterations, max_time_s=max_time, randomization=randomization,
                                  critic=critic, seed=seed, console=console, log_interval=log_interval)
    console.print(f"[bold]fitting a safety critic[/] to {run} ({randomization} randomization) with "
                  f"{runner.task.num_envs} envs -> {run_dir}")
    summary = _run(runner, progress)
    _print_summary(summary, ("iterations", "env_steps", "wall_time_s", "steps_per_s"))
    console.print(f"run folder: {run_dir}")
