"""Recording demonstrations end to end through the CLI, in subprocesses: the scripted expert records episodes into a
LeRobot v3 dataset (+ rosbag2) that reads back, validates, decodes and replays exactly; SIGKILL mid-recording loses
at most the episode being recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.data import DatasetReader, validate_dataset
from robolearn.sim.render import CameraRig
from robolearn.sim.tasks import make_task
from robolearn.teleop.replay import replay_episode

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rec") / "push"
    report = root.parent / "report.json"
    out = cli("record", "--task", "panda-push", "--expert", "--episodes", "3", "--no-realtime", "--dataset",
              str(root), "--rosbag", "--report", str(report), "--seed", "3")
    assert out.returncode == 0, out.stderr
    return root, json.loads(report.read_text())


def test_expert_episodes_read_back_with_matching_lengths_and_videos(recorded):
    root, report = recorded
    assert report["episodes_saved"] == 3 and report["successes"] == 3 and report["episodes_discarded"] == 0
    reader = DatasetReader(root)
    assert reader.num_episodes == 3 and reader.fps == 30
    assert reader.num_frames == sum(e["frames"] for e in report["episodes"]) == report["frames"]
    for i, episode in enumerate(report["episodes"]):
        data = reader.episode(i)
        n = episode["frames"]
        assert len(data["action"]) == n and data["action"].shape == (n, 4)
        assert data["observation.state"].shape == (n, 9) and data["observation.environment_state"].shape == (n, 10)
        assert data["frame_index"].tolist() == list(range(n))
        assert data["next.done"][-1].all() and not data["next.done"][:-1].any()
        assert data["next.success"][-1].all(), "the expert's episodes end after success"
        # and go on 2 s (60 frames at 30 fps) once it holds, so the demos show the robot stopping at the goal
        assert data["next.success"][-60:].all() and not data["next.success"][-61].any()
        assert not data["intervention"].any()
        frames = reader.video_frames(i, "observation.images.front")
        assert frames.shape == (n, 240, 320, 3) and frames.dtype == np.uint8
    assert validate_dataset(root) == []
    assert sorted(p.name for p in (root / "rosbag").iterdir()) == [f"episode_{i:06d}" for i in range(3)]


def test_video_frames_are_the_camera_images_of_the_recorded_states(recorded):
    """Decoded frame t matches a fresh render of the state stored at frame t (lossy codec: a few levels)."""
    root, _ = recorded
    reader = DatasetReader(root)
    data = reader.episode(1)
    frames = reader.video_frames(1, "observation.images.front")
    task = make_task("panda-push", 1)
    rig = CameraRig(task)
    task.restart(*task.scene_from_frame({k: v[0] for k, v in data.items()}))
    errors = []
    for t in range(0, len(frames), 20):
        # put the recorded joints and block into the scene and render
        q = torch.tensor(data["observation.state"][t])
        pose = torch.tensor(data["observation.environment_state"][t][:7])
        task.restart(q.unsqueeze(0), pose.unsqueeze(0), torch.tensor(data["observation.environment_state"][t][7:])
                     .unsqueeze(0))
        rendered = rig.frames(task, 0)["front"].astype(float)
        errors.append(np.abs(rendered - frames[t].astype(float)).mean())
    rig.close()
    task.close()
    assert max(errors) < 6.0, errors


def test_replay_reproduces_the_recorded_states_and_success(recorded, tmp_path):
    root, _ = recorded
    result = replay_episode(root, 2, video=tmp_path / "replay.mp4")
    assert result.max_state_error < 1e-5 and result.final_object_error < 1e-5
    assert result.recorded_success and result.replayed_success
    assert (tmp_path / "replay.mp4").stat().st_size > 10_000


def test_dataset_cli_info_validate_replay(recorded, tmp_path):
    root, _ = recorded
    info = cli("dataset", "info", str(root))
    assert info.returncode == 0 and "3 episodes" in info.stdout and "observation.images.front" in info.stdout
    ok = cli("dataset", "validate", str(root))
    assert ok.returncode == 0 and "valid LeRobot v3.0 dataset" in ok.stdout
    replay = cli("dataset", "replay", str(root), "--episode", "0", "--video", str(tmp_path / "r.mp4"))
    assert replay.returncode == 0 and "replayed" in replay.stdout, replay.stderr
    missing = cli("dataset", "replay", str(root), "--episode", "7", "--no-video")
    assert missing.returncode == 2 and "episode 7 does not exist" in missing.stderr
    foreign = cli("dataset", "validate", str(tmp_path))
    assert foreign.returncode == 2 and "Traceback" not in foreign.stderr and "meta/info.json" in foreign.stderr


def test_sigkill_mid_recording_loses_at_most_the_current_episode(tmp_path):
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "record", "--task", "panda-push", "--expert",
                             "--episodes", "50", "--no-realtime", "--dataset", str(root), "--seed", "1"], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    info = root / "meta" / "info.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if info.is_file() and json.loads(info.read_text() or "{}").get("total_episodes", 0) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail("two episodes were not committed in time")
        time.sleep(0.2)  # in the middle of the third episode (unpaced: 0.4-1 s per episode)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader = DatasetReader(root)
    kept = reader.num_episodes
    assert kept in (2, 3), kept  # the killed episode (the third, or a fourth just begun) is not kept
    assert validate_dataset(root) == []
    before = [reader.episode(i)["action"].copy() for i in range(kept)]
    # A new session appends after the committed episodes; the earlier ones are untouched.
    out = cli("record", "--task", "panda-push", "--expert", "--episodes", "1", "--no-realtime", "--dataset",
              str(root), "--seed", "2")
    assert out.returncode == 0, out.stderr
    reader = DatasetReader(root)
    assert reader.num_episodes == kept + 1 and validate_dataset(root) == []
    for i in range(kept):
        assert np.array_equal(reader.episode(i)["action"], before[i])


def run_in_terminal(args: list[str], keys: list[tuple[float, str]], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with a real pseudo-terminal as its stdin/stdout and type `keys` ((delay s, text), ...)."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=ROOT, env={**ENV, "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    output = bytearray()

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    output.extend(os.read(master, 65536))
                except OSError:
                    return

    try:
        drain(0.0)
        deadline = time.monotonic() + 60
        while b"keys:" not in output and time.monotonic() < deadline and proc.poll() is None:
            drain(0.2)  # wait until the recorder is up and printed its keys
        for delay, text in keys:
            drain(delay)
            os.write(master, text.encode())
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            drain(0.2)
        drain(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.wait(), output.decode(errors="replace")


def hold(key: str, seconds: float) -> list[tuple[float, str]]:
    """A held key as a terminal sends it: auto-repeat every 50 ms."""
    return [(0.05, key)] * int(seconds / 0.05)


def test_keyboard_teleop_in_a_terminal_saves_and_discards_episodes(tmp_path):
    root, report = tmp_path / "kb", tmp_path / "kb.json"
    keys = [*hold("w", 0.5), (0.4, "\x7f"),  # drive +x, let the key's 0.2 s hold run out, discard (Backspace)
            *hold("a", 0.6), (0.1, " "), (0.3, "\r")]  # drive +y, close the gripper, save (Enter)
    code, out = run_in_terminal(["teleop", "--robot", "panda-sim", "--device", "keyboard", "--task", "panda-push",
                                 "--episodes", "1", "--dataset", str(root), "--report", str(report)], keys)
    assert code == 0, out
    result = json.loads(report.read_text())
    assert result["episodes_saved"] == 1 and result["episodes_discarded"] == 1
    data = DatasetReader(root).episode(0)
    action = data["action"]
    assert (action[:, 1] > 0.5).sum() >= 5, "the held 'a' key drove +y"
    assert not (action[:, 0] > 0.5).any(), "the +x driving went with the discarded episode"
    assert action[-1, 3] == 1.0 and action[0, 3] == -1.0, "space closed the gripper during the episode"
    assert data["next.done"][-1] and validate_dataset(root) == []


def test_intervention_flags_the_frames_a_person_drove(tmp_path):
    root, report = tmp_path / "hil", tmp_path / "hil.json"
    keys = [(1.0, ""), *hold("r", 0.5)]  # the expert drives for a second, then the person pulls the gripper up
    code, out = run_in_terminal(["teleop", "--robot", "panda-sim", "--device", "keyboard", "--task", "panda-push",
                                 "--policy", "expert", "--episodes", "1", "--dataset", str(root), "--report",
                                 str(report)], keys)
    assert code == 0, out
    result = json.loads(report.read_text())
    data = DatasetReader(root).episode(0)
    human = data["intervention"].astype(bool)
    assert 5 <= human.sum() < len(human) // 2 and result["interventions"] == human.sum()
    assert (data["action"][human, 2] > 0.5).all(), "intervention frames carry the person's +z"
    np.testing.assert_array_equal(data["action"][~human], data["policy_action"][~human])
    assert not np.allclose(data["action"][human], data["policy_action"][human])
    assert data["next.success"][-1], "the expert finishes the push after the person lets go"


def test_leader_arm_drives_the_follower_joint_by_joint(tmp_path):
    from robolearn.teleop.devices import make_device
    from robolearn.teleop.recorder import Recorder, TeleopDriver, leader_options
    from robolearn.twin.sim_robot import SimRobot

    pose = {"panda_joint1": 0.3, "panda_joint2": -0.1, "panda_joint3": 0.1, "panda_joint4": -2.0,
            "panda_joint5": 0.1, "panda_joint6": 1.9, "panda_joint7": 0.6, "panda_finger_joint[12]": 0.0}
    leader = SimRobot("panda_gripper", 0.002, start_pose=pose, lockstep=False)

    def factory(task):
        return TeleopDriver(make_device("leader", leader=leader, **leader_options(task, leader.joint_names)))

    rec = Recorder("panda-push", tmp_path / "lf", factory, overrides={"action_space": "joint",
                                                                       "episode_length_s": 2.0}, realtime=False)
    try:
        result = rec.run(1)
    finally:
        rec.close()
    assert result.episodes_saved == 1
    data = DatasetReader(tmp_path / "lf").episode(0)
    target = np.array([0.3, -0.1, 0.1, -2.0, 0.1, 1.9, 0.6])
    assert data["action"].shape[1] == 8 and np.allclose(data["action"][:, :7], target, atol=1e-3)
    assert np.abs(data["observation.state"][-1, :7] - target).max() < 0.02, "the follower reached the leader"
    assert (data["action"][:, 7] == 1.0).all(), "leader fingers closed -> grip closed"


def test_hold_after_success_sets_how_long_an_episode_goes_on_after_success(tmp_path):
    """`record --hold-after-success S` ends each episode S seconds after the task's success began (and held); a
    negative value is a one-line error before anything is written."""
    root = tmp_path / "short"
    out = cli("record", "--task", "panda-push", "--expert", "--episodes", "1", "--no-realtime", "--dataset",
              str(root), "--hold-after-success", "0.5", "--seed", "3")
    assert out.returncode == 0, out.stderr
    success = DatasetReader(root).episode(0)["next.success"]
    assert success[-15:].all() and not success[-16].any()
    out = cli("record", "--task", "panda-push", "--expert", "--episodes", "1", "--no-realtime", "--dataset",
              str(tmp_path / "bad"), "--hold-after-success", "-1")
    assert out.returncode == 2 and "--hold-after-success: seconds >= 0 expected" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "bad").exists()
    from robolearn.cli.teleop import HOLD_HELP
    from robolearn.teleop.recorder import HOLD_AFTER_SUCCESS_S

    assert f"(default {HOLD_AFTER_SUCCESS_S:g};" in HOLD_HELP  # the help states the recorder's own default


def test_end_effector_targets_are_not_recorded(tmp_path):
    """Devices and experts give motions; a task in action_space ee_target would read them as positions. The
    recorder refuses it before writing anything, and says how a policy learns targets instead."""
    from robolearn.errors import ConfigError
    from robolearn.teleop.recorder import ExpertDriver, Recorder

    with pytest.raises(ConfigError, match="ee_target is not recorded.*task_overrides"):
        Recorder("panda-push", tmp_path / "d", ExpertDriver, overrides={"action_space": "ee_target"})
    assert not (tmp_path / "d").exists()
