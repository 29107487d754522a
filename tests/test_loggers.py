"""Training loggers and videos: `robolearn train --video` writes mp4 clips (and TensorBoard GIFs) without changing
what training computes, a resume goes on with them; `--logger wandb` needs the extra (one-line error without it)
and, where wandb is installed, writes its scalars and clips (WANDB_MODE=offline)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from robolearn.errors import RobolearnError
from robolearn.learn.config import load_train_cfg
from robolearn.learn.loggers import TrainingVideo
from robolearn.learn.train import make_ppo_runner

ROOT = Path(__file__).resolve().parent.parent
TINY = {"num_envs": 16, "steps_per_env": 24, "save_interval": 1000, "max_time_s": 0.0, "eval": {"num_envs": 2}}
TINY_ARGS = ("--num-envs", "16", "--set", "eval.num_envs=2", "--set", "save_interval=1000", "--no-progress")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=full_env, timeout=600)


def _frames(mp4: Path) -> int:
    assert mp4.is_file() and mp4.stat().st_size > 0, mp4
    return len(iio.imread(mp4, index=None))


def _tb_videos(tb: Path) -> dict[int, int]:
    """{step: GIF frames} of the run's `video/rollout` images."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "video/rollout_path/text_summary" in acc.Tags()["tensors"]
    return {im.step: len(iio.imread(im.encoded_image_string, index=None, extension=".gif"))
            for im in acc.Images("video/rollout")}


def test_video_clips_leave_training_unchanged_and_resume_goes_on(tmp_path):
    cfg = load_train_cfg("panda-reach", overrides={**TINY, "max_iterations": 2})
    runners = []
    for name in ("video", "plain"):  # each built (which seeds torch) and trained in turn
        runner = make_ppo_runner(cfg, tmp_path / name)
        if name == "video":
            runner.video = TrainingVideo(cfg, interval=1, length=10)
        runner.evaluate_fn = None  # no closing evaluation: not what this test is about
        runner.learn(progress=False)
        runners.append(runner)
    with_video, plain = runners
    # Clips roll out their own 1-env task and leave the global RNG alone: training is the same, bit for bit.
    for key, value in plain.algorithm.policy.state_dict().items():
        assert torch.equal(value, with_video.algorithm.policy.state_dict()[key]), key
    videos = tmp_path / "video" / "videos"
    assert sorted(p.name for p in videos.iterdir()) == ["iter_1.mp4", "iter_2.mp4"]
    assert _frames(videos / "iter_1.mp4") == 5  # 10 steps at 50 Hz, kept at 25 fps
    steps = 16 * 24
    assert _tb_videos(tmp_path / "video" / "tb") == {steps: 5, 2 * steps: 5}
    assert not (tmp_path / "plain" / "videos").exists()

    # The CLI flags, on a resume of that run: the clips go on at the run's own iteration numbers.
    out = _cli("train", "panda-reach", "--resume", str(tmp_path / "video"), "--iterations", "1", "--video",
               "--video-interval", "1", "--video-length", "10", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in videos.iterdir()) == ["iter_1.mp4", "iter_2.mp4", "iter_3.mp4"]
    assert _frames(videos / "iter_3.mp4") > 1
    summary = json.loads((tmp_path / "video" / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["iterations_this_run"] == 1
    assert 3 * steps in _tb_videos(tmp_path / "video" / "tb")


def test_video_settings_are_checked_before_training():
    cfg = load_train_cfg("panda-reach", overrides={**TINY, "max_iterations": 1})
    with pytest.raises(RobolearnError, match="--video-length 1 is too short for one frame"):
        TrainingVideo(cfg, length=1)
    with pytest.raises(RobolearnError, match="must be >= 1"):
        TrainingVideo(cfg, interval=0)


def test_unknown_logger_and_missing_wandb_extra_are_refused_before_training(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from robolearn.cli import app

    def train(*args: str) -> BaseException | None:
        return CliRunner().invoke(app, ["train", "panda-reach", *args, *TINY_ARGS, "--runs-dir", str(tmp_path)]
                                  ).exception

    error = train("--logger", "mlflow")
    assert isinstance(error, RobolearnError)
    assert str(error) == "unknown logger 'mlflow'; valid loggers: tensorboard, wandb"
    # Where wandb is installed, hide it: importing a module that sys.modules maps to None raises ImportError.
    monkeypatch.setitem(sys.modules, "wandb", None)
    error = train("--logger", "wandb")
    assert isinstance(error, RobolearnError)
    assert str(error) == '--logger wandb needs Weights & Biases: pip install "robolearn[wandb]"'
    assert not any(tmp_path.iterdir()), "refused before any run folder or env"


def _wandb_records(run_file: Path) -> list:
    """The protobuf records of a W&B run file (run-<id>.wandb): a 7-byte header, then LevelDB-log records
    (crc32 4, length 2, type 1: full 1, first 2, middle 3, last 4) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk, records = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        body, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        chunk = body if kind in (1, 2) else chunk + body
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
    return records


def _wandb_history(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for run_file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in _wandb_records(run_file):
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return rows


def test_wandb_offline_run_has_the_scalars_and_clips_and_resumes_in_the_same_run(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "robolearn-test"}
    run = tmp_path / "w"
    out = _cli("train", "panda-reach", "--iterations", "2", *TINY_ARGS, "--logger", "wandb", "--video",
               "--video-interval", "2", "--video-length", "10", "--runs-dir", str(tmp_path), "--name", "w", env=env)
    assert out.returncode == 0, out.stderr
    run_id = (run / "wandb_run_id").read_text()
    history = _wandb_history(run)
    assert [int(row["_step"]) for row in history] == [384, 768]  # env steps, as TensorBoard's x axis
    for key in ("train/mean_return", "loss/surrogate", "ppo/learning_rate", "perf/steps_per_s"):
        assert all(key in row for row in history), key
    assert "video/rollout/path" not in history[0] and json.loads(history[1]["video/rollout/_type"]) == "video-file"
    assert list(run.glob("wandb/offline-run-*/files/media/videos/**/*.mp4"))
    assert list((run / "tb").glob("events.out.tfevents.*"))  # TensorBoard writes too

    out = _cli("train", "panda-reach", "--resume", str(run), "--iterations", "1", "--logger", "wandb",
               "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    assert (run / "wandb_run_id").read_text() == run_id
    assert all(p.name.endswith(run_id) for p in run.glob("wandb/offline-run-*"))
    assert [int(row["_step"]) for row in _wandb_history(run)] == [384, 768, 1152]
