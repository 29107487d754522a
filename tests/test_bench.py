"""`robolearn bench`: a sweep over backends and env counts, its skips, and the JSON / markdown / PNG it writes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from robolearn import bench
from robolearn.bench import COLUMNS, BenchResult, Skip, backend_device, resolve_backends, run_sweep, write_report
from robolearn.errors import ConfigError
from robolearn.sim.backends import BACKENDS

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


class NeedsMissingModule:
    """A registered backend whose optional dependency is not installed."""

    def __init__(self, model, num_envs, device="cpu"):
        import robolearn_test_missing_module  # noqa: F401


class NeedsMissingModuleWithHint(NeedsMissingModule):
    """The same, reporting it as mjwarp does: a one-line error with the install command."""

    def __init__(self, model, num_envs, device="cpu"):
        try:
            super().__init__(model, num_envs, device)
        except ImportError as e:
            raise ConfigError(f"backend 'hinted' needs {e.name}: pip install robolearn[hinted]") from None


def _color_pixels(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) < 12).sum())


def test_cli_sweeps_backends_and_env_counts_into_json_markdown_and_plot(tmp_path):
    out = run("bench", "--task", "panda-reach", "--backend", "mujoco", "--backend", "pybullet", "--num-envs", "4",
              "--num-envs", "2", "--steps", "3", "--output", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "raw physics steps/s" in out.stdout and "env / raw" in out.stdout and "wrote " in out.stdout

    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".json", ".md", ".png"], files  # no .tmp left behind
    assert len({f.stem for f in files}) == 1
    assert re.fullmatch(r"bench_panda-reach_[a-z0-9-]+_\d{8}-\d{6}", files[0].stem), files[0].stem

    data = json.loads(files[0].read_text())
    assert data["task"] == "panda-reach" and data["settings"]["num_envs"] == [2, 4]
    assert data["settings"]["backends"] == ["mujoco", "pybullet"] and data["skipped"] == []
    assert data["command"] == ("robolearn bench --task panda-reach --backend mujoco --backend pybullet --num-envs 2 "
                               "--num-envs 4 --steps 3 --max-seconds 60 --device auto")
    machine = data["machine"]
    assert machine["cpu_count"] == os.cpu_count() and isinstance(machine["gpus"], list)
    assert {"torch", "mujoco", "pybullet"} <= set(machine["versions"]) and machine["python"]
    points = {(r["backend"], r["num_envs"]): r for r in data["results"]}
    assert set(points) == {("mujoco", 2), ("mujoco", 4), ("pybullet", 2), ("pybullet", 4)}
    for r in points.values():
        assert r["device"] == "cpu" and r["decimation"] == 4 and r["steps_timed"] == r["raw_steps_timed"] == 3
        assert not r["truncated"] and r["env_steps_per_s"] > 0 and len(r["env_rates"]) == 3
        assert r["raw_physics_steps_per_s"] == pytest.approx(4 * r["raw_env_steps_per_s"])
        assert r["ratio"] == pytest.approx(r["env_steps_per_s"] / r["raw_env_steps_per_s"])
        assert r["wall_s"] >= r["build_s"] > 0

    lines = files[1].read_text().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(COLUMNS) + " |"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [(row[0], int(row[2])) for row in rows] == [("mujoco", 2), ("mujoco", 4), ("pybullet", 2), ("pybullet", 4)]
    for row in rows:
        r = points[(row[0], int(row[2]))]
        assert row[3] == f"{r['env_steps_per_s']:,.0f}" and row[4] == f"{r['raw_physics_steps_per_s']:,.0f}"
        assert row[6] == f"{r['ratio']:.0%}" and row[7] == "3 + 3"
    assert "mujoco" in lines[4] and str(os.cpu_count()) in lines[4]  # the machine line

    with Image.open(files[2]) as png:
        assert png.format == "PNG" and png.size == (800, 500)
        img = np.asarray(png.convert("RGB"))
    assert _color_pixels(img, (31, 119, 180)) > 200, "no mujoco line (matplotlib C0)"
    assert _color_pixels(img, (255, 127, 14)) > 200, "no pybullet line (matplotlib C1)"


def test_unknown_backend_is_one_line_error(tmp_path, monkeypatch, capsys):
    from robolearn.cli import main

    monkeypatch.setattr(sys, "argv", ["robolearn", "bench", "--task", "panda-reach", "--backend", "mujoco",
                                      "--backend", "isaac", "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    valid = ", ".join(BACKENDS)  # every registered backend, then 'all'
    assert capsys.readouterr().err == f"error: unknown backend 'isaac'; valid backends: {valid}, all\n"
    assert not list(tmp_path.iterdir())


def test_all_means_every_registered_backend():
    assert resolve_backends(["all"]) == list(BACKENDS)
    assert resolve_backends(["pybullet", "all", "pybullet"])[0] == "pybullet"
    with pytest.raises(ConfigError, match="unknown task 'go3'"):
        run_sweep("go3", ["mujoco"], [2], console=quiet())
    with pytest.raises(ConfigError, match="--num-envs must be >= 1"):
        run_sweep("panda-reach", ["mujoco"], [0], console=quiet())


def test_gpu_backends_run_on_a_gpu_or_when_asked_for_on_the_cpu(monkeypatch):
    assert backend_device("mujoco", "cuda") == "cpu" and backend_device("pybullet", "auto") == "cpu"
    assert backend_device("mjx", "cpu") == "cpu" and backend_device("mjwarp", "cuda:1") == "cuda:1"
    assert backend_device("mjx", "auto") == ("cuda" if torch.cuda.is_available() else None)
    if not torch.cuda.is_available():  # `all` on a CPU machine: no minutes-long MJX / Warp compiles by default
        monkeypatch.setitem(BACKENDS, "gpu-only", (NeedsMissingModule, "test backend"))
        sweep = run_sweep("panda-reach", ["gpu-only"], [2, 4], console=quiet())
        assert sweep.results == []
        assert sweep.skipped == [Skip("gpu-only", [2, 4], "no GPU here (--device cpu runs this GPU backend on the "
                                                          "CPU, slowly)")]


def test_backend_with_missing_dependency_is_skipped_with_a_message(monkeypatch, tmp_path):
    monkeypatch.setitem(BACKENDS, "needs-missing", (NeedsMissingModule, "test backend"))
    monkeypatch.setitem(BACKENDS, "hinted", (NeedsMissingModuleWithHint, "test backend"))
    console = quiet()
    sweep = run_sweep("panda-reach", ["needs-missing", "mujoco", "hinted"], [2, 4], steps=3, device="cpu",
                      console=console)
    assert [(r.backend, r.num_envs) for r in sweep.results] == [("mujoco", 2), ("mujoco", 4)]
    plain = "missing dependency: No module named 'robolearn_test_missing_module'"
    hinted = "missing dependency: backend 'hinted' needs robolearn_test_missing_module: pip install robolearn[hinted]"
    assert sweep.skipped == [Skip("needs-missing", [2, 4], plain), Skip("hinted", [2, 4], hinted)]
    printed = console.file.getvalue()
    assert f"skip needs-missing at 2, 4 envs: {plain}\n" in printed
    assert f"skip hinted at 2, 4 envs: {hinted}\n" in printed

    paths, note = write_report(sweep, tmp_path, tag="t")
    assert note is None and paths[0].name.startswith("bench_panda-reach_t_")
    assert f"| needs-missing | - | 2, 4 | - | - | - | - | - | not run: {plain} |" in paths[1].read_text()
    skipped = json.loads(paths[0].read_text())["skipped"]
    assert skipped[0] == {"backend": "needs-missing", "num_envs": [2, 4], "reason": plain}


def test_time_budget_cuts_the_timing_and_ends_the_backends_sweep(tmp_path):
    console = quiet()
    sweep = run_sweep("panda-reach", ["mujoco"], [8, 2, 4], steps=30, max_seconds=1e-6, console=console)
    (r,) = sweep.results
    assert r.num_envs == 2 and r.truncated and r.steps_timed == r.raw_steps_timed == 3  # 1 of 10 steps per round
    (skip,) = sweep.skipped
    assert skip.backend == "mujoco" and skip.num_envs == [4, 8]
    assert re.fullmatch(r"2 envs took [\d.]+ s, over the 1e-06 s budget per point", skip.reason), skip.reason
    assert "skip mujoco at 4, 8 envs: 2 envs took" in console.file.getvalue()

    paths, _ = write_report(sweep, tmp_path)
    md = paths[1].read_text()
    assert "| cut by the time budget (1e-06 s) |" in md and f"| not run: {skip.reason} |" in md


def test_memory_guard_projects_host_memory_per_env():
    base = bench._rss_bytes()
    assert base is not None  # Linux: /proc/self/statm
    point = BenchResult("go2-flat", "pybullet", 16, 4, 1.0, 1.0, 1.0, rss_bytes=base + 16 * 43 * 2**20)
    assert bench._memory_shortfall([], base, 10**6) is None  # nothing measured yet: no estimate
    assert bench._memory_shortfall([point], base, 32) is None
    reason = bench._memory_shortfall([point], base, 10**6)  # 41,992 GiB
    assert reason is not None
    assert re.fullmatch(r"needs ~41992\.2 GiB of host memory \(43\.0 MiB per env\), [\d.]+ GiB free", reason), reason
