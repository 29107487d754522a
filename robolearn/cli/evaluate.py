"""`robolearn play`, `robolearn eval` and `robolearn compare`: trained policies run in simulation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from robolearn.cli.app import app, console
from robolearn.errors import RobolearnError

__all__ = ["play", "eval_", "compare"]


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
    checkpoint: Annotated[Optional[int], typer.Option(help="play model_<N>.pt of the run (default: the latest)")
                          ] = None,
) -> None:
    """Run a trained policy, print per-episode metrics and render an mp4 offscreen."""
    from robolearn.cli.export import output_folder
    from robolearn.learn.checkpoint import checkpoint_file, load_policy, run_folder
    from robolearn.learn.evaluate import evaluate
    from robolearn.sim.tasks import make_task

    if episodes < 1:
        raise RobolearnError(f"--episodes must be >= 1, got {episodes}")
    console.print(f"policy: {checkpoint_file(run, checkpoint)}", highlight=False)
    mp4 = (output or run_folder(run) / "videos" / "play.mp4") if video else None
    if mp4 is not None:
        with output_folder(mp4.parent, "--output folder"):  # checked before the episodes are run
            pass
    cfg, policy, _ = load_policy(run, task=task, checkpoint=checkpoint)
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

        recorder = VideoRecorder(env, mp4)
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
    console.print(" ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))


def _fmt(value: object) -> str:
    """A summary value: numbers to 4 digits, intervals as [low, high]."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    backend: Annotated[str, typer.Option(help="physics backend (see `robolearn list`); pybullet: sim2sim")] = "mujoco",
    episodes: Annotated[Optional[int], typer.Option(help="episodes (default: the config's eval.num_envs)")] = None,
    num_envs: Annotated[Optional[int], typer.Option(help="envs stepped together (default: all episodes; pybullet: "
                                                         "at most 25, its memory grows with the envs)")] = None,
    randomization: Annotated[str, typer.Option(help="train (the training ranges) or a held-out set named in the "
                                                    "config's eval.randomization, e.g. wide")] = "train",
    video: Annotated[Optional[Path], typer.Option(help="render the first episode to this mp4")] = None,
    seed: Annotated[Optional[int], typer.Option(help="task seed (default: the run's seed + 1000, as its "
                                                     "final evaluation)")] = None,
    task: Annotated[Optional[str], typer.Option(help="check that the run was trained on this task")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (GPU backends)")] = "cpu",
    checkpoint: Annotated[Optional[int], typer.Option(help="evaluate model_<N>.pt of the run (default: the latest)")
                          ] = None,
    safety_filter: Annotated[bool, typer.Option("--safety-filter", help="pass the actions through the run's Q_risk "
                                                "safety critic (as the deploy runtime does); writes "
                                                "eval_<backend>[_<randomization>]_filtered.json")] = False,
    filter_threshold: Annotated[Optional[float], typer.Option(
        help="with --safety-filter: the risk above which an action is replaced (default: the run's "
             "safety_critic.filter_threshold)")] = None,
    filter_selection: Annotated[Optional[str], typer.Option(
        help="with --safety-filter: lowest_risk (the safest candidate) or closest_safe (the one nearest the command "
             "under the threshold); default: the run's")] = None,
    filter_toward: Annotated[Optional[str], typer.Option(
        help="with --safety-filter: where the shrunk candidates head: default (the default pose) or measured (the "
             "measured joints); default: the run's")] = None,
    filter_impedance_threshold: Annotated[Optional[float], typer.Option(
        help="with --safety-filter: the risk above which the joint impedance is lowered (1: never; default: the "
             "run's safety_critic.filter_impedance_threshold, the deploy profile's 0.1)")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="diffusion runs: ddim (few steps), ddpm (all training "
                                                        "steps) or warm (RTI-DP warm start); default: the run's")
                       ] = None,
    execute: Annotated[Optional[int], typer.Option(help="diffusion runs: actions executed from each plan before the "
                                                        "next (default: the run's diffusion.execute)")] = None,
    warm_steps: Annotated[Optional[int], typer.Option(help="diffusion runs, --sampler warm: DDIM steps that refine the "
                                                           "shifted chunk (default: the run's)")] = None,
    warm_schedule: Annotated[Optional[int], typer.Option(
        help="diffusion runs, --sampler warm: the DDIM schedule whose last --warm-steps refine (default: the run's)")
    ] = None,
) -> None:
    """Evaluate a trained policy (PPO run, teacher or distilled student) with the run's evaluation settings
    (deterministic actions, one episode per env); prints per-episode metrics and writes
    RUN/eval_<backend>.json (eval_<backend>_<randomization>.json for a held-out randomization). A diffusion run
    (train --algo diffusion) runs closed loop with its sampler (--sampler) and reports success rates with 95%
    intervals and ms per chunk in RUN/eval_<backend>_<sampler>.json (with _execute<N>/_warm<N>/_schedule<N> when
    --execute, --warm-steps or --warm-schedule change the run's settings)."""

    from robolearn.learn.checkpoint import checkpoint_file, load_checkpoint, run_folder
    from robolearn.learn.eval_run import evaluate_run

    ckpt, file = load_checkpoint(run, task=task, checkpoint=checkpoint, with_path=True)
    if ckpt["format"] == "robolearn-dsrl":
        if safety_filter or randomization != "train" or sampler not in (None, "ddim") or warm_steps is not None \
                or warm_schedule is not None:
            raise RobolearnError("a DSRL run plans with ddim from its actor's noise: no --sampler, --warm-steps, "
                                 "--warm-schedule, --safety-filter or --randomization")
        _eval_dsrl(ckpt, file, run, backend=backend, episodes=episodes, num_envs=num_envs, video=video,
                   device=device, execute=execute)
        return
    if ckpt["format"] == "robolearn-diffusion":
        if safety_filter or randomization != "train":
            raise RobolearnError("--safety-filter and --randomization: not for diffusion runs (yet)")
        _eval_diffusion(ckpt, file, run, backend=backend, episodes=episodes, num_envs=num_envs, seed=seed,
                        video=video, device=device, sampler=sampler, execute=execute, warm_steps=warm_steps,
                        warm_schedule=warm_schedule)
        return
    for name, value in (("--sampler", sampler), ("--execute", execute), ("--warm-steps", warm_steps),
                        ("--warm-schedule", warm_schedule)):
        if value is not None:
            raise RobolearnError(f"{name} is for diffusion runs; {file} is a {ckpt['format']} checkpoint")

    console.print(f"policy: {checkpoint_file(run, checkpoint)}", highlight=False)
    clip = _EpisodeVideo(video, lambda env: f"[bold]eval[/] {run} on {backend} ({randomization} randomization): "
                                            f"{env.num_envs} envs per batch")
    report, results = evaluate_run(run, backend=backend, episodes=episodes, num_envs=num_envs, seed=seed,
                                   randomization=randomization, task=task, on_first_batch=clip.first_batch,
                                   device=device, checkpoint=checkpoint,
                                   safety_filter={"threshold": filter_threshold, "selection": filter_selection,
                                                  "shrink_toward": filter_toward,
                                                  "impedance_threshold": filter_impedance_threshold}
                                   if safety_filter else None)
    _print_episodes(f"{report['task']} on {backend}: {len(results)} episodes", report["summary"], results)
    if safety_filter:
        console.print("safety filter: " + " ".join(f"{k}={_fmt(v)}" for k, v in report["safety_filter"].items()),
                      highlight=False)
    suffix = ("" if randomization == "train" else f"_{randomization}") + ("_filtered" if safety_filter else "")
    out = _write_report(run_folder(run) / f"eval_{backend}{suffix}.json", report)
    clip.close()
    console.print(f"{len(results)} episodes in {report['wall_time_s']:.0f} s -> {out}")


class _EpisodeVideo:
    """`--video` of an evaluation: its folder is checked when built (before any episode runs); `first_batch(env)`,
    the evaluators' on_first_batch, prints `announce(env)` and starts the recorder; `close()` says where it went."""

    def __init__(self, video: Optional[Path], announce: Optional[Callable[[Any], str]] = None) -> None:
        from robolearn.cli.export import output_folder

        self.video, self.announce, self.recorder = video, announce, None
        if video is not None:
            with output_folder(video.parent, "--video folder"):
                pass

    def first_batch(self, env: Any) -> Any:
        if self.announce is not None:
            console.print(self.announce(env), highlight=False)
        if self.video is not None:
            from robolearn.learn.hierarchical import HighLevelTask
            from robolearn.sim.render import VideoRecorder

            if isinstance(env, HighLevelTask):  # frames at the control rate, not once per high-level decision
                self.recorder = VideoRecorder(env.task, self.video)
                env.on_low_step = self.recorder
                return None
            self.recorder = VideoRecorder(env, self.video)
        return self.recorder

    def close(self) -> None:
        if self.recorder is not None:
            console.print(f"video: {self.recorder.close()}")


def _write_report(out: Path, report: dict[str, Any]) -> Path:
    """The evaluation report as JSON at `out` (a one-line error when it cannot be written)."""
    import json

    try:
        out.write_text(json.dumps(report, indent=2))
    except OSError as exc:
        raise RobolearnError(f"cannot write {out}: {exc.strerror}") from None
    return out


def _eval_dsrl(ckpt: dict[str, Any], file: Path, run: Path, *, backend: str, episodes: Optional[int],
               num_envs: Optional[int], video: Optional[Path], device: str, execute: Optional[int]) -> None:
    """`robolearn eval` of a DSRL run: the frozen diffusion policy planning from the actor's noise."""
    import dataclasses

    from robolearn.learn.checkpoint import run_folder
    from robolearn.learn.dsrl_run import evaluate_dsrl, load_dsrl

    cfg, dcfg, model, actor = load_dsrl(ckpt, file)
    if backend != dcfg.backend:
        dcfg = dataclasses.replace(dcfg, backend=backend)
    if execute is not None and execute != model.cfg.execute:
        raise RobolearnError(f"--execute: this DSRL run learned its noise for chunks of {model.cfg.execute} actions")
    console.print(f"policy: {file} (DSRL over {ckpt['base']['file']}, {ckpt.get('transitions', 0):,} chunks)",
                  highlight=False)
    clip = _EpisodeVideo(video)
    summary, results = evaluate_dsrl(actor, model, dcfg, cfg, device, episodes=episodes, num_envs=num_envs,
                                     on_first_batch=clip.first_batch)
    low, high = summary["success_ci95"]
    console.print(f"{summary['episodes']} episodes: success {summary['success']:.0%} [95% {low:.0%}, {high:.0%}], "
                  f"at the end {summary['success_at_end']:.0%}", highlight=False)
    report = {"run": str(run), "task": dcfg.task, "policy": "dsrl", "checkpoint": str(file),
              "base": ckpt["base"]["file"], "backend": backend, "device": device, "summary": summary,
              "per_episode": results}
    out = _write_report(run_folder(run) / f"eval_{backend}.json", report)
    clip.close()
    console.print(f"-> {out}")


def _eval_diffusion(ckpt: dict[str, Any], file: Path, run: Path, *, backend: str, episodes: Optional[int],
                    num_envs: Optional[int], seed: Optional[int], video: Optional[Path], device: str,
                    sampler: Optional[str], execute: Optional[int], warm_steps: Optional[int],
                    warm_schedule: Optional[int] = None) -> None:
    """`robolearn eval` of a diffusion run: closed-loop episodes, success with 95% intervals, ms per chunk."""
    import dataclasses

    from robolearn.learn.checkpoint import run_folder
    from robolearn.learn.diffusion_run import evaluate_run, load_diffusion

    cfg, model = load_diffusion(ckpt, file)
    sampler = sampler or cfg.diffusion.sampler
    changed = {k: v for k, v in (("execute", execute), ("warm_steps", warm_steps),
                                 ("warm_schedule_steps", warm_schedule))
               if v is not None and v != getattr(model.cfg, k)}
    model.cfg = dataclasses.replace(model.cfg, **changed)  # checked as the config is (a one-line error)
    console.print(f"policy: {file} (diffusion, {ckpt.get('steps', 0):,} gradient steps; sampler {sampler})",
                  highlight=False)
    clip = _EpisodeVideo(video, lambda env: f"[bold]eval[/] {run} on {backend}: {env.num_envs} envs per batch")
    summary, results = evaluate_run(
        model, cfg, episodes=episodes or cfg.eval.episodes, num_envs=num_envs or cfg.eval.num_envs,
        seed=cfg.seed + 1000 if seed is None else seed, sampler=sampler, backend=backend, device=device,
        on_first_batch=clip.first_batch)
    table = Table(title=f"{cfg.task} on {backend}: {summary['episodes']} episodes, diffusion ({sampler})")
    for col in ("env", "success", "at end", "length s", "return"):
        table.add_column(col)
    for r in results:
        table.add_row(str(r["env_id"]), "yes" if r["success"] else "no", "yes" if r["success_at_end"] else "no",
                      f"{r['length_s']:.2f}", f"{r['return']:.2f}")
    console.print(table)
    low, high = summary["success_ci95"]
    console.print(f"success {summary['success']:.0%} [95% {low:.0%}, {high:.0%}], at the end "
                  f"{summary['success_at_end']:.0%}; {summary['ms_per_chunk']:.1f} ms per chunk (one env)",
                  highlight=False)
    short = {"warm_steps": "warm", "warm_schedule_steps": "schedule"}
    tags = "".join(f"_{short.get(k, k)}{v}" for k, v in changed.items())
    report = {"run": str(run), "task": cfg.task, "policy": "diffusion", "checkpoint": str(file), "backend": backend,
              "device": device, "seed": cfg.seed + 1000 if seed is None else seed, "summary": summary,
              "per_episode": results}
    out = _write_report(run_folder(run) / f"eval_{backend}_{sampler}{tags}.json", report)
    clip.close()
    console.print(f"{summary['episodes']} episodes in {summary['wall_time_s']:.0f} s -> {out}")


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
    from robolearn.cli.export import output_folder
    from robolearn.learn.compare import check_baseline

    labels = label or [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise RobolearnError(f"--label given {len(labels)} times for {len(runs)} runs")
    check_baseline(baseline, labels)  # before minutes of evaluation
    with output_folder(output, "--output"):  # checked before minutes of evaluation
        _compare(runs, randomization, labels, episodes, num_envs, baseline, output)


def _compare(runs: list[Path], randomization: list[str], labels: list[str], episodes: Optional[int],
             num_envs: Optional[int], baseline: Optional[str], output: Path) -> None:
    from robolearn.learn.compare import comparison_rows, fitted_tables, summary_table, write_comparison
    from robolearn.learn.eval_run import evaluate_run

    reports = []
    for name in randomization:
        for run, lab in zip(runs, labels, strict=True):
            report, _ = evaluate_run(run, episodes=episodes, num_envs=num_envs, randomization=name)
            console.print(f"{lab} ({name}): " + " ".join(f"{k}={_fmt(v)}" for k, v in report["summary"].items()),
                          highlight=False, soft_wrap=True)
            reports.append(report)
    tasks = {r["task"] for r in reports}
    if len(tasks) > 1:
        raise RobolearnError(f"runs are for different tasks: {', '.join(sorted(tasks))}")
    rows = comparison_rows(reports, [lab for _ in randomization for lab in labels], baseline)
    meta = {"task": reports[0]["task"], "runs": [str(r) for r in runs], "labels": labels,
            "randomization": randomization, "episodes": reports[0]["episodes"], "baseline": baseline,
            "task_overrides": {r["randomization"]: r["task_overrides"] for r in reports}}
    paths = write_comparison(rows, reports[0]["task"], output, meta)
    # The terminal gets the table fitted to its width (split into parts, no cell cut); the markdown file holds it
    # whole, the JSON every number.
    for table in fitted_tables(summary_table(rows), f"{reports[0]['task']}: policies side by side (95% intervals)",
                               console.width):
        console.print(table)
    console.print(f"wrote {', '.join(map(str, paths))}", markup=False, highlight=False, soft_wrap=True)


