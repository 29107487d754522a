"""A dataset that mixes robolearn tasks (issue 20): each episode keeps its own task (LeRobot's per-episode task, a
short instruction; meta/robolearn.json's sessions for the scene), replays in its own task, and `validate` catches a
sidecar that contradicts the episodes. Real MuJoCo, real files, the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from test_record import cli

from robolearn.data import DatasetReader, validate_dataset
from robolearn.data.sidecar import SIDECAR
from robolearn.errors import DatasetError
from robolearn.sim.tasks import task_description
from robolearn.teleop.recorder import ExpertDriver, Recorder
from robolearn.teleop.replay import replay_episode

PUSH, LIFT = "push the block to the goal", "pick up the block and lift it"


def record(task: str, root, episodes: int = 1, overrides: dict | None = None, seed: int = 0) -> None:
    rec = Recorder(task, root, ExpertDriver, seed=seed, overrides=overrides, realtime=False)
    try:
        assert rec.run(episodes).episodes_saved == episodes
    finally:
        rec.close()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One panda-push episode, then `robolearn record --task panda-lift` into the same dataset."""
    root = tmp_path_factory.mktemp("mixed") / "ds"
    record("panda-push", root, seed=1)
    out = cli("record", "--task", "panda-lift", "--expert", "--episodes", "1", "--no-realtime", "--dataset",
              str(root), "--seed", "2")
    assert out.returncode == 0, out.stderr
    assert "also holds episodes of panda-push" in out.stdout
    return root


def test_each_episode_keeps_its_task_as_a_short_lerobot_instruction(mixed):
    reader = DatasetReader(mixed)
    assert reader.tasks == [PUSH, LIFT], "short instructions, not the long task descriptions"
    assert reader.episode_meta(0)["tasks"] == [PUSH] and reader.episode_meta(1)["tasks"] == [LIFT]
    assert set(reader.episode(0)["task_index"]) == {0} and set(reader.episode(1)["task_index"]) == {1}
    meta = json.loads((mixed / SIDECAR).read_text())
    assert meta["format"] == 2 and "task" not in meta
    assert [(s["first_episode"], s["task"], s["instruction"]) for s in meta["sessions"]] == [
        (0, "panda-push", PUSH), (1, "panda-lift", LIFT)]
    assert [s["description"] for s in meta["sessions"]] == [task_description("panda-push"),
                                                            task_description("panda-lift")]
    assert validate_dataset(mixed) == []


def test_each_episode_replays_in_the_task_that_recorded_it(mixed):
    for episode, task in ((0, "panda-push"), (1, "panda-lift")):
        result = replay_episode(mixed, episode)
        assert result.task == task
        assert result.max_state_error < 1e-5 and result.final_object_error < 1e-5
        assert result.recorded_success and result.replayed_success, (task, result)
    out = cli("dataset", "info", str(mixed))
    assert out.returncode == 0 and "robolearn task" in out.stdout and "panda-lift" in out.stdout


def test_validate_and_replay_reject_a_sidecar_that_contradicts_the_episodes(mixed, tmp_path):
    # What older robolearn left: `record --task panda-lift` rewrote the sidecar to name one task for everything.
    legacy = tmp_path / "legacy"
    shutil.copytree(mixed, legacy)
    (legacy / SIDECAR).write_text(json.dumps({"task": "panda-lift", "task_overrides": {}, "fps": 30}))
    problems = validate_dataset(legacy)
    assert len(problems) == 1, problems
    assert "'panda-lift'" in problems[0] and repr(PUSH) in problems[0] and repr(LIFT) in problems[0]
    assert "episode 0" in problems[0] and "episode 1" in problems[0]
    with pytest.raises(DatasetError, match="2 different LeRobot tasks"):
        replay_episode(legacy, 0)
    with pytest.raises(DatasetError, match="refusing to append"):
        Recorder("panda-push", legacy, ExpertDriver, realtime=False)
    out = cli("dataset", "validate", str(legacy))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "robolearn.json" in out.stderr
    # A format-2 sidecar whose session says panda-push for episode 1, recorded as the lift.
    wrong = tmp_path / "wrong"
    shutil.copytree(mixed, wrong)
    meta = json.loads((wrong / SIDECAR).read_text())
    meta["sessions"] = meta["sessions"][:1]
    (wrong / SIDECAR).write_text(json.dumps(meta))
    problems = validate_dataset(wrong)
    assert len(problems) == 1 and "episode 1" in problems[0] and "'panda-push'" in problems[0] \
        and repr(LIFT) in problems[0], problems
    with pytest.raises(DatasetError, match=f"episode 1 .*{LIFT}"):
        replay_episode(wrong, 1)
    assert replay_episode(wrong, 0).task == "panda-push"
    meta["sessions"] = "panda-push"
    (wrong / SIDECAR).write_text(json.dumps(meta))
    assert validate_dataset(wrong) == [f"{wrong / SIDECAR}: sessions must be a non-empty list, got 'panda-push'"]


def test_an_older_single_task_sidecar_is_upgraded_and_empty_sessions_are_dropped(tmp_path):
    root = tmp_path / "old"
    short = {"episode_length_s": 0.5}  # 15 frames, ended by the time limit
    record("panda-push", root, overrides=short)
    (root / SIDECAR).write_text(json.dumps({"task": "panda-push", "task_overrides": short, "fps": 30}))
    assert validate_dataset(root) == [] and replay_episode(root, 0).task == "panda-push"
    # A panda-lift session that saves nothing (the operator quit) leaves a trailing session and a valid dataset...
    Recorder("panda-lift", root, ExpertDriver, realtime=False).close()
    sessions = json.loads((root / SIDECAR).read_text())["sessions"]
    assert [(s["first_episode"], s["task"]) for s in sessions] == [(0, "panda-push"), (1, "panda-lift")]
    assert validate_dataset(root) == []
    # ... that the next recording drops; the same setup as the last session continues it.
    record("panda-push", root, overrides=short)
    meta = json.loads((root / SIDECAR).read_text())
    assert [(s["first_episode"], s["task"], s["instruction"]) for s in meta["sessions"]] == [(0, "panda-push", PUSH)]
    assert DatasetReader(root).num_episodes == 2 and validate_dataset(root) == []
