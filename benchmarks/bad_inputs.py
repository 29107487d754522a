"""The bad-input tour: realistic mistakes a new user types, run as real `python -m robolearn.cli ...` subprocesses.

Each input passes when the command exits with the expected non-zero code (2: bad input; deploy: 2 bad input,
3 fault, 4 no robot state), its stderr (blank lines and the HARMLESS lines below ignored) is exactly one line,
that line starts with `error:` and names what was wrong (the input's `names` substring: the option, field or
file), and no Python traceback appears anywhere.

    python benchmarks/bad_inputs.py                      # ~100 inputs, a few minutes on 2 cores
    python benchmarks/bad_inputs.py --only deploy        # the inputs of one command (substring of the command line)
    python benchmarks/bad_inputs.py --fixtures /tmp/bi   # build the fixtures there once and reuse them

Fixtures (built in a temporary folder unless --fixtures is given): a tiny untrained panda-reach run and its export,
a run folder without checkpoints, a run with a corrupted checkpoint, bundles with a corrupted deploy.yaml or without
policy.onnx, a one-episode panda-push dataset and copies of it with a damaged parquet file or meta/info.json, YAML
configs and profiles with syntax errors. Writes benchmarks/results/bad_inputs_<YYYYMMDD-HHMMSS>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
ENV = {"COLUMNS": "200", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}

# stderr lines that are not part of the error (none are known today: every stderr line counts). Each entry is a
# regular expression matched against a whole stderr line, with the reason it is harmless.
HARMLESS: list[tuple[str, str]] = []


@dataclass
class Case:
    group: str  # the robolearn command the input exercises
    args: list[str]  # after `python -m robolearn.cli`; "{T}" is the fixtures folder
    names: str  # the error line must contain this: the offending option, field or file
    what: str  # the mistake, in words
    code: int = 2  # expected exit code


def cases() -> list[Case]:
    r, e, c = "{T}/runs/r", "{T}/runs/empty", "{T}/runs/corrupt"
    go2 = ["deploy", "--robot", "go2", "--policy", "go2-flat", "--transport", "sim"]
    out = [
        # train
        Case("train", ["train", "go3-flat"], "go3-flat", "unknown task (typo)"),
        Case("train", ["trian", "panda-reach"], "trian", "unknown command (typo)"),
        Case("train", ["train"], "task", "task argument missing"),
        Case("train", ["train", "panda-reach", "--backend", "isaac"], "isaac", "unknown backend"),
        Case("train", ["train", "panda-reach", "--device", "tpu"], "tpu", "unknown device"),
        Case("train", ["train", "panda-reach", "--device", "cuda:3"], "cuda", "CUDA device on a machine without it"),
        Case("train", ["train", "panda-reach", "--set", "num_envs"], "--set", "--set without =value"),
        Case("train", ["train", "panda-reach", "--set", "=5"], "--set", "--set with an empty key"),
        Case("train", ["train", "panda-reach", "--set", "ppo.learning_rat=0.1"], "learning_rat",
             "--set of a misspelled field"),
        Case("train", ["train", "panda-reach", "--set", "ppo.learning_rate=fast"], "learning_rate",
             "--set with a wrong type"),
        Case("train", ["train", "panda-reach", "--set", "num_envs=[8,16"], "num_envs", "--set value that is not YAML"),
        Case("train", ["train", "panda-reach", "--set", "ppo.gamma=1.5"], "gamma", "--set out of range (gamma > 1)"),
        Case("train", ["train", "panda-reach", "--set", "ppo.minibatches=0"], "minibatches", "--set zero minibatches"),
        Case("train", ["train", "panda-reach", "--algo", "sac"], "algorithm", "--algo not an algorithm"),
        Case("train", ["train", "panda-reach", "--algo", "ppo-lag", "--set", "lagrangian.cost_limit=-1"],
             "cost_limit", "--set negative cost limit"),
        Case("train", ["train", "panda-reach", "--set", "task_overrides.robot=ur5"], "ur5", "unknown robot override"),
        Case("train", ["train", "panda-reach", "--set", "eval.num_envs=-2"], "num_envs", "--set negative count"),
        Case("train", ["train", "panda-reach", "--num-envs", "0"], "num_envs", "zero envs"),
        Case("train", ["train", "panda-reach", "--num-envs", "-8"], "num_envs", "negative envs"),
        Case("train", ["train", "panda-reach", "--num-envs", "many"], "--num-envs", "envs not a number"),
        Case("train", ["train", "panda-reach", "--iterations", "-1"], "iterations", "negative iterations"),
        Case("train", ["train", "panda-reach", "--max-time", "-5"], "max_time", "negative time budget"),
        Case("train", ["train", "panda-reach", "--config", "{T}/missing.yaml"], "missing.yaml", "config not found"),
        Case("train", ["train", "panda-reach", "--config", "{T}/bad.yaml"], "bad.yaml", "config YAML syntax error"),
        Case("train", ["train", "panda-reach", "--config", "{T}/list.yaml"], "list.yaml",
             "config that is a YAML list, not a mapping"),
        Case("train", ["train", "panda-reach", "--config", "{T}/runs"], "runs", "config is a folder"),
        Case("train", ["train", "panda-reach", "--resume", "{T}/runs/nope"], "runs/nope", "resume a missing run"),
        Case("train", ["train", "panda-reach", "--resume", e], "runs/empty", "resume a run without checkpoints"),
        Case("train", ["train", "panda-reach", "--resume", r, "--checkpoint", "999"], "999",
             "resume a checkpoint that does not exist"),
        Case("train", ["train", "panda-reach", "--resume", c], "corrupt", "resume a corrupted checkpoint"),
        Case("train", ["train", "go2-flat", "--resume", r], "panda-reach", "resume a run of another task"),
        Case("train", ["train", "panda-reach", "--logger", "mlflow"], "mlflow", "unknown logger"),
        Case("train", ["train", "panda-reach", "--nproc", "0"], "--nproc", "zero processes"),
        Case("train", ["train", "panda-reach", "--video", "--video-interval", "0"], "--video-interval",
             "zero video interval"),
        Case("train", ["train", "panda-reach", "--runs-dir", "/proc/robolearn-runs", "--iterations", "1"],
             "/proc/robolearn-runs", "unwritable --runs-dir"),
        Case("train", ["train", "panda-reach", "--runs-dir", "{T}/afile", "--iterations", "1"], "afile",
             "--runs-dir is a file"),
        # distill
        Case("distill", ["distill"], "--teacher", "--teacher missing"),
        Case("distill", ["distill", "--teacher", "{T}/runs/nope"], "runs/nope", "missing teacher"),
        Case("distill", ["distill", "--teacher", e], "runs/empty", "teacher without checkpoints"),
        Case("distill", ["distill", "--teacher", r, "--student", "transformer"], "transformer",
             "unknown student kind"),
        Case("distill", ["distill", "--teacher", r, "--num-envs", "0", "--runs-dir", "{T}/druns"], "num_envs",
             "zero envs"),
        Case("distill", ["distill", "--teacher", r, "--config", "{T}/bad.yaml"], "bad.yaml",
             "distill config YAML syntax error"),
        # eval
        Case("eval", ["eval", "{T}/runs/nope"], "runs/nope", "missing run"),
        Case("eval", ["eval", e], "runs/empty", "run without checkpoints"),
        Case("eval", ["eval", r, "--checkpoint", "999"], "999", "--checkpoint that does not exist"),
        Case("eval", ["eval", c], "corrupt", "corrupted checkpoint"),
        Case("eval", ["eval", "{T}/afile"], "afile", "a text file as the run"),
        Case("eval", ["eval", r, "--backend", "isaac"], "isaac", "unknown backend"),
        Case("eval", ["eval", r, "--episodes", "0"], "--episodes", "zero episodes"),
        Case("eval", ["eval", r, "--episodes", "-3"], "--episodes", "negative episodes"),
        Case("eval", ["eval", r, "--num-envs", "0"], "--num-envs", "zero envs"),
        Case("eval", ["eval", r, "--randomization", "extreme"], "extreme", "unknown randomization set"),
        Case("eval", ["eval", r, "--task", "go2-flat"], "go2-flat", "run of another task"),
        Case("eval", ["eval", r, "--device", "cuda:7"], "cuda", "CUDA device on a machine without it"),
        Case("eval", ["eval", r, "--video", "/proc/robolearn/eval.mp4"], "/proc/robolearn", "unwritable --video"),
        # play
        Case("play", ["play", "{T}/runs/nope"], "runs/nope", "missing run"),
        Case("play", ["play", e], "runs/empty", "run without checkpoints"),
        Case("play", ["play", r, "--checkpoint", "999"], "999", "--checkpoint that does not exist"),
        Case("play", ["play", r, "--episodes", "0"], "--episodes", "zero episodes"),
        Case("play", ["play", r, "--episodes", "two"], "--episodes", "episodes not a number"),
        Case("play", ["play", r, "--backend", "bullet"], "bullet", "unknown backend"),
        Case("play", ["play", r, "--device", "tpu"], "tpu", "unknown device"),
        Case("play", ["play", r, "--output", "/proc/robolearn/play.mp4"], "/proc/robolearn", "unwritable --output"),
        # export
        Case("export", ["export", "{T}/runs/nope"], "runs/nope", "missing run"),
        Case("export", ["export", e], "runs/empty", "run without checkpoints"),
        Case("export", ["export", r, "--checkpoint", "999"], "999", "--checkpoint that does not exist"),
        Case("export", ["export", c], "corrupt", "corrupted checkpoint"),
        Case("export", ["export", r, "--output", "/proc/robolearn-bundle"], "/proc/robolearn-bundle",
             "unwritable --output"),
        Case("export", ["export", r, "--output", "{T}/afile"], "afile", "--output is a file"),
        # compare
        Case("compare", ["compare"], "runs", "no runs"),
        Case("compare", ["compare", r, "{T}/runs/nope"], "runs/nope", "one run missing"),
        Case("compare", ["compare", r, r, "--label", "a"], "--label", "fewer labels than runs"),
        Case("compare", ["compare", r, r, "--label", "a", "--label", "b", "--baseline", "c"], "--baseline",
             "unknown baseline label"),
        Case("compare", ["compare", r, "--output", "/proc/robolearn-cmp"], "/proc/robolearn-cmp",
             "unwritable --output"),
        Case("compare", ["compare", r, "--randomization", "extreme", "--output", "{T}/cmp"], "extreme",
             "unknown randomization set"),
        Case("compare", ["compare", r, "--episodes", "0", "--output", "{T}/cmp"], "--episodes", "zero episodes"),
        # deploy
        Case("deploy", ["deploy", "--policy", "go2-flat"], "--robot", "--robot missing"),
        Case("deploy", [*go2, "--duration", "-1"], "--duration", "negative duration"),
        Case("deploy", [*go2, "--duration", "soon"], "--duration", "duration not a number"),
        Case("deploy", [*go2, "--cmd", "0.5,0"], "--cmd", "--cmd with two numbers"),
        Case("deploy", [*go2, "--cmd", "fast"], "--cmd", "--cmd not numbers"),
        Case("deploy", [*go2, "--cmd", "0.5,0,nan"], "--cmd", "--cmd with a NaN"),
        Case("deploy", ["deploy", "--robot", "go3", "--policy", "go2-flat"], "go3", "unknown robot"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "{T}/nope"], "nope", "missing bundle"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "{T}/bad_bundle"], "deploy.yaml",
             "bundle with a corrupted deploy.yaml"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "{T}/bundle_no_onnx"], "policy.onnx",
             "bundle without policy.onnx"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "{T}/runs/r"], "runs/r",
             "a run folder instead of a bundle"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "{T}/bundle"], "bundle",
             "a panda (arm) bundle on the go2"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-flat", "--transport", "dds", "--interface",
                        "eth9"], "eth9", "network interface that does not exist"),
        Case("deploy", [*go2, "--interface", "eth0"], "--interface", "--interface with the sim transport"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-flat", "--transport", "can"], "can",
             "unknown transport"),
        Case("deploy", [*go2, "--set", "control_hz=fast"], "control_hz", "--set with a wrong type"),
        Case("deploy", [*go2, "--set", "safety.max_tilt=30"], "max_tilt", "--set of a misspelled field"),
        Case("deploy", [*go2, "--set", "control_hz=-500"], "control_hz", "--set out of range"),
        Case("deploy", ["deploy", "--robot", "{T}/bad_profile.yaml", "--policy", "go2-flat"], "bad_profile.yaml",
             "hardware profile YAML syntax error"),
        Case("deploy", [*go2, "--auto", "--duration", "1", "--report", "/proc/robolearn/report.json"],
             "/proc/robolearn", "unwritable --report"),
        # a path follower (go2-nav) and the plan publisher
        Case("deploy", [*go2, "--path-topic", "/plan"], "--path-topic", "--path-topic for a bundle without a path"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-nav", "--seed", "600"], "600",
             "a layout scenario beyond the library"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-nav", "--path-topic", "/plan", "--goal-topic",
                        "/goal"], "--goal-topic", "a path and a goal topic together"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-nav", "--transport", "dds", "--interface",
                        "lo"], "base_pose_topic", "a path follower on a robot without a base pose topic"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-nav", "--transport", "dds", "--interface", "lo",
                        "--set", "dds.base_pose_topic=/pose", "--goal-topic", "/goal"], "map_topic",
             "planning to goals on a robot without a map"),
        Case("deploy", ["deploy", "--robot", "go2", "--policy", "go2-nav-crouch", "--transport", "dds", "--interface",
                        "lo", "--set", "dds.base_pose_topic=/pose", "--set", "dds.map_topic=/map"], "clearance_topic",
             "a crouching follower on a robot without a clearance topic"),
        Case("train", ["train", "go2-nav-crouch", "--init", "/nonexistent/run"], "/nonexistent/run",
             "--init from a run that does not exist"),
        Case("train", ["train", "go2-nav-crouch", "--init", "policies/bundles/go2-nav", "--resume",
                       "policies/bundles/go2-nav"], "--init", "--init together with --resume"),
        Case("plan", ["plan", "--task", "go2-flat"], "go2-flat", "plan for a task without layouts"),
        Case("plan", ["plan", "--rate", "0"], "--rate", "plan at rate 0"),
        Case("plan", ["plan", "--interface", "nope0"], "nope0", "plan on a missing network interface"),
        # record
        Case("record", ["record"], "--expert", "no driver"),
        Case("record", ["record", "--expert", "--policy", r], "--policy", "two drivers"),
        Case("record", ["record", "--expert", "--task", "panda-pus", "--dataset", "{T}/rec"], "panda-pus",
             "unknown task (typo)"),
        Case("record", ["record", "--expert", "--task", "go2-flat", "--dataset", "{T}/rec"], "go2-flat",
             "a task without a recorder (legged)"),
        Case("record", ["record", "--expert", "--episodes", "0", "--dataset", "{T}/rec"], "--episodes",
             "zero episodes"),
        Case("record", ["record", "--policy", "{T}/runs/nope", "--dataset", "{T}/rec"], "runs/nope",
             "missing policy run"),
        Case("record", ["record", "--policy", r, "--task", "panda-push", "--dataset", "{T}/rec"], "panda-reach",
             "a policy of another task"),
        Case("record", ["record", "--expert", "--dataset", "/proc/robolearn-ds"], "/proc/robolearn-ds",
             "unwritable --dataset"),
        Case("record", ["record", "--expert", "--dataset", "{T}/afile"], "afile", "--dataset is a file"),
        Case("record", ["record", "--expert", "--dataset", "{T}/notds"], "notds", "a folder that is not a dataset"),
        Case("record", ["record", "--expert", "--dataset", "{T}/rec", "--set", "episode_length_s=long"],
             "episode_length_s", "--set with a wrong type"),
        Case("record", ["record", "--expert", "--dataset", "{T}/rec2", "--no-realtime", "--episodes", "1",
                        "--report", "/proc/robolearn/rec.json"], "/proc/robolearn", "unwritable --report"),
        # dataset
        Case("dataset", ["dataset", "info", "{T}/nope"], "nope", "missing dataset"),
        Case("dataset", ["dataset", "info", "{T}/notds"], "notds", "a folder that is not a dataset"),
        Case("dataset", ["dataset", "info", "{T}/ds_bad_parquet"], "file-000.parquet", "damaged data parquet"),
        Case("dataset", ["dataset", "info", "{T}/ds_bad_info"], "info.json", "damaged meta/info.json"),
        Case("dataset", ["dataset", "validate", "{T}/nope"], "nope", "missing dataset"),
        Case("dataset", ["dataset", "validate", "{T}/notds"], "notds", "a folder that is not a dataset"),
        Case("dataset", ["dataset", "validate", "{T}/ds_bad_parquet"], "file-000.parquet", "damaged data parquet"),
        Case("dataset", ["dataset", "validate", "{T}/ds_bad_info"], "info.json", "damaged meta/info.json"),
        Case("dataset", ["dataset", "replay", "{T}/nope"], "nope", "missing dataset"),
        Case("dataset", ["dataset", "replay", "{T}/ds", "--episode", "5", "--no-video"], "5",
             "episode that does not exist"),
        Case("dataset", ["dataset", "replay", "{T}/ds", "--episode", "-1", "--no-video"], "-1", "negative episode"),
        Case("dataset", ["dataset", "replay", "{T}/ds_bad_parquet", "--no-video"], "file-000.parquet",
             "damaged data parquet"),
        Case("dataset", ["dataset", "replay", "{T}/ds", "--video", "/proc/robolearn/replay.mp4"], "/proc/robolearn",
             "unwritable --video"),
        Case("dataset", ["dataset", "inspect", "{T}/ds"], "inspect", "unknown subcommand"),
        # teleop
        Case("teleop", ["teleop", "--device", "joystick", "--dataset", "{T}/tds"], "joystick", "unknown device"),
        Case("teleop", ["teleop"], "--dataset", "panda-sim without --dataset"),
        Case("teleop", ["teleop", "--robot", "ur5"], "ur5", "unknown robot"),
        Case("teleop", ["teleop", "--robot", "go2"], "go2", "a legged robot"),
        Case("teleop", ["teleop", "--device", "gamepad", "--device-path", "/dev/input/js9", "--dataset", "{T}/tds"],
             "/dev/input/js9", "device node that does not exist"),
        Case("teleop", ["teleop", "--device", "leader", "--dataset", "{T}/tds"], "--leader", "leader without --leader"),
        Case("teleop", ["teleop", "--robot", "panda", "--transport", "ros2"], "--transport", "unsupported transport"),
        Case("teleop", ["teleop", "--task", "go2-flat", "--dataset", "{T}/tds"], "go2-flat", "a legged task"),
        Case("teleop", ["teleop", "--dataset", "{T}/tds", "--policy", "{T}/runs/nope"], "runs/nope",
             "missing policy run"),
        Case("teleop", ["teleop", "--robot", "panda", "--max-speed", "-1", "--duration", "1"], "--max-speed",
             "negative speed"),
        # bench
        Case("bench", ["bench", "--task", "go3-flat"], "go3-flat", "unknown task"),
        Case("bench", ["bench", "--backend", "isaac"], "isaac", "unknown backend"),
        Case("bench", ["bench", "--num-envs", "0"], "--num-envs", "zero envs"),
        Case("bench", ["bench", "--num-envs", "-4"], "--num-envs", "negative envs"),
        Case("bench", ["bench", "--steps", "0", "--num-envs", "4"], "--steps", "zero steps"),
        Case("bench", ["bench", "--max-seconds", "-1", "--num-envs", "4"], "--max-seconds", "negative budget"),
        Case("bench", ["bench", "--device", "tpu", "--num-envs", "4"], "tpu", "unknown device"),
        Case("bench", ["bench", "--output", "/proc/robolearn-bench", "--num-envs", "4"], "/proc/robolearn-bench",
             "unwritable --output"),
        Case("bench", ["bench", "--output", "{T}/afile", "--num-envs", "4"], "afile", "--output is a file"),
    ]
    return out


def cli(args: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def build_fixtures(folder: Path, console: Console) -> None:
    """Everything the inputs point at; built once (a folder that holds `.complete` is reused)."""
    if (folder / ".complete").is_file():
        console.print(f"fixtures: reusing {folder}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps = [
        ["train", "panda-reach", "--iterations", "1", "--num-envs", "8", "--set", "eval.num_envs=2", "--no-progress",
         "--runs-dir", str(folder / "runs"), "--name", "r"],
        ["export", str(folder / "runs" / "r"), "--output", str(folder / "bundle")],
        ["record", "--task", "panda-push", "--expert", "--episodes", "1", "--no-realtime", "--dataset",
         str(folder / "ds")],
    ]
    for args in steps:
        out = cli(args, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"fixture step failed: robolearn {' '.join(args)}\n{out.stderr}")
    runs = folder / "runs"
    (runs / "empty").mkdir(exist_ok=True)
    shutil.copy(runs / "r" / "config.yaml", runs / "empty" / "config.yaml")  # a run that never saved a checkpoint
    (runs / "corrupt" / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(runs / "r" / "config.yaml", runs / "corrupt" / "config.yaml")
    (runs / "corrupt" / "checkpoints" / "model.pt").write_bytes(b"PK\x03\x04 not a torch checkpoint" * 8)
    for name in ("bad_bundle", "bundle_no_onnx"):
        shutil.copytree(folder / "bundle", folder / name, dirs_exist_ok=True)
    manifest = folder / "bad_bundle" / "deploy.yaml"
    text = manifest.read_text().splitlines()
    manifest.write_text("\n".join(text[:10] + ["  inputs: [{name: obs, shape: [-1, 30]"] + text[10:]) + "\n")
    (folder / "bundle_no_onnx" / "policy.onnx").unlink()
    for name in ("ds_bad_parquet", "ds_bad_info"):
        shutil.copytree(folder / "ds", folder / name, dirs_exist_ok=True)
    data = folder / "ds_bad_parquet" / "data" / "chunk-000" / "file-000.parquet"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # cut in half: a copy that stopped
    info = folder / "ds_bad_info" / "meta" / "info.json"
    info.write_text(info.read_text()[:-40])  # truncated JSON
    (folder / "notds").mkdir(exist_ok=True)
    (folder / "notds" / "notes.txt").write_text("my robot videos\n")
    (folder / "afile").write_text("just a file\n")
    (folder / "bad.yaml").write_text("task: panda-reach\nppo:\n  learning_rate: [1e-3\n  gamma: 0.99\n")
    (folder / "list.yaml").write_text("- task: panda-reach\n- num_envs: 8\n")
    profile = (ROOT / "hardware" / "go2.yaml").read_text()
    (folder / "bad_profile.yaml").write_text(profile.replace("control_hz: 500", "control_hz: 500\n  - oops: [1,"))
    (folder / ".complete").write_text("")
    console.print(f"fixtures: built {folder} in {time.monotonic() - t0:.0f} s")


def judge(case: Case, code: int | None, stderr: str, timed_out: bool) -> dict:
    harmless = [re.compile(p) for p, _ in HARMLESS]
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not any(h.fullmatch(ln) for h in harmless)]
    first = lines[0] if lines else ""
    problems = []
    if timed_out:
        problems.append("timed out")
    elif code == 0:
        problems.append("exit 0")
    elif code != case.code:
        problems.append(f"exit {code}, expected {case.code}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if not first.startswith("error:"):
        problems.append("no 'error:' line" if not any(ln.startswith("error:") for ln in lines) else
                        "'error:' not first")
    elif case.names not in first:
        problems.append(f"does not name {case.names!r}")
    return {"exit_code": code, "stderr_lines": len(lines), "traceback": "Traceback" in stderr, "first_line": first,
            "passed": not problems, "problems": problems}


def machine() -> dict:
    import platform

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0]}


def write_results(results: list[dict], out_dir: Path, meta: dict) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bad_inputs_{meta['started']}"
    passed = sum(r["passed"] for r in results)
    data = {**meta, "passed": passed, "total": len(results), "harmless_stderr_lines": HARMLESS, "inputs": results}
    paths = []
    for suffix, text in ((".json", json.dumps(data, indent=2)), (".md", markdown(results, meta, passed))):
        path = stem.with_suffix(suffix)
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        paths.append(path)
    return paths


def markdown(results: list[dict], meta: dict, passed: int) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# Bad-input tour {meta['started']}", "",
             f"**{passed} of {len(results)} inputs give a clean one-line error** (non-zero exit with the expected "
             "code, one stderr line starting with `error:` that names the option/field/file, no traceback).", "",
             f"Command: `{meta['command']}`; fixtures in a temporary folder (`{{T}}` below); "
             f"{meta['wall_s']:.0f} s on {meta['machine']['cpus']} CPUs.", "",
             "| # | command | mistake | exit | stderr lines | traceback | first stderr line | result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(results, 1):
        verdict = "pass" if r["passed"] else "FAIL: " + "; ".join(r["problems"])
        lines.append(f"| {i} | `{cell(r['command'])}` | {cell(r['what'])} | {r['exit_code']} | {r['stderr_lines']} | "
                     f"{'yes' if r['traceback'] else 'no'} | {cell(r['first_line'][:160])} | {cell(verdict)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run the inputs whose command line contains this")
    parser.add_argument("--fixtures", type=Path, help="fixtures folder to build once and reuse (default: a temporary "
                                                      "folder, removed at the end)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per input (default 120)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--no-write", action="store_true", help="do not write the result files")
    opts = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)
    started = datetime.datetime.now()
    tmp = None
    if opts.fixtures is None:
        tmp = tempfile.TemporaryDirectory(prefix="robolearn-bad-inputs-")
        fixtures = Path(tmp.name)
    else:
        fixtures = opts.fixtures.absolute()
    work = Path(tempfile.mkdtemp(prefix="robolearn-bad-inputs-cwd-"))
    try:
        build_fixtures(fixtures, console)
        selected = [c for c in cases() if not opts.only or any(o in " ".join(c.args) for o in opts.only)]
        results = []
        t0 = time.monotonic()
        for i, case in enumerate(selected, 1):
            args = [a.replace("{T}", str(fixtures)) for a in case.args]
            # Inputs that would write into the repository (default runs/, datasets/, benchmarks/results) run from
            # a scratch folder; paths in them are absolute.
            shown = " ".join(["robolearn", *case.args])
            start = time.monotonic()
            try:
                out = cli(args, opts.timeout, cwd=work)
                code, stderr, timed_out = out.returncode, out.stderr, False
            except subprocess.TimeoutExpired as exc:
                err = exc.stderr or b""
                code, stderr, timed_out = None, err.decode() if isinstance(err, bytes) else err, True
            verdict = judge(case, code, stderr, timed_out)
            results.append({"command": shown, "group": case.group, "what": case.what, "names": case.names,
                            "expected_exit_code": case.code, **verdict, "seconds": round(time.monotonic() - start, 2),
                            "stderr": stderr[-4000:]})
            mark = "[green]pass[/]" if verdict["passed"] else "[red]FAIL[/] " + escape("; ".join(verdict["problems"]))
            console.print(f"{i:3d}/{len(selected)} {mark} {escape(shown)}", highlight=False, soft_wrap=True)
        wall = time.monotonic() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()
    table = Table(title="bad-input tour")
    for col in ("#", "command", "exit", "lines", "tb", "first stderr line", "result"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(results, 1):
        table.add_row(str(i), escape(r["command"].replace(str(fixtures), "{T}")), str(r["exit_code"]),
                      str(r["stderr_lines"]), "yes" if r["traceback"] else "", escape(r["first_line"][:140]),
                      "[green]pass[/]" if r["passed"] else "[red]" + escape("; ".join(r["problems"])) + "[/]")
    console.print(table)
    passed = sum(r["passed"] for r in results)
    console.print(f"[bold]{passed} of {len(results)} inputs give a clean one-line error[/]")
    if not opts.no_write:
        for r in results:
            r["first_line"] = r["first_line"].replace(str(fixtures), "{T}")
            r["stderr"] = r["stderr"].replace(str(fixtures), "{T}")
        meta = {"started": f"{started:%Y%m%d-%H%M%S}", "command": " ".join(["python", *sys.argv]), "wall_s": wall,
                "env": ENV, "timeout_s": opts.timeout, "machine": machine()}
        paths = write_results(results, opts.output, meta)
        console.print(f"wrote {', '.join(map(str, paths))}", highlight=False, soft_wrap=True)
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
