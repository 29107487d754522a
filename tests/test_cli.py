"""The `robolearn` command as a user runs it: a real subprocess, real files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("train", "play", "list", "bench", "export", "deploy", "record", "teleop", "dataset"):
        assert command in out.stdout


def test_list_shows_tasks_robots_backends_one_line_each():
    out = run("list")
    assert out.returncode == 0, out.stderr
    sections: dict[str, list[str]] = {}
    current = ""
    for line in out.stdout.splitlines():
        if line.startswith("  "):
            sections[current].append(line.split()[0])
        else:
            current = line.strip()
            sections[current] = []
    assert sections["tasks"] == ["go2-flat", "go2-nav", "go2-nav-crouch", "go2-nav-skill", "go2-rough", "panda-lift",
                                 "panda-push", "panda-reach", "panda-wipe"]
    assert sections["robots"] == ["go2", "panda", "panda_gripper", "panda_wiper", "so100"]
    assert "mujoco" in sections["backends"]
    assert sections["hardware profiles"] == ["go2", "panda", "panda_gripper", "so100"]
    assert sections["shipped policy bundles"] == ["go2-flat", "go2-nav", "go2-nav-crouch", "go2-rough-rma"]


BAD_INPUTS = [
    (("train", "go3-flat"), "error: unknown task 'go3-flat'; valid tasks: go2-flat, go2-nav, go2-nav-crouch, "
                            "go2-nav-skill, go2-rough, panda-lift, panda-push, panda-reach"),
    (("train", "go2-flat", "--backend", "isaac"),
     "error: unknown backend 'isaac'; valid backends: mujoco, mjwarp, mjx, pybullet"),
    (("train", "go2-flat", "--set", "num_envs"), "error: --set expects key=value"),
    (("play", "runs/does-not-exist"), "error: checkpoint not found: runs/does-not-exist"),
    (("train", "go2-nav-crouch", "--init", "runs/does-not-exist"), "error: checkpoint not found: runs/does-not-exist"),
    (("train", "go2-nav-crouch", "--init", "runs/a", "--resume", "runs/b"),
     "error: --init starts a new run from another run's weights; --resume continues a run: give one of them"),
    # The bad-input tour (benchmarks/bad_inputs.py). Before: click's usage errors were a 5-line box
    (("trian", "panda-reach"), "error: No such command 'trian'. Did you mean 'train'? (see '"),
    (("train",), "error: Missing argument 'task'."),
    (("train", "panda-reach", "--num-envs", "many"), "error: Invalid value for '--num-envs': "),
    (("deploy", "--policy", "go2-flat"), "error: Missing option '--robot'."),
    (("dataset", "inspect", "runs"), "error: No such command 'inspect'."),
    # before: out-of-range values trained for minutes (gamma, eval.num_envs) or were a ZeroDivisionError
    (("train", "panda-reach", "--set", "ppo.gamma=1.5"), "error: ppo.gamma must be in [0, 1], got 1.5"),
    (("train", "panda-reach", "--set", "ppo.minibatches=0"), "error: ppo.minibatches must be >= 1, got 0"),
    (("train", "panda-reach", "--set", "eval.num_envs=-2"), "error: eval.num_envs must be >= 1, got -2"),
    (("train", "panda-reach", "--num-envs", "0"), "error: num_envs must be >= 1, got 0"),
    (("train", "panda-reach", "--algo", "sac"), "error: algorithm must be one of ppo, ppo-lag, got 'sac'"),
    (("train", "panda-reach", "--algo", "ppo-lag", "--set", "lagrangian.cost_limit=-1"),
     "error: lagrangian.cost_limit must be >= 0, got -1"),
    # before: an unwritable output path was a traceback (exit 1), some only after the work was done
    (("train", "panda-reach", "--runs-dir", "/proc/robolearn-runs"),
     "error: --runs-dir /proc/robolearn-runs: cannot write there (/proc/robolearn-runs: No such file"),
    (("record", "--expert", "--dataset", "/proc/robolearn-ds"), "error: --dataset /proc/robolearn-ds: cannot "
                                                                "write there"),
    (("record", "--expert", "--report", "/proc/robolearn/r.json"), "error: --report folder /proc/robolearn: "
                                                                   "cannot write there"),
    (("dataset", "replay", "runs/does-not-exist", "--video", "/proc/robolearn/r.mp4"),
     "error: --video folder /proc/robolearn: cannot write there"),
    (("bench", "--output", "/proc/robolearn-bench"), "error: --output /proc/robolearn-bench: cannot write there"),
    # before: play --episodes 0 was an IndexError traceback; bench --device tpu ran (exit 0)
    (("play", "runs/does-not-exist", "--episodes", "0"), "error: --episodes must be >= 1, got 0"),
    (("bench", "--device", "tpu", "--num-envs", "4"), "error: --device must be auto, cpu, cuda or cuda:N, got "
                                                      "'tpu'"),
    # before: `validate` printed `invalid:` lines, unlike every other command
    (("dataset", "validate", "runs/does-not-exist"), "error: runs/does-not-exist: no such folder"),
    # before: both opened the keyboard first (not a tty here: an error about the keyboard, not the input)
    (("teleop", "--robot", "go2"), f"error: {ROOT / 'hardware' / 'go2.yaml'}: teleop drives arms; go2 is a "
                                   "legged robot"),
    (("teleop", "--robot", "panda", "--max-speed", "-1"), "error: --max-speed: expected an end-effector speed "
                                                          "in m/s > 0, got -1"),
    # real cameras: a malformed source, a camera on the simulated scene, a device that does not exist
    (("teleop", "--robot", "panda", "--camera", "usb:0"), "error: --camera 'usb:0': expected opencv:<index, "
                                                          "device path or video file>"),
    (("teleop", "--robot", "panda-sim", "--camera", "opencv:0", "--dataset", "/tmp/x"),
     "error: --camera records a real camera beside a real arm (--robot panda|so100); panda-sim renders its own"),
    (("teleop", "--robot", "panda", "--camera", "opencv:/dev/video97", "--dataset", "/tmp/robolearn-cam"),
     "error: --camera opencv:/dev/video97: cannot open (no such device, or it is busy)"),
    (("finetune", "runs/does-not-exist", "--method", "rl"), "error: --method must be dsrl, got 'rl'"),
    (("finetune", "runs/does-not-exist"), "error: checkpoint not found: runs/does-not-exist"),
]


@pytest.fixture(scope="module")
def bad_input_results() -> dict:
    """Every bad command line of BAD_INPUTS through `robolearn.cli.main()` in one real subprocess (tests/cli_batch.py:
    exit codes and stderr as a user sees them, one Python start instead of 25)."""
    from cli_batch import run_cli_batch

    return dict(zip((args for args, _ in BAD_INPUTS), run_cli_batch([args for args, _ in BAD_INPUTS]), strict=True))


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_gives_one_line_errors(bad_input_results, args, message):
    out = bad_input_results[args]
    assert out.returncode == 2
    assert out.stderr.strip() == out.stderr.strip().splitlines()[0], "one line, no traceback"
    assert out.stderr.strip().startswith(message), out.stderr


def test_malformed_config_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: panda-reach\nppo:\n  learning_rate: [1e-3\n")
    out = run("train", "panda-reach", "--config", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}: malformed YAML at line" in out.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("task: panda-reach\nppo: {learning_rat: 0.1}\n")
    out = run("train", "panda-reach", "--config", str(unknown))
    assert out.returncode == 2 and "unknown field 'learning_rat' for PPOCfg" in out.stderr


def test_unknown_robot_in_a_task_override():
    out = run("train", "panda-reach", "--set", "task_overrides.robot=ur5")
    assert out.returncode == 2
    assert "error: unknown robot 'ur5'; valid robots: go2, panda, panda_gripper, panda_wiper, so100" in out.stderr


def test_train_then_play_writes_run_folder_and_video(tmp_path):
    out = run("train", "panda-reach", "--num-envs", "32", "--iterations", "2", "--max-time", "0", "--name", "smoke",
              "--runs-dir", str(tmp_path), "--set", "eval.num_envs=4", "--no-progress")
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "smoke"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["env_steps"] == 2 * 32 * 24
    assert {"wall_time_s", "steps_per_s", "final_mean_reward", "eval"} <= set(summary)
    assert (run_dir / "checkpoints" / "model.pt").is_file() and (run_dir / "checkpoints" / "model_2.pt").is_file()
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "tb").iterdir())

    out = run("play", str(run_dir), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    assert "panda-reach: 2 episodes" in out.stdout and "success" in out.stdout
    video = run_dir / "videos" / "play.mp4"
    import imageio.v2 as imageio

    frames = [f for f in imageio.get_reader(video)]
    assert len(frames) == 75  # 3 s episode at 25 fps
    assert frames[0].shape == (360, 480, 3) and frames[10].std() > 5  # not a blank image

    # Another task's checkpoint, and the same --name again (it would overwrite the run's checkpoints): refused, the
    # files untouched. Both in one subprocess (tests/cli_batch.py).
    from cli_batch import run_cli_batch

    before = (run_dir / "checkpoints" / "model.pt").stat().st_mtime_ns
    wrong_task, out = run_cli_batch([("play", str(run_dir), "--task", "go2-flat", "--no-video"),
                                     ("train", "panda-reach", "--iterations", "1", "--name", "smoke", "--runs-dir",
                                      str(tmp_path))])
    assert wrong_task.returncode == 2 and "trained on task 'panda-reach', not 'go2-flat'" in wrong_task.stderr
    assert out.returncode == 2
    assert f"run folder {run_dir} already holds a run" in out.stderr and "--resume" in out.stderr
    assert (run_dir / "checkpoints" / "model.pt").stat().st_mtime_ns == before
    # Continuing that run in its own folder (no --name needed) is what --resume is for: a fresh budget of 3.
    out = run("train", "panda-reach", "--iterations", "3", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"resuming {run_dir / 'checkpoints' / 'model.pt'} at iteration 2" in out.stdout
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["iterations"] == 5 and resumed["iterations_this_run"] == 3
    assert resumed["num_envs"] == 32  # the run's own config (from its checkpoint), not the task's default
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]  # no second run folder


def test_version_and_short_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("robolearn ")
    out = run("train", "-h")
    assert out.returncode == 0 and "--resume" in out.stdout


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    """SIGINT in training: the iteration finishes, checkpoints and summary.json (interrupted) are written, exit 130
    with the resume command; --resume then continues from that iteration."""
    import signal
    import time

    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "robolearn.cli", "train", "panda-reach", "--num-envs", "32", "--iterations",
           "100000", "--max-time", "0", "--runs-dir", str(tmp_path), "--name", "stopped", "--log-interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        for line in proc.stdout:  # wait until training runs
            if "panda-reach it 2 " in line:
                break
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - start < 60  # finished the iteration, saved, no closing evaluation
    run_dir = tmp_path / "stopped"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stopped_by"] == "signal" and "eval" not in summary
    it = summary["iterations"]
    assert it >= 2 and (run_dir / "checkpoints" / f"model_{it}.pt").is_file()
    assert f"interrupted at iteration {it}" in out and f"--resume {run_dir}" in out
    out = run("train", "panda-reach", "--resume", str(run_dir), "--iterations", "1", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == it + 1


def test_bench_prints_env_and_raw_rates(tmp_path):
    out = run("bench", "--task", "panda-reach", "--num-envs", "16", "--steps", "5", "--output", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "raw physics steps/s" in out.stdout and "env / raw" in out.stdout
