"""`robolearn bench`: env steps/s of a task (physics + observations + rewards + resets) next to the raw physics
rate of the same backend, same envs and same decimation, for every backend over a range of env counts.

`bench_task` measures one point (backend, num_envs); `run_sweep` runs backends x env counts with a time budget
per point and a host-memory guard; `write_report` writes the JSON (every number + machine info), a markdown
table and a PNG plot (env steps/s against envs, log-log) to `benchmarks/results/`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from robolearn.errors import ConfigError
from robolearn.sim.backends import BACKENDS, CPU_BACKENDS
from robolearn.sim.tasks import load_task_cfg, make_task

__all__ = ["BenchResult", "Skip", "Sweep", "COLUMNS", "bench_task", "resolve_backends", "backend_device",
           "run_sweep", "machine_info", "print_table", "write_report"]

COLUMNS = ("backend", "device", "envs", "env steps/s", "raw physics steps/s", "raw env steps/s", "env / raw",
           "steps timed", "note")
_VERSIONS = ("torch", "numpy", "mujoco", "pybullet", "mujoco-mjx", "jax", "jaxlib", "mujoco-warp", "warp-lang")
_PLOT_SIZE = (8.0, 5.0)  # inches, at _PLOT_DPI: an 800 x 500 PNG
_PLOT_DPI = 100
ROUNDS, WARMUP = 3, 10  # timed rounds per point (medians reported), warm-up steps before each timed phase


@dataclass
class BenchResult:
    task: str
    backend: str
    num_envs: int
    decimation: int
    env_steps_per_s: float  # task.step: physics + observations + rewards + resets
    raw_physics_steps_per_s: float  # backend.step alone
    raw_env_steps_per_s: float  # the same, per policy step (physics / decimation)
    device: str = "cpu"
    steps_timed: int = 0  # policy steps (per env) timed through task.step, all rounds
    raw_steps_timed: int = 0  # policy steps (per env) timed through backend.step, all rounds
    truncated: bool = False  # a timed phase ran out of its share of the time budget before `steps`
    build_s: float = 0.0  # building the task and backend (model copies, clients, first compile)
    wall_s: float = 0.0  # the whole point: build + warm-up + timing
    rss_bytes: int | None = None  # process resident memory right after the build (Linux)
    env_rates: list[float] = field(default_factory=list)  # env steps/s of each round (the median is reported)
    raw_rates: list[float] = field(default_factory=list)  # raw env steps/s of each round

    @property
    def ratio(self) -> float:
        return self.env_steps_per_s / self.raw_env_steps_per_s


@dataclass
class Skip:
    """Env counts of a backend that were not measured, and why."""

    backend: str
    num_envs: list[int]
    reason: str


@dataclass
class Sweep:
    task: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    results: list[BenchResult] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def command(self) -> str:
        """The `robolearn bench` command that repeats this sweep (on another machine: compare like with like)."""
        s = self.settings
        args = ["robolearn", "bench", "--task", self.task, *(a for b in s["backends"] for a in ("--backend", b)),
                *(a for n in s["num_envs"] for a in ("--num-envs", str(n))), "--steps", str(s["steps"]),
                "--max-seconds", f"{s['max_seconds']:g}", "--device", s["device"]]
        return shlex.join(args)

    def rows(self) -> list[list[str]]:
        """One row per measured point and one per skip, in COLUMNS order, grouped by backend."""
        rows: list[list[str]] = []
        for name in dict.fromkeys([r.backend for r in self.results] + [s.backend for s in self.skipped]):
            for r in (r for r in self.results if r.backend == name):
                note = f"cut by the time budget ({self.settings['max_seconds']:g} s)" if r.truncated else ""
                steps = f"{r.steps_timed} + {r.raw_steps_timed}"
                rows.append([r.backend, r.device, str(r.num_envs), *_numbers(r), steps, note])
            for s in (s for s in self.skipped if s.backend == name):
                rows.append([s.backend, "-", ", ".join(map(str, s.num_envs)), "-", "-", "-", "-", "-",
                             f"not run: {s.reason}"])
        return rows

    def to_dict(self) -> dict[str, Any]:
        results = [{**asdict(r), "ratio": r.ratio} for r in self.results]
        return {"task": self.task, "created": self.created, "command": self.command, "settings": self.settings,
                "machine": self.machine, "results": results, "skipped": [asdict(s) for s in self.skipped]}


def _numbers(r: BenchResult) -> list[str]:
    """env steps/s, raw physics steps/s, raw env steps/s, env / raw."""
    return [f"{r.env_steps_per_s:,.0f}", f"{r.raw_physics_steps_per_s:,.0f}", f"{r.raw_env_steps_per_s:,.0f}",
            f"{r.ratio:.0%}"]


# ----------------------------------------------------------------------------------------------- one point


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[int], object], n: int, budget_s: float, device: torch.device) -> tuple[float, int]:
    """Call `step(i)` for i < n, stopping early once `budget_s` seconds are spent (after at least one call).
    Returns (seconds, calls)."""
    _sync(device)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        step(done)
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    _sync(device)
    return time.perf_counter() - t0, done


def bench_task(task_name: str, *, backend: str = "mujoco", num_envs: int = 1024, steps: int = 100,
               rounds: int = ROUNDS, warmup: int = WARMUP, action_std: float = 0.3, seed: int = 0, device: str = "cpu",
               max_seconds: float = math.inf) -> BenchResult:
    """Random actions (Gaussian, `action_std`) through the full task step, then the same control pattern
    through the backend alone; `rounds` alternating measurements of `steps // rounds` steps, medians reported.
    Each raw round starts from a fresh reset so both see the same mix of standing and fallen robots.
    Each of the 2 x `rounds` timed phases stops early once it has used its share of `max_seconds`."""
    t_start = time.perf_counter()
    task = make_task(task_name, num_envs, backend=backend, device=device, seed=seed)
    build_s = time.perf_counter() - t_start
    rss = _rss_bytes()
    dev = task.device
    g = torch.Generator().manual_seed(seed)
    actions = [(action_std * torch.randn(num_envs, task.num_actions, generator=g)).to(dev) for _ in range(8)]
    ctrls = [task.action_to_ctrl(a) for a in actions]
    n = max(1, steps // rounds)
    budget = max_seconds / (2 * rounds)
    env_rates, raw_rates, env_done, raw_done = [], [], 0, 0
    try:
        for _ in range(rounds):
            task.reset()
            for i in range(warmup):
                task.step(actions[i % 8])
            seconds, done = _timed(lambda i: task.step(actions[i % 8]), n, budget, dev)
            env_rates.append(num_envs * done / seconds)
            env_done += done
            task.reset()
            for i in range(warmup):
                task.sim.step(ctrls[i % 8])
            seconds, done = _timed(lambda i: task.sim.step(ctrls[i % 8]), n, budget, dev)
            raw_rates.append(num_envs * done / seconds)
            raw_done += done
    finally:
        task.close()
    env_rate, raw_env_rate = statistics.median(env_rates), statistics.median(raw_rates)
    d = task.cfg.decimation
    return BenchResult(task_name, backend, num_envs, d, env_rate, raw_env_rate * d, raw_env_rate, device=str(dev),
                       steps_timed=env_done, raw_steps_timed=raw_done, truncated=min(env_done, raw_done) < n * rounds,
                       build_s=build_s, wall_s=time.perf_counter() - t_start, rss_bytes=rss, env_rates=env_rates,
                       raw_rates=raw_rates)


# ----------------------------------------------------------------------------------------------- the sweep


def resolve_backends(names: Sequence[str]) -> list[str]:
    """Backend names in the order given, `all` expanded to every registered backend; unknown names refused."""
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(BACKENDS)
        elif name in BACKENDS:
            out.append(name)
        else:
            raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}, all")
    return list(dict.fromkeys(out))


def backend_device(backend: str, device: str = "auto") -> str | None:
    """The device a backend is benchmarked on: CPU engines always on the CPU; the others on `device`, where
    `auto` is CUDA when a GPU is present and None (not run) otherwise: MJX and MuJoCo Warp on the CPU compile
    for minutes and crawl, so they run there only when asked for with `device="cpu"`."""
    if backend in CPU_BACKENDS:
        return "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else None
    return device


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _available_bytes() -> int | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def _memory_shortfall(done: list[BenchResult], rss_before: int | None, num_envs: int) -> str | None:
    """Why `num_envs` would not fit in host memory, judged from the resident memory the backend's last points
    took per env; None when it fits or cannot be told. Memory the process kept from earlier points counts as
    free (it is reused)."""
    points = [(0, rss_before)] + [(r.num_envs, r.rss_bytes) for r in done]
    if len(points) < 2 or any(rss is None for _, rss in points[-2:]):
        return None
    (n0, rss0), (n1, rss1) = points[-2:]
    per_env = max(0, rss1 - rss0) / (n1 - n0)
    available, rss_now = _available_bytes(), _rss_bytes()
    if available is None or rss_now is None or rss_before is None:
        return None
    need, have = per_env * num_envs, available + max(0, rss_now - rss_before)
    if need <= 0.9 * have:
        return None
    return (f"needs ~{need / 2**30:.1f} GiB of host memory ({per_env / 2**20:.1f} MiB per env), "
            f"{have / 2**30:.1f} GiB free")


def run_sweep(task: str, backends: Sequence[str], num_envs: Sequence[int], *, steps: int = 100,
              max_seconds: float = 60.0, device: str = "auto", seed: int = 0, console: Console | None = None,
              progress: bool = True, max_total_seconds: float = math.inf,
              on_point: Callable[[Sweep], object] | None = None) -> Sweep:
    """Measure every backend at every env count (ascending). A backend's sweep ends early when a point takes
    longer than `max_seconds` (build + warm-up + timing), when the next count would not fit in host memory, or
    when a point fails; a backend whose optional dependency does not import is skipped. No point starts once
    `max_total_seconds` have passed since the sweep began. Each of these is printed as one line and kept in
    `Sweep.skipped`. `on_point(sweep)` runs after every measured point (the CLI writes the report there, so that a
    sweep killed by an outer time limit keeps what it measured)."""
    load_task_cfg(task)  # an unknown task fails here, in one line, not as a skipped backend
    names = resolve_backends(backends)
    counts = sorted(set(num_envs))
    if not counts or counts[0] < 1:
        raise ConfigError(f"--num-envs must be >= 1, got {', '.join(map(str, num_envs)) or 'nothing'}")
    if steps < 1 or max_seconds <= 0:
        raise ConfigError(f"--steps must be >= 1 and --max-seconds > 0, got {steps} and {max_seconds:g}")
    if device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    console = console or Console()
    sweep = Sweep(task, {"steps": steps, "rounds": ROUNDS, "warmup": WARMUP, "max_seconds": max_seconds, "seed": seed,
                         "device": device, "backends": names, "num_envs": counts}, machine_info())
    live = progress and console.is_terminal
    start = time.perf_counter()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) if live else nullcontext() as bar:
        job = bar.add_task(f"bench {task}", total=len(names) * len(counts)) if bar else None
        for name in names:
            dev = backend_device(name, device)
            done: list[BenchResult] = []
            rss_before = _rss_bytes()
            for i, n in enumerate(counts):
                if bar:
                    bar.update(job, description=f"{name} on {dev}: {n} envs")
                r, stop = None, (_memory_shortfall(done, rss_before, n) if dev else
                                 "no GPU here (--device cpu runs this GPU backend on the CPU, slowly)")
                if stop is None and time.perf_counter() - start > max_total_seconds:
                    stop = f"the sweep's {max_total_seconds:g} s were spent"
                if stop is None:
                    try:
                        r = bench_task(task, backend=name, num_envs=n, steps=steps, seed=seed, device=dev,
                                       max_seconds=max_seconds)
                    except KeyboardInterrupt:
                        sweep.skipped.append(Skip(name, counts[i:], "interrupted"))
                        console.print(f"interrupted at {name}, {n} envs", markup=False, highlight=False)
                        return sweep
                    except Exception as exc:  # noqa: BLE001 - one failing backend must not lose the others
                        stop = (f"missing dependency: {_first_line(exc)}" if _missing_dependency(exc)
                                else f"failed at {n} envs: {type(exc).__name__}: {_first_line(exc)}")
                if r is not None:
                    done.append(r)
                    sweep.results.append(r)
                    if on_point is not None:
                        on_point(sweep)
                    if bar:
                        bar.advance(job)
                    else:
                        console.print(f"{name} on {r.device}, {n} envs: {r.env_steps_per_s:,.0f} env steps/s, "
                                      f"{r.raw_physics_steps_per_s:,.0f} raw physics steps/s ({r.wall_s:.1f} s)",
                                      markup=False, highlight=False)
                    if r.wall_s > max_seconds:
                        stop = f"{n} envs took {r.wall_s:.1f} s, over the {max_seconds:g} s budget per point"
                if stop is not None:
                    left = counts[i + 1 :] if r is not None else counts[i:]
                    if left:
                        sweep.skipped.append(Skip(name, left, stop))
                        console.print(f"skip {name} at {', '.join(map(str, left))} envs: {stop}", markup=False,
                                      highlight=False)
                        if bar:
                            bar.advance(job, len(left))
                    break
    sweep.machine["load_average_end"] = _load_average()
    return sweep


def _missing_dependency(exc: BaseException) -> bool:
    """An ImportError, or an error raised while handling one (a backend's own "needs X: pip install ..." message)."""
    return isinstance(exc, ImportError) or isinstance(exc.__context__, ImportError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# ----------------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, GPU, Python and the versions of the simulation packages."""
    cpu = platform.processor() or platform.machine()
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    mem = None
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        mem = int(found.group(1)) * 1024 if found else None
    except OSError:
        pass
    versions = {}
    for dist in _VERSIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "memory_bytes": mem, "gpus": gpus, "cuda": torch.version.cuda if gpus else None,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(), "versions": versions,
            "load_average": _load_average()}


def _load_average() -> float | None:
    """The 1-minute load average: above the CPU count, other processes were competing for the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def device_tag(machine: dict[str, Any]) -> str:
    """A file-name tag for the machine: the GPU's name (`nvidia-h100-80gb-hbm3`) or `cpu<count>`."""
    name = machine["gpus"][0] if machine["gpus"] else f"cpu{machine['cpu_count']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ----------------------------------------------------------------------------------------------- report


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def print_table(sweep: Sweep, console: Console) -> None:
    """The measured points as a table that fits an 80-column terminal (numbers never cut), then what was not run."""
    rows = [[r.backend, r.device, f"{r.num_envs}{'*' if r.truncated else ''}", *_numbers(r)] for r in sweep.results]
    table = Table(title=f"bench {sweep.task}")
    for j, col in enumerate(COLUMNS[:7]):  # headers wrap, cells are never narrower than their content
        table.add_column(col, justify="left" if j < 2 else "right", overflow="fold",
                         min_width=max((len(row[j]) for row in rows), default=1))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if any(r.truncated for r in sweep.results):
        console.print(f"* timing cut by the {sweep.settings['max_seconds']:g} s budget per point: fewer steps than "
                      f"--steps {sweep.settings['steps']}", highlight=False)
    for d in sorted({r.decimation for r in sweep.results}):
        console.print(f"decimation {d}: raw env steps/s = raw physics steps/s / {d}")
    for s in sweep.skipped:
        console.print(f"not run: {s.backend} at {', '.join(map(str, s.num_envs))} envs: {s.reason}", markup=False,
                      highlight=False)


def _markdown(sweep: Sweep) -> str:
    m, s = sweep.machine, sweep.settings
    gib = f", {m['memory_bytes'] / 2**30:.1f} GiB" if m["memory_bytes"] else ""
    gpus = ", ".join(m["gpus"]) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    decimations = sorted({r.decimation for r in sweep.results})
    lines = [f"# bench {sweep.task}, {sweep.created}", "", f"`{sweep.command}`", "",
             f"- machine: {m['cpu']}, {m['cpu_count']} CPUs{gib}; GPU: {gpus}; Python {m['python']}; {versions}; "
             f"1-min load average at start / end: {m['load_average']} / {m.get('load_average_end')}",
             f"- settings: {s['steps']} policy steps per env timed per measurement in {s['rounds']} rounds (medians), "
             f"{s['warmup']} warm-up steps per round, {s['max_seconds']:g} s budget per point, seed {s['seed']}",
             f"- raw env steps/s = raw physics steps/s / decimation ({', '.join(map(str, decimations)) or '-'}); "
             "steps timed = task steps + raw steps per env", "",
             "| " + " | ".join(COLUMNS) + " |",
             "| " + " | ".join("---:" if c not in ("backend", "device", "note") else "---" for c in COLUMNS) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in sweep.rows()]
    return "\n".join(lines) + "\n"


def _plot(sweep: Sweep, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    fig, ax = plt.subplots(figsize=_PLOT_SIZE, dpi=_PLOT_DPI, layout="constrained")
    try:
        for i, name in enumerate(dict.fromkeys(r.backend for r in sweep.results)):
            points = sorted((r for r in sweep.results if r.backend == name), key=lambda r: r.num_envs)
            envs = [r.num_envs for r in points]
            color = f"C{i}"
            ax.plot(envs, [r.env_steps_per_s for r in points], "o-", color=color, lw=2,
                    label=f"{name} ({points[0].device}): env step")
            ax.plot(envs, [r.raw_env_steps_per_s for r in points], "--", color=color, lw=1, alpha=0.7,
                    label=f"{name}: raw physics / decimation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({r.num_envs for r in sweep.results})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("parallel envs")
        ax.yaxis.set_major_formatter(FuncFormatter(_si))
        low, high = ax.get_ylim()  # label 2x and 5x minor ticks too when at most three decades are shown
        ax.yaxis.set_minor_formatter(FuncFormatter(_si_minor) if high / low <= 1000 else NullFormatter())
        ax.set_ylabel("env steps/s")
        ax.set_title(f"{sweep.task} on {device_tag(sweep.machine)}, {sweep.created[:10]}")
        ax.grid(True, which="both", alpha=0.3)
        fig.legend(loc="outside lower center", ncol=2, fontsize=8)  # below the axes: never over a line
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _si(value: float, _pos: object = None) -> str:
    """1000 -> 1k, 2500000 -> 2.5M: axis labels people read at a glance."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _si_minor(value: float, _pos: object = None) -> str:
    lead = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return _si(value) if round(lead) in (2, 5) else ""


def write_report(sweep: Sweep, out_dir: Path, tag: str | None = None) -> tuple[list[Path], str | None]:
    """`bench_<task>_<tag>_<date>.{json,md,png}` in `out_dir`, each written to a .tmp file and renamed.
    Returns the paths written and, when no plot could be drawn, why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.fromisoformat(sweep.created).strftime("%Y%m%d-%H%M%S")
    stem = f"bench_{sweep.task}_{tag or device_tag(sweep.machine)}_{stamp}"
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    _write_atomic(paths[0], lambda p: p.write_text(json.dumps(sweep.to_dict(), indent=2) + "\n"))
    _write_atomic(paths[1], lambda p: p.write_text(_markdown(sweep)))
    if not sweep.results:
        return paths, "no plot: nothing was measured"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return paths, "no plot: matplotlib is not installed (pip install matplotlib)"
    paths.append(out_dir / f"{stem}.png")
    _write_atomic(paths[2], lambda p: _plot(sweep, p))
    return paths, None
