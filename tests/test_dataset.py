"""LeRobot v3.0 datasets: real parquet, real h264 mp4s (PyAV), real SIGKILLed subprocesses; nothing is mocked.

Write -> read back identical arrays and close-enough video frames; discard leaves nothing; appending continues the
indices; a crash at any point loses at most the episode being written; validate_dataset names what is wrong; the
stats equal NumPy's; the layout matches LeRobot v3.0 field by field.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.data import DatasetReader, DatasetWriter, FeatureSpec, validate_dataset
from robolearn.errors import DatasetError

FPS = 30
H, W = 48, 64
CAM = "observation.images.cam"
FEATURES = {
    "observation.state": FeatureSpec("float32", (4,), ("j0", "j1", "j2", "j3")),
    "action": FeatureSpec("float32", (3,)),
    "intervention": FeatureSpec("bool", (1,)),
    CAM: FeatureSpec("video", (H, W, 3)),
}
TASKS = ["pick the cube", "pick the cube", "push the cube"]
LENGTHS = [20, 25, 30]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}


def episode_arrays(seed: int, n: int) -> dict[str, np.ndarray]:
    """Deterministic episode content: random vectors and flags, frames whose colour level moves every frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    level = (30 + 5 * np.arange(n) + 13 * seed) % 170
    images = np.empty((n, H, W, 3), np.uint8)
    for c in range(3):
        images[..., c] = level[:, None, None] + 25 * c + (xx // 16) * 4 + (yy // 12) * 3
    return {
        "observation.state": rng.standard_normal((n, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "intervention": rng.random(n) < 0.3,
        CAM: images,
    }


def frame_at(arrays: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    return {k: (np.array([v[t]]) if k == "intervention" else v[t]) for k, v in arrays.items()}


def write_episode(writer: DatasetWriter, task: str, arrays: dict[str, np.ndarray]) -> int:
    writer.start_episode(task)
    for t in range(len(arrays["action"])):
        writer.add_frame(frame_at(arrays, t))
    return writer.save_episode()


def write_dataset(root: Path, episodes: int = 3) -> list[dict[str, np.ndarray]]:
    written = []
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        for e in range(episodes):
            written.append(episode_arrays(e, LENGTHS[e]))
            assert write_episode(writer, TASKS[e], written[-1]) == e
    return written


def assert_episodes_equal(reader: DatasetReader, written: list[dict[str, np.ndarray]]) -> None:
    start = 0
    for e, arrays in enumerate(written):
        data = reader.episode(e)
        n = len(arrays["action"])
        for k in ("observation.state", "action", "intervention"):
            assert np.array_equal(data[k], arrays[k]), k
        assert data["frame_index"].tolist() == list(range(n))
        assert data["episode_index"].tolist() == [e] * n
        assert data["index"].tolist() == list(range(start, start + n))
        np.testing.assert_allclose(data["timestamp"], np.arange(n) / FPS, atol=1e-6)
        assert data["timestamp"].dtype == np.float32 and data["index"].dtype == np.int64
        assert reader.tasks[data["task_index"][0]] == TASKS[e]
        start += n


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("ds") / "three"
    return root, write_dataset(root)


def copy_of(dataset, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(dataset[0], root)
    return root


# -- write / read ------------------------------------------------------------------------------------------------
def test_written_episodes_read_back_identical_with_decodable_videos(dataset):
    root, written = dataset
    reader = DatasetReader(root)
    assert reader.num_episodes == 3 and reader.num_frames == sum(LENGTHS) and reader.fps == FPS
    assert reader.tasks == ["pick the cube", "push the cube"]
    assert_episodes_equal(reader, written)
    for e, arrays in enumerate(written):
        frames = reader.video_frames(e, CAM)
        assert frames.shape == (LENGTHS[e], H, W, 3) and frames.dtype == np.uint8
        # lossy codec: per-frame channel means within a few levels, and frames in the right order
        got = frames.reshape(len(frames), -1, 3).mean(1)
        want = arrays[CAM].reshape(len(frames), -1, 3).mean(1)
        assert np.abs(got - want).max() < 3.0, np.abs(got - want).max()
    meta = reader.episode_meta(1)
    assert meta["length"] == 25 and meta["tasks"] == ["pick the cube"]
    assert (meta["dataset_from_index"], meta["dataset_to_index"]) == (20, 45)
    assert (meta["data/chunk_index"], meta["data/file_index"]) == (0, 1)
    assert meta[f"videos/{CAM}/from_timestamp"] == 0.0 and meta[f"videos/{CAM}/to_timestamp"] == pytest.approx(25 / 30)
    assert validate_dataset(root) == []
    assert not (root / ".staging").exists()


def test_discard_episode_leaves_nothing_on_disk(tmp_path):
    root = tmp_path / "d"
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        assert validate_dataset(root) == [] and DatasetReader(root).num_episodes == 0  # a new, empty dataset
        write_episode(writer, TASKS[0], episode_arrays(0, 10))
        before = snapshot(root)
        writer.start_episode("a task never saved")
        arrays = episode_arrays(5, 12)
        for t in range(12):
            writer.add_frame(frame_at(arrays, t))
        assert writer.episode_frames == 12
        writer.discard_episode()
        assert writer.episode_frames == 0 and snapshot(root) == before and not (root / ".staging").exists()
        assert write_episode(writer, TASKS[1], episode_arrays(1, 8)) == 1
        writer.start_episode("left open at close")
        writer.add_frame(frame_at(arrays, 0))
    reader = DatasetReader(root)
    assert reader.num_episodes == 2 and reader.tasks == ["pick the cube"]
    assert not (root / ".staging").exists() and validate_dataset(root) == []


def test_second_session_appends_and_continues_indices(tmp_path):
    root = tmp_path / "a"
    written = write_dataset(root, episodes=2)
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        assert (writer.num_episodes, writer.num_frames) == (2, 45)
        written.append(episode_arrays(2, LENGTHS[2]))
        assert write_episode(writer, TASKS[2], written[-1]) == 2
    reader = DatasetReader(root)
    assert reader.num_episodes == 3
    assert_episodes_equal(reader, written)
    assert reader.episode_meta(2)["dataset_from_index"] == 45
    assert (root / "meta/episodes/chunk-000/file-002.parquet").is_file()
    assert validate_dataset(root) == []


@pytest.mark.parametrize("change, field", [
    ({"action": FeatureSpec("float32", (4,))}, "features['action'].shape"),
    ({"action": FeatureSpec("float64", (3,))}, "features['action'].dtype"),
    ({"observation.state": FeatureSpec("float32", (4,), ("a", "b", "c", "d"))}, "features['observation.state'].names"),
    ({CAM: FeatureSpec("video", (96, 128, 3))}, f"features['{CAM}'].shape"),
    ({"extra": FeatureSpec("bool", (1,))}, "'extra' is not a feature of the dataset"),
])
def test_append_with_other_features_is_an_error_naming_the_field(dataset, tmp_path, change, field):
    root = copy_of(dataset, tmp_path)
    with pytest.raises(DatasetError, match=field.replace("[", r"\[").replace("]", r"\]")):
        DatasetWriter(root, fps=FPS, features={**FEATURES, **change}, robot_type="test-arm")
    missing = {k: v for k, v in FEATURES.items() if k != "intervention"}
    with pytest.raises(DatasetError, match="'intervention' is missing from the writer"):
        DatasetWriter(root, fps=FPS, features=missing, robot_type="test-arm")
    with pytest.raises(DatasetError, match="fps: the dataset has 30, the writer was given 15"):
        DatasetWriter(root, fps=15, features=FEATURES, robot_type="test-arm")
    assert validate_dataset(root) == []


def test_add_frame_checks_keys_shapes_and_dtypes(tmp_path):
    with DatasetWriter(tmp_path / "f", fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        with pytest.raises(DatasetError, match="no open episode"):
            writer.add_frame({})
        writer.start_episode("t")
        good = frame_at(episode_arrays(0, 2), 0)
        cases = [
            ({k: v for k, v in good.items() if k != "action"}, "missing 'action'"),
            ({**good, "reward": np.zeros(1)}, "unexpected 'reward'"),
            ({**good, "action": np.zeros(4, np.float32)}, "'action' must have shape"),
            ({**good, "action": np.array(["a", "b", "c"])}, "'action' must hold float32"),
            ({**good, "intervention": np.array([0.5])}, "'intervention' must hold bool"),
            ({**good, CAM: np.zeros((H, W, 3), np.float32)}, f"'{CAM}' must be a uint8 image"),
            ({**good, CAM: np.zeros((W, H, 3), np.uint8)}, f"'{CAM}' must be a uint8 image of shape"),
        ]
        for frame, message in cases:
            with pytest.raises(DatasetError, match=message):
                writer.add_frame(frame)
        assert writer.episode_frames == 0
        writer.add_frame({**good, "intervention": True})  # scalars are fine for shape-(1,) features
        assert writer.episode_frames == 1
        with pytest.raises(DatasetError, match="still open"):
            writer.start_episode("again")
        with pytest.raises(DatasetError, match="another DatasetWriter"):
            DatasetWriter(tmp_path / "f", fps=FPS, features=FEATURES, robot_type="test-arm")


def test_writer_and_reader_refuse_foreign_folders(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        DatasetWriter(foreign, fps=FPS, features=FEATURES, robot_type="test-arm")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(DatasetError, match="meta/info.json is missing"):
        DatasetReader(foreign)
    with pytest.raises(DatasetError, match="no such folder"):
        DatasetReader(tmp_path / "nowhere")


# -- crash safety ------------------------------------------------------------------------------------------------
def _child(root: Path, body: str) -> str:
    return textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from test_dataset import FEATURES, FPS, LENGTHS, TASKS, episode_arrays, frame_at, write_episode
        from robolearn.data import DatasetWriter
        w = DatasetWriter({str(root)!r}, fps=FPS, features=FEATURES, robot_type="test-arm")
    """) + textwrap.dedent(body)


def test_sigkill_mid_episode_keeps_every_committed_episode(tmp_path):
    root = tmp_path / "killed"
    body = """
        for e in range(3):
            write_episode(w, TASKS[e], episode_arrays(e, LENGTHS[e]))
        w.start_episode("the doomed episode")
        arrays = episode_arrays(9, 50)
        t = 0
        while True:
            w.add_frame(frame_at(arrays, t % 50))
            t += 1
            if t == 40:
                print("recording", flush=True)
            time.sleep(0.002)
    """
    proc = subprocess.Popen([sys.executable, "-c", _child(root, body)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "recording", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any((root / ".staging").rglob("*.mp4")), "the fourth episode was being recorded"
    reader = DatasetReader(root)
    assert reader.num_episodes == 3 and "the doomed episode" not in reader.tasks
    written = [episode_arrays(e, LENGTHS[e]) for e in range(3)]
    assert_episodes_equal(reader, written)
    assert validate_dataset(root) == []
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        assert not (root / ".staging").exists()
        written.append(episode_arrays(3, 15))
        assert write_episode(writer, "after the crash", written[-1]) == 3
    reader = DatasetReader(root)
    assert reader.num_episodes == 4 and reader.episode_meta(3)["dataset_from_index"] == sum(LENGTHS)
    assert reader.episode(3)["index"][0] == sum(LENGTHS) and reader.tasks[-1] == "after the crash"
    assert_episodes_equal(reader, written[:3])
    assert validate_dataset(root) == []


# save_episode of an episode with a new task moves 6 files: video, data, tasks, meta/episodes (commit), stats, info
@pytest.mark.parametrize("moved", range(7))
def test_sigkill_inside_save_episode_is_recovered(tmp_path, moved):
    """SIGKILL after `moved` of the file moves of save_episode: before the commit the episode is lost, after it
    it is kept; in between validate names the inconsistency and the next writer repairs it."""
    root = tmp_path / "crash"
    body = f"""
        for e in range(2):
            write_episode(w, TASKS[e], episode_arrays(e, LENGTHS[e]))
        real, left = os.replace, [{moved}]
        def replace(src, dst):
            if left[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            left[0] -= 1
            real(src, dst)
        os.replace = replace
        write_episode(w, TASKS[2], episode_arrays(2, LENGTHS[2]))
        os.kill(os.getpid(), signal.SIGKILL)
    """
    out = subprocess.run([sys.executable, "-c", _child(root, body)], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    committed = 3 if moved >= 4 else 2
    assert DatasetReader(root).num_episodes == committed  # the reader follows meta/episodes
    problems = validate_dataset(root)
    assert bool(problems) == (1 <= moved <= 5), problems
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="test-arm") as writer:
        assert writer.num_episodes == committed and writer.tasks == sorted(set(TASKS[:committed]), key=TASKS.index)
        assert validate_dataset(root) == []
        write_episode(writer, "next", episode_arrays(7, 9))
    reader = DatasetReader(root)
    assert reader.num_episodes == committed + 1 and validate_dataset(root) == []
    assert_episodes_equal(reader, [episode_arrays(e, LENGTHS[e]) for e in range(committed)])


# -- validation --------------------------------------------------------------------------------------------------
def test_validate_reports_a_truncated_data_file(dataset, tmp_path):
    root = copy_of(dataset, tmp_path)
    path = root / "data/chunk-000/file-001.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    problems = validate_dataset(root)
    assert any(str(path) in p and "unreadable parquet" in p for p in problems), problems


def test_validate_reports_a_deleted_and_a_truncated_video(dataset, tmp_path):
    root = copy_of(dataset, tmp_path)
    gone = root / f"videos/{CAM}/chunk-000/file-000.mp4"
    gone.unlink()
    cut = root / f"videos/{CAM}/chunk-000/file-002.mp4"
    cut.write_bytes(cut.read_bytes()[:1500])
    problems = validate_dataset(root)
    assert any(str(gone) in p and "missing" in p for p in problems), problems
    assert any(str(cut) in p for p in problems), problems
    assert not any(str(root / f"videos/{CAM}/chunk-000/file-001.mp4") in p for p in problems), problems


def test_validate_reports_wrong_version_and_foreign_folders(dataset, tmp_path):
    root = copy_of(dataset, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    [problem] = validate_dataset(root)
    assert "meta/info.json" in problem and "'v2.1'" in problem and "expected 'v3.0'" in problem
    with pytest.raises(DatasetError, match="v2.1"):
        DatasetReader(root)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    [problem] = validate_dataset(foreign)
    assert "not a LeRobot dataset" in problem and "meta/info.json is missing" in problem
    [problem] = validate_dataset(tmp_path / "nowhere")
    assert "no such folder" in problem
    (root / "meta/info.json").write_text("{not json")
    [problem] = validate_dataset(root)
    assert "meta/info.json: not valid JSON" in problem


def test_validate_reports_metadata_that_disagrees_with_the_files(dataset, tmp_path):
    root = copy_of(dataset, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["index"]
    info["total_frames"] = 1
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/stats.json").unlink()
    problems = validate_dataset(root)
    assert any("default feature 'index' is missing" in p for p in problems), problems
    assert any("total_frames is 1" in p for p in problems), problems
    assert any("meta/stats.json: missing" in p for p in problems), problems


# -- stats -------------------------------------------------------------------------------------------------------
def test_stats_equal_numpy_on_the_written_arrays(dataset):
    root, written = dataset
    stats = json.loads((root / "meta/stats.json").read_text())
    for key in ("observation.state", "action", "intervention"):
        values = np.concatenate([w[key] for w in written]).astype(np.float64).reshape(sum(LENGTHS), -1)
        s = stats[key]
        np.testing.assert_allclose(s["min"], values.min(0), atol=1e-7)
        np.testing.assert_allclose(s["max"], values.max(0), atol=1e-7)
        np.testing.assert_allclose(s["mean"], values.mean(0), atol=1e-9)
        np.testing.assert_allclose(s["std"], values.std(0), atol=1e-9)
        assert s["count"] == [sum(LENGTHS)]
    frame_index = np.concatenate([np.arange(n) for n in LENGTHS])
    np.testing.assert_allclose(stats["frame_index"]["mean"], [frame_index.mean()])
    assert stats["index"]["max"] == [sum(LENGTHS) - 1]
    pixels = np.concatenate([w[CAM] for w in written]).reshape(-1, 3) / 255.0  # 48x64: no downsampling
    img = stats[CAM]
    assert np.asarray(img["mean"]).shape == (3, 1, 1) and img["count"] == [sum(LENGTHS)]
    np.testing.assert_allclose(np.asarray(img["mean"]).ravel(), pixels.mean(0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["std"]).ravel(), pixels.std(0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["min"]).ravel(), pixels.min(0))
    np.testing.assert_allclose(np.asarray(img["max"]).ravel(), pixels.max(0))
    reader = DatasetReader(root)
    for e, w in enumerate(written):  # per-episode stats columns of meta/episodes
        meta = reader.episode_meta(e)
        np.testing.assert_allclose(meta["stats/action/mean"], w["action"].astype(np.float64).mean(0), atol=1e-9)
        np.testing.assert_allclose(meta["stats/observation.state/std"], w["observation.state"].std(0), atol=1e-6)
        assert meta["stats/action/count"] == [LENGTHS[e]]
        np.testing.assert_allclose(np.asarray(meta[f"stats/{CAM}/mean"]).ravel(),
                                   (w[CAM].reshape(-1, 3) / 255.0).mean(0), atol=1e-9)


# -- layout ------------------------------------------------------------------------------------------------------
def test_layout_matches_lerobot_v30_field_by_field(dataset):
    root, _ = dataset
    info = json.loads((root / "meta/info.json").read_text())
    # lerobot/datasets/utils.py create_empty_dataset_info
    assert list(info) == ["codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
                          "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
                          "data_path", "video_path", "features"]
    assert info["codebase_version"] == "v3.0" and info["splits"] == {"train": "0:3"}
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 75, 2)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    # utils.py DEFAULT_DATA_PATH / DEFAULT_VIDEO_PATH (CHUNK_FILE_PATTERN)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    # LeRobotDatasetMetadata.create: {**features, **DEFAULT_FEATURES}; utils.py DEFAULT_FEATURES
    assert list(features) == [*FEATURES, "timestamp", "frame_index", "episode_index", "index", "task_index"]
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[k] == {"dtype": "float32" if k == "timestamp" else "int64", "shape": [1], "names": None}
    assert features["observation.state"] == {"dtype": "float32", "shape": [4], "names": ["j0", "j1", "j2", "j3"]}
    # utils.py hw_to_dataset_features (video names) + video_utils.py get_video_info / get_audio_info (info block)
    assert features[CAM] == {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                             "info": {"video.height": H, "video.width": W, "video.codec": "h264",
                                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": FPS,
                                      "video.channels": 3, "has_audio": False}}
    # lerobot_dataset.py save_episode / _save_episode_data / _save_episode_video / _save_episode_metadata
    columns = pq.read_schema(root / "meta/episodes/chunk-000/file-000.parquet").names
    stat_keys = ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]  # compute_stats.py
    assert columns == ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                       "dataset_from_index", "dataset_to_index", f"videos/{CAM}/chunk_index",
                       f"videos/{CAM}/file_index", f"videos/{CAM}/from_timestamp", f"videos/{CAM}/to_timestamp",
                       *[f"stats/{k}/{s}" for k in features for s in stat_keys],
                       "meta/episodes/chunk_index", "meta/episodes/file_index"]
    # utils.py write_tasks: pandas DataFrame({"task_index"}, index=task) -> the index column + pandas metadata
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "__index_level_0__"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]
    # get_hf_features_from_features: shape (1,) -> Value, (n,) -> Sequence(length=n); videos are not columns
    data = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert data.names == ["observation.state", "action", "intervention", "timestamp", "frame_index",
                          "episode_index", "index", "task_index"]
    assert str(data.field("action").type) == "fixed_size_list<element: float>[3]"
    assert str(data.field("intervention").type) == "bool" and str(data.field("timestamp").type) == "float"
    stats = json.loads((root / "meta/stats.json").read_text())
    assert list(stats) == list(features) and all(list(s) == stat_keys for s in stats.values())
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
                     "data/chunk-000/file-002.parquet", "meta/episodes/chunk-000/file-000.parquet",
                     "meta/episodes/chunk-000/file-001.parquet", "meta/episodes/chunk-000/file-002.parquet",
                     "meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                     f"videos/{CAM}/chunk-000/file-000.mp4", f"videos/{CAM}/chunk-000/file-001.mp4",
                     f"videos/{CAM}/chunk-000/file-002.mp4"]
