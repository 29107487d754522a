"""The one training loop for every algorithm: collection, budgets, logging, progress, checkpoints, resume,
interruption, summary and the closing evaluation (the method itself lives in an `Algorithm`).

runs/<name>/
  config.yaml      the resolved config of the run (written at the start, rewritten by a resume)
  checkpoints/     model_<iteration>.pt every `save_interval` iterations, and model.pt: always the latest
  tb/              TensorBoard scalars (a resumed run appends to the same folder, x = env steps)
  videos/          iter_<N>.mp4: with `video` set (robolearn train --video), a clip every video.interval iterations
  wandb/           with logger "wandb" (robolearn train --logger wandb; see loggers.py), and wandb_run_id
  summary.json     env steps, wall time, steps/s, the algorithm's own fields, and the closing evaluation

Budgets (`max_iterations`, `max_time_s`) count from the start of `learn`: a resumed run gets a fresh budget and
continues its iteration and env-step counts. The first Ctrl-C (SIGINT) or SIGTERM finishes the current iteration,
saves (model_<it>.pt, model.pt, summary.json marked `interrupted`) and raises `TrainingInterrupted` (the CLI
exits 130 and prints how to resume); a second Ctrl-C stops at once.

Under torchrun (WORLD_SIZE > 1) every rank runs this loop on its own env batch (see distributed.py); only rank 0
writes the run folder, TensorBoard, checkpoints, progress, videos and the evaluation; all ranks stop at the same
iteration.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from robolearn.errors import CheckpointError, ConfigError, RobolearnError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.checkpoint import CHECKPOINT_VERSION, load_checkpoint
from robolearn.learn.distributed import Distributed
from robolearn.learn.episode_log import EpisodeLog
from robolearn.learn.loggers import Logger, TrainingVideo, make_loggers
from robolearn.sim.tasks import Task

__all__ = ["RunnerCfg", "Runner", "TrainingInterrupted"]


class TrainingInterrupted(RobolearnError):
    """Training stopped on SIGINT/SIGTERM after saving; the message says where and how to resume."""


@dataclass(kw_only=True)
class RunnerCfg:
    steps_per_env: int = 24  # collection steps per env per iteration (collecting algorithms)
    max_iterations: int = 1000  # iterations of this `learn` call (a resume gets a fresh count)
    max_time_s: float = 0.0  # wall-clock budget of this `learn` call, 0: none; the first budget reached ends it
    save_interval: int = 100  # iterations between model_<it>.pt files (model.pt is rewritten with each)
    log_interval: int = 10  # iterations between plain log lines when not on a terminal (0: none)

    def __post_init__(self) -> None:
        if min(self.steps_per_env, self.max_iterations, self.save_interval) < 1 or self.max_time_s < 0:
            raise ConfigError("steps_per_env, max_iterations and save_interval must be >= 1, max_time_s >= 0; got "
                              f"{self.steps_per_env}, {self.max_iterations}, {self.save_interval}, {self.max_time_s}")


class Runner:
    """Runs `algorithm` on `task` (None for an offline algorithm) and writes `run_dir`.

    `meta` goes into every checkpoint beside the algorithm's state: task (name), obs_dims, num_actions,
    joint_names; `config` is the run's resolved config (config.yaml, and the checkpoint's `config`);
    `evaluate(policy)` is the closing evaluation written into summary.json.

    Set before `learn`: `logger` ("tensorboard", the default, or "wandb": TensorBoard and W&B) and `video` (a
    `TrainingVideo` built on rank 0: a clip every video.interval iterations; None: no videos)."""

    def __init__(self, algorithm: Algorithm, task: Task | None, cfg: RunnerCfg, run_dir: str | Path, *,
                 config: dict[str, Any], meta: dict[str, Any], console: Console | None = None,
                 dist: Distributed | None = None,
                 evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> None:
        if algorithm.collects and task is None:
            raise ValueError(f"{type(algorithm).__name__} collects experience: it needs a task")
        self.algorithm, self.task, self.cfg = algorithm, task, cfg
        self.run_dir = Path(run_dir)
        self.config, self.meta = config, meta
        self.console = console or Console()
        self.dist = dist
        self.evaluate_fn = evaluate
        self.logger = "tensorboard"
        self.video: TrainingVideo | None = None
        self.world_size = dist.world_size if dist is not None else 1
        self.rank = dist.rank if dist is not None else 0
        self.iteration = 0
        self.env_steps = 0
        self.train_time_s = 0.0
        self._stop_requested = False

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that writes files and prints."""
        return self.rank == 0

    def close(self, *, wait_for_peers: bool = True) -> None:
        """Release the task and leave the process group (a no-op for one process without a task). After an
        error pass wait_for_peers=False (see `Distributed.close`)."""
        if self.task is not None:
            self.task.close()
            self.task = None
        if self.video is not None:
            self.video.close()
            self.video = None
        if self.dist is not None:
            self.dist.close(wait_for_peers=wait_for_peers)
            self.dist = None

    # -- checkpoints ---------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": self.algorithm.checkpoint_format, "version": CHECKPOINT_VERSION, **self.meta,
            "config": self.config, "iteration": self.iteration, "env_steps": self.env_steps,
            "train_time_s": self.train_time_s, **self.algorithm.state_dict(),
            "task_state": self.task.state_dict() if self.task is not None else {},
        }, path)

    def _save_checkpoints(self) -> None:
        ckpts = self.run_dir / "checkpoints"
        self.save(ckpts / f"model_{self.iteration}.pt")
        self.save(ckpts / "model.pt")  # always the latest: play, eval, export and --resume read it

    def resume(self, path: str | Path) -> Path:
        """Continue from a checkpoint (a run folder: its latest). Rank 0 reads it and sends it to every rank.
        Returns the file read."""
        if self.dist is None:
            ckpt, file = load_checkpoint(path, task=self.meta["task"], with_path=True)
        else:
            ckpt, file, error = None, None, None
            if self.dist.is_main:
                try:
                    ckpt, file = load_checkpoint(path, task=self.meta["task"], with_path=True)
                except CheckpointError as exc:
                    error = str(exc)
            ckpt, file, error = self.dist.broadcast_object((ckpt, file, error))
            if error is not None:
                raise CheckpointError(error)
        if ckpt["format"] != self.algorithm.checkpoint_format:
            raise CheckpointError(f"{file}: a {ckpt['format']} checkpoint cannot be resumed by "
                                  f"{type(self.algorithm).__name__} ({self.algorithm.checkpoint_format})")
        if ckpt["obs_dims"] != self.meta["obs_dims"] or ckpt["num_actions"] != self.meta["num_actions"]:
            raise CheckpointError(f"{file}: observation/action sizes {ckpt['obs_dims']}, {ckpt['num_actions']} "
                                  f"do not match task {self.meta['task']}: {self.meta['obs_dims']}, "
                                  f"{self.meta['num_actions']}")
        self.algorithm.load_state_dict(ckpt)
        if self.task is not None:
            self.task.load_state_dict(ckpt.get("task_state", {}))
        self.iteration, self.env_steps = ckpt["iteration"], ckpt["env_steps"]
        self.train_time_s = ckpt.get("train_time_s", 0.0)
        return Path(file)

    # -- interruption --------------------------------------------------------------------------------------
    @contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM ask the loop to stop after the current iteration; a second SIGINT stops at once."""
        import threading

        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def request(signum: int, _frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.is_main:
                self.console.print(f"{signal.Signals(signum).name}: stopping after this iteration, then saving "
                                   "(Ctrl-C again to stop at once)", highlight=False)

        previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -- the loop ------------------------------------------------------------------------------------------
    def _collect(self, obs: dict[str, torch.Tensor], log: EpisodeLog) -> dict[str, torch.Tensor]:
        task, algo = self.task, self.algorithm
        with torch.inference_mode():
            for _ in range(self.cfg.steps_per_env):
                actions = algo.act(obs)
                obs, reward, cost, terminated, truncated, info = task.step(actions)
                log.step(reward, terminated | truncated)
                algo.process_env_step(obs, reward, cost, terminated, truncated, info)
            algo.compute_returns(obs)
        task.check()  # non-finite actions or a backend fault since the last iteration (one host sync)
        return obs

    def learn(self, *, progress: bool = True) -> dict[str, Any]:
        """Train until a budget ends (or a signal); save, evaluate and write summary.json. Returns the summary."""
        loggers = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
            loggers = make_loggers(self.logger, self.run_dir, self.config)
        try:
            return self._learn(loggers, progress)
        except BaseException as exc:
            if loggers is not None:  # a crash (or a second Ctrl-C): what was logged so far is kept
                loggers.close(failed=not isinstance(exc, TrainingInterrupted))
            raise

    def _learn(self, loggers: Logger | None, progress: bool) -> dict[str, Any]:
        cfg, algo, main, ranks = self.cfg, self.algorithm, self.is_main, self.dist
        collects = algo.collects
        num_envs = self.task.num_envs if collects else 0
        steps_per_iteration = num_envs * cfg.steps_per_env * self.world_size  # all ranks' env steps
        obs = self.task.reset() if collects else {}
        log = EpisodeLog(num_envs, self.task.device) if collects else None
        label, key = algo.progress_metric
        start_iteration, start = self.iteration, time.perf_counter()
        budget_s = cfg.max_time_s if cfg.max_time_s > 0 else float("inf")
        stats: dict[str, float] = {}
        live = progress and main and self.console.is_terminal
        log_every = cfg.log_interval if progress and main and not live else 0
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[it]}"),
                   TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[metric]}"), TimeElapsedColumn(),
                   TextColumn("ETA {task.fields[eta]}")]
        name = self.meta["task"]
        stopped_by = "iterations"
        with self._stop_on_signals(), Progress(*columns, console=self.console, disable=not live) as bar:
            job = bar.add_task(f"train {name}", total=1.0, it="", rate="", metric="", eta="-")
            while self.iteration - start_iteration < cfg.max_iterations:
                t0 = time.perf_counter()
                if collects:
                    obs = self._collect(obs, log)
                collect_s = time.perf_counter() - t0
                stats = algo.update()
                if collects:
                    log.end_iteration(self.task, None if ranks is None else ranks.sum)
                    stats["train/mean_return"] = log.mean_return
                    stats.update({f"episode/{k}": v for k, v in log.episode.items() if k != "episodes"})
                iter_s = time.perf_counter() - t0
                self.iteration += 1
                self.env_steps += steps_per_iteration
                self.train_time_s += iter_s
                if collects:
                    stats.update({"perf/steps_per_s": steps_per_iteration / iter_s, "perf/collect_s": collect_s,
                                  "perf/update_s": iter_s - collect_s})
                if loggers is not None:
                    loggers.log_scalars(stats, self.env_steps if collects else self.iteration)
                elapsed = time.perf_counter() - start
                done_it = self.iteration - start_iteration
                # The bar follows whichever budget is closer to its end.
                fraction = max(done_it / cfg.max_iterations, elapsed / budget_s)
                eta_s = elapsed / fraction - elapsed if fraction > 0 else 0.0
                eta = time.strftime("%H:%M:%S", time.gmtime(max(0.0, eta_s)))
                rate = f"{steps_per_iteration / iter_s:,.0f} steps/s" if collects else f"{1 / iter_s:.2f} it/s"
                metric = f"{label} {stats.get(key, float('nan')):.4g}"
                bar.update(job, completed=min(fraction, 1.0), it=f"it {self.iteration}", rate=rate, metric=metric,
                           eta=eta)
                if log_every and done_it % log_every == 0:
                    extra = ""
                    if collects and "episode/episode_length_s" in stats:
                        extra = f" | episode {stats['episode/episode_length_s']:.1f} s"
                    if "episode/raw_return" in stats:  # a Gymnasium env's return before reward normalization
                        extra += f" | return {stats['episode/raw_return']:.1f}"
                    self.console.print(
                        f"{name} it {self.iteration} ({done_it}/{cfg.max_iterations}) | {rate} | {metric}{extra} | "
                        f"elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))} | ETA {eta}",
                        highlight=False, soft_wrap=True)
                    self.console.file.flush()  # a log file or a pipe sees the line now, not a buffer later
                if main and self.iteration % cfg.save_interval == 0:
                    self._save_checkpoints()
                if main and self.video is not None and self.video.due(self.iteration):
                    self._record_video(loggers, self.env_steps if collects else self.iteration, progress)
                out_of_time, interrupted = time.perf_counter() - start >= budget_s, self._stop_requested
                if ranks is not None:  # all ranks stop at the same iteration
                    out_of_time, interrupted = ranks.any(out_of_time), ranks.any(interrupted)
                if interrupted or out_of_time:
                    stopped_by = "signal" if interrupted else "time"
                    bar.update(job, description=f"train {name} ({'interrupted' if interrupted else 'time budget'})")
                    break
        return self._finish(stats, log, start_iteration, time.perf_counter() - start, stopped_by, loggers)

    def _record_video(self, loggers: Logger | None, step: int, progress: bool) -> None:
        """videos/iter_<N>.mp4 of the current policy, logged; a failure is reported and ends the videos, not the
        training."""
        path = self.run_dir / "videos" / f"iter_{self.iteration}.mp4"
        try:
            clip = self.video.record(self.algorithm.deployable(), path)
        except Exception as exc:
            self.console.print(f"[yellow]video at iteration {self.iteration} failed ({type(exc).__name__}: {exc}); "
                               "no more videos this run[/]", highlight=False, soft_wrap=True)
            self.video.close()
            self.video = None
            return
        if loggers is not None:
            loggers.log_video("video/rollout", clip, step)
            loggers.log_scalars({"perf/video_s": clip.seconds}, step)
        if progress:
            self.console.print(f"video: {clip.path} ({len(clip.frames)} frames, {clip.seconds:.1f} s)",
                               highlight=False, soft_wrap=True)

    def _finish(self, stats: dict[str, float], log: EpisodeLog | None, start_iteration: int, wall_s: float,
                stopped_by: str, loggers: Logger | None) -> dict[str, Any]:
        """Checkpoints, evaluation and summary.json; raises TrainingInterrupted after saving on a signal."""
        wall_s = max(wall_s, 1e-9)
        iterations = self.iteration - start_iteration
        summary: dict[str, Any] = {
            "task": self.meta["task"], "algorithm": self.algorithm.checkpoint_format, **self._run_fields(),
            "iterations": self.iteration, "iterations_this_run": iterations, "env_steps": self.env_steps,
            "wall_time_s": round(wall_s, 2), "train_time_s": round(self.train_time_s, 2),
            "stopped_by": stopped_by,
        }
        if log is not None:
            summary["steps_per_s"] = round(iterations * self.task.num_envs * self.cfg.steps_per_env
                                           * self.world_size / wall_s, 1)
            # the mean return of the episodes that ended in the last iterations (EpisodeLog's window)
            summary["final_mean_reward"] = round(log.mean_return, 4) if log.returns_seen else None
            summary["final_episode"] = {k: round(v, 4) for k, v in log.episode.items()}
        summary.update(self.algorithm.summary(stats))
        if self.dist is not None:  # every rank must end with rank 0's parameters and normalizers
            per_rank = self.task.num_envs if self.task is not None else 0
            summary["distributed"] = {"world_size": self.world_size, "backend": self.dist.backend,
                                      "num_envs_per_rank": per_rank, "num_envs_total": per_rank * self.world_size,
                                      "max_param_divergence": self.dist.max_divergence(self.algorithm.deployable())}
        if self.video is not None:  # the clips are written; free its env before the evaluation
            self.video.close()
            self.video = None
        if not self.is_main:
            return summary
        if self.iteration % self.cfg.save_interval or iterations == 0:  # else the loop has just written them
            self._save_checkpoints()
        if loggers is not None:
            loggers.flush()
        interrupted = stopped_by == "signal"
        if interrupted:
            summary["interrupted"] = True  # no closing evaluation: the run is not finished
        elif self.evaluate_fn is not None:
            if self.task is not None:
                self.task.close()  # free the training envs before the evaluation builds its own
                self.task = None
            summary["eval"] = self.evaluate_fn(self.algorithm.deployable())
        if loggers is not None:
            loggers.close()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if interrupted:
            raise TrainingInterrupted(
                f"interrupted at iteration {self.iteration}; saved {self.run_dir / 'checkpoints' / 'model.pt'} "
                f"(and model_{self.iteration}.pt). Continue with: --resume {self.run_dir}")
        return summary

    def _run_fields(self) -> dict[str, Any]:
        """backend, device and num_envs of a collecting run."""
        if self.task is None:
            return {}
        return {"backend": self.task.backend, "device": str(self.task.device), "num_envs": self.task.num_envs}
