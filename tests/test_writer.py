"""DatasetWriter edge cases on real files (parquet, h264 mp4s through PyAV): chunk rollover, stats VALUES after an
append and after crash recovery, robot_type mismatch, the "damaged dataset" errors of recovery, refusing to
overwrite a committed file, an encoder failure discarding the episode, an empty episode.

Episodes are tiny (a few frames, 16x16 video) so that each test takes about a second."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robolearn.data import DatasetReader, DatasetWriter, FeatureSpec, validate_dataset
from robolearn.errors import DatasetError

FPS = 10
CAM = "observation.images.cam"
FEATURES = {
    "observation.state": FeatureSpec("float32", (3,), ("a", "b", "c")),
    "action": FeatureSpec("float64", (2,)),
    "gripper_closed": FeatureSpec("bool", (1,)),
    "phase": FeatureSpec("int64", (1,)),
    CAM: FeatureSpec("video", (16, 16, 3)),
}
ROBOT = "test-arm"


def episode(seed: int, n: int) -> dict[str, np.ndarray]:
    """Episode content; seeds give different scales and offsets, so pooled stats differ from any one episode's."""
    rng = np.random.default_rng(seed)
    return {
        "observation.state": (rng.standard_normal((n, 3)) * (1 + seed) + 10 * seed).astype(np.float32),
        "action": rng.uniform(-1 - seed, 1, (n, 2)),
        "gripper_closed": rng.random(n) < 0.5,
        "phase": rng.integers(-5, 50, n),
        CAM: rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
    }


def frame(arrays: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    return {k: (np.array([v[t]]) if v.ndim == 1 else v[t]) for k, v in arrays.items()}


def record(writer: DatasetWriter, task: str, arrays: dict[str, np.ndarray]) -> int:
    writer.start_episode(task)
    for t in range(len(arrays["action"])):
        writer.add_frame(frame(arrays, t))
    return writer.save_episode()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def open_writer(root: Path, **kw) -> DatasetWriter:
    return DatasetWriter(root, fps=FPS, features=kw.pop("features", FEATURES), robot_type=kw.pop("robot", ROBOT), **kw)


def assert_stats_equal_numpy(root: Path, written: list[dict[str, np.ndarray]]) -> None:
    """meta/stats.json against NumPy on the arrays that went in: min, max, mean, std, count per feature."""
    stats = json.loads((root / "meta/stats.json").read_text())
    total = sum(len(w["action"]) for w in written)
    for key in ("observation.state", "action", "gripper_closed", "phase"):
        x = np.concatenate([w[key] for w in written]).astype(np.float64).reshape(total, -1)
        s = stats[key]
        np.testing.assert_allclose(s["min"], x.min(0), rtol=1e-7, err_msg=key)
        np.testing.assert_allclose(s["max"], x.max(0), rtol=1e-7, err_msg=key)
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-9, atol=1e-12, err_msg=key)
        assert s["count"] == [total], key
        for q in ("q01", "q10", "q50", "q90", "q99"):  # LeRobot's aggregate is approximate: only bounds
            assert np.all(np.asarray(s[q]) >= x.min(0) - 1e-9) and np.all(np.asarray(s[q]) <= x.max(0) + 1e-9)
    pixels = np.concatenate([w[CAM] for w in written]).reshape(-1, 3) / 255.0
    img = stats[CAM]
    np.testing.assert_allclose(np.ravel(img["mean"]), pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(img["std"]), pixels.std(0), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(img["min"]), pixels.min(0))
    np.testing.assert_allclose(np.ravel(img["max"]), pixels.max(0))
    assert img["count"] == [total]
    frame_index = np.concatenate([np.arange(len(w["action"])) for w in written])
    assert stats["frame_index"]["max"] == [frame_index.max()] and stats["index"]["max"] == [total - 1]
    np.testing.assert_allclose(stats["frame_index"]["mean"], [frame_index.mean()])
    np.testing.assert_allclose(stats["episode_index"]["mean"],
                               [np.mean([e for e, w in enumerate(written) for _ in w["action"]])])


def test_episodes_roll_over_into_new_chunk_folders(tmp_path):
    """One file per episode; with chunks_size 2 the third episode starts chunk-001 (data, video, meta/episodes),
    also across writer sessions, and every episode reads back."""
    root = tmp_path / "chunks"
    open_writer(root).close()  # a new, empty dataset
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "chunks_size": 2}, indent=4))
    written = [episode(e, 3 + e) for e in range(6)]
    with open_writer(root) as writer:
        for e in range(5):
            assert record(writer, f"task {e % 2}", written[e]) == e
    with open_writer(root) as writer:  # the next session continues after the last chunk's file
        assert record(writer, "task 0", written[5]) == 5
    positions = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    reader = DatasetReader(root)
    assert reader.num_episodes == 6 and validate_dataset(root) == []
    for e, (chunk, file) in enumerate(positions):
        meta = reader.episode_meta(e)
        for kind in ("data", f"videos/{CAM}", "meta/episodes"):
            assert (meta[f"{kind}/chunk_index"], meta[f"{kind}/file_index"]) == (chunk, file), (e, kind)
        name = f"chunk-{chunk:03d}/file-{file:03d}"
        assert (root / f"data/{name}.parquet").is_file() and (root / f"meta/episodes/{name}.parquet").is_file()
        assert (root / f"videos/{CAM}/{name}.mp4").is_file()
        np.testing.assert_array_equal(reader.episode(e)["observation.state"], written[e]["observation.state"])
    assert reader.video_frames(5, CAM).shape == (8, 16, 16, 3)  # from chunk-002
    assert not (root / "data/chunk-000/file-002.parquet").exists()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["chunk-000", "chunk-001", "chunk-002"]


def test_stats_values_after_an_append_session(tmp_path):
    root = tmp_path / "append"
    written = [episode(e, 4 + 2 * e) for e in range(3)]
    with open_writer(root) as writer:
        record(writer, "pick", written[0])
        record(writer, "place", written[1])
    assert_stats_equal_numpy(root, written[:2])
    with open_writer(root) as writer:  # the second session aggregates the stats.json it found with its episode
        record(writer, "pick", written[2])
    assert_stats_equal_numpy(root, written)
    assert validate_dataset(root) == []


def test_stats_values_after_crash_recovery(tmp_path):
    """A crash after the commit point of episode 2 (its meta/episodes file is in place) but before stats.json and
    info.json were replaced: the disk holds the old stats/info and a staging folder. The next writer rebuilds
    stats.json from the committed per-episode stats: it equals NumPy on all three episodes."""
    root = tmp_path / "crash"
    written = [episode(e, 5 + e) for e in range(3)]
    with open_writer(root) as writer:
        record(writer, "pick", written[0])
        record(writer, "place", written[1])
    old = {p: (root / p).read_bytes() for p in ("meta/stats.json", "meta/info.json")}
    with open_writer(root) as writer:
        record(writer, "pick", written[2])
    for p, data in old.items():
        (root / p).write_bytes(data)
    (root / ".staging/episode_000002").mkdir(parents=True)
    (root / ".staging/episode_000002/stats.json").write_text("{}")
    assert DatasetReader(root).num_episodes == 3 and validate_dataset(root)  # stale totals and stats are reported
    with open_writer(root) as writer:
        assert (writer.num_episodes, writer.num_frames) == (3, 18)
    assert not (root / ".staging").exists()
    assert_stats_equal_numpy(root, written)
    assert validate_dataset(root) == []
    # stats.json destroyed (not JSON) with consistent totals: rebuilt too
    (root / "meta/stats.json").write_text("{truncated")
    open_writer(root).close()
    assert_stats_equal_numpy(root, written)


def test_append_with_another_robot_type_is_refused_and_changes_nothing(tmp_path):
    root = tmp_path / "robot"
    with open_writer(root) as writer:
        record(writer, "pick", episode(0, 3))
    before = snapshot(root)
    with pytest.raises(DatasetError, match="robot_type: the dataset has 'test-arm', the writer was given 'so100'"):
        open_writer(root, robot="so100")
    assert snapshot(root) == before
    with open_writer(root) as writer:  # the refused writer released the dataset's lock
        assert writer.num_episodes == 1


@pytest.mark.parametrize("damage, message", [
    ("meta/episodes/chunk-000/file-001.parquet",
     r"meta/episodes holds episode 2 where episode 1 was expected; the dataset is damaged"),
    ("data/chunk-000/file-001.parquet", r"data/chunk-000/file-001.parquet: missing, but committed episode 1 refers "
                                        r"to it; the dataset is damaged"),
    (f"videos/{CAM}/chunk-000/file-000.mp4", rf"videos/{CAM}/chunk-000/file-000.mp4: missing, but committed "
                                             rf"episode 0 refers to it; the dataset is damaged"),
])
def test_recovery_refuses_a_damaged_dataset_and_deletes_nothing(tmp_path, damage, message):
    """Damage that no crash of the writer can leave (a committed episode's row or file gone) is not "repaired":
    the writer refuses with the path, and touches no file (the episodes after the hole are not leftovers)."""
    root = tmp_path / "damaged"
    with open_writer(root) as writer:
        for e in range(3):
            record(writer, "pick", episode(e, 3))
    (root / damage).unlink()
    before = snapshot(root)
    for _ in range(2):  # the refused writer released the lock: the second attempt gets the same answer
        with pytest.raises(DatasetError, match=message):
            open_writer(root)
    assert snapshot(root) == before


def test_save_refuses_to_overwrite_a_committed_file(tmp_path):
    """A file already at the next episode's position (put there while the writer had the dataset open) is never
    overwritten: save_episode raises before moving anything, the episode stays open and can be discarded."""
    root = tmp_path / "overwrite"
    with open_writer(root) as writer:
        record(writer, "pick", episode(0, 3))
        stray = root / "data/chunk-000/file-001.parquet"
        shutil.copyfile(root / "data/chunk-000/file-000.parquet", stray)
        stray_bytes = stray.read_bytes()
        before = snapshot(root)
        writer.start_episode("place")
        arrays = episode(1, 4)
        for t in range(4):
            writer.add_frame(frame(arrays, t))
        with pytest.raises(DatasetError, match=f"{stray}: already exists; refusing to overwrite a committed file"):
            writer.save_episode()
        assert stray.read_bytes() == stray_bytes and writer.num_episodes == 1
        assert not (root / f"videos/{CAM}/chunk-000/file-001.mp4").exists()  # nothing was moved
        assert not (root / "meta/episodes/chunk-000/file-001.parquet").exists()
        assert writer.episode_frames == 4  # still open
        writer.discard_episode()
        assert snapshot(root) == before
        stray.unlink()
    assert DatasetReader(root).num_episodes == 1 and validate_dataset(root) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # the encoder thread ends cleanly
def test_encoder_failure_discards_the_episode(tmp_path):
    """libx264 cannot encode yuv420p at an odd width and height: the encoder thread fails, add_frame or
    save_episode raise DatasetError, and the episode is discarded entirely (no staging, no partial files)."""
    root = tmp_path / "encoder"
    features = {**FEATURES, CAM: FeatureSpec("video", (15, 17, 3))}
    arrays = {**episode(0, 6), CAM: np.full((6, 15, 17, 3), 128, np.uint8)}
    with open_writer(root, features=features) as writer:
        before = snapshot(root)
        writer.start_episode("pick")
        errors = []
        for t in range(6):
            try:
                writer.add_frame(frame(arrays, t))
            except DatasetError as exc:
                errors.append(str(exc))
        with pytest.raises(DatasetError, match="video encoding failed"):
            writer.save_episode()
        assert all("video encoding failed" in e for e in errors)
        assert writer.episode_frames == 0 and writer.num_episodes == 0
        assert not (root / ".staging").exists() and snapshot(root) == before
        writer.start_episode("pick")  # no episode is left open
        writer.discard_episode()
    assert DatasetReader(root).num_episodes == 0 and validate_dataset(root) == []


def test_an_empty_episode_is_a_clear_error_and_stays_open(tmp_path):
    root = tmp_path / "empty"
    with open_writer(root) as writer:
        record(writer, "pick", episode(0, 3))
        before = snapshot(root)
        writer.start_episode("nothing yet")
        with pytest.raises(DatasetError, match="episode 1 has no frames; add frames or discard it"):
            writer.save_episode()
        assert snapshot(root) == before and writer.num_episodes == 1
        with pytest.raises(DatasetError, match="episode 1 is still open"):
            writer.start_episode("another")
        arrays = episode(1, 2)
        for t in range(2):
            writer.add_frame(frame(arrays, t))
        assert writer.save_episode() == 1  # the same open episode, now with frames
    reader = DatasetReader(root)
    assert reader.num_episodes == 2 and reader.tasks == ["pick", "nothing yet"] and validate_dataset(root) == []
