"""Writing LeRobot v3.0 datasets episode by episode, crash-safe: an episode is committed atomically or not at all.

Layout: one data file, one mp4 per camera and one meta/episodes file per episode (chunk = episode // chunks_size,
file = episode % chunks_size, as LeRobot's "next file" rule gives when every episode starts a new file).

Protocol. The open episode lives in root/.staging/episode_NNNNNN/: videos stream there from worker threads, frame
columns stay in memory. save_episode() writes every file the episode changes into the staging folder and fsyncs
them (data parquet, meta/episodes parquet, tasks.parquet when the task is new, stats.json, info.json), then moves
them into place with os.replace in this order: videos, data, tasks, meta/episodes (THE COMMIT POINT), stats, info.
An episode exists iff its meta/episodes file exists. Opening an existing dataset recovers from a crash: the staging
folder is removed, data/video files after the last committed episode (moved before a crash hit the commit) are
deleted, and tasks.parquet, stats.json and info.json are rebuilt from the committed meta/episodes rows when they
disagree with them. A lock file (flock, released by the kernel when the process dies) keeps two writers apart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data.features import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    FeatureSpec,
    data_schema,
    episode_file,
    feature_dicts,
    next_chunk_file,
    video_keys,
)
from robolearn.data.lerobot_reader import describe_folder, read_episodes_meta, read_info, read_tasks
from robolearn.data.stats import (
    aggregate_stats,
    flatten_stats,
    image_stats,
    stats_to_json,
    unflatten_stats,
    vector_stats,
)
from robolearn.data.video import VideoEncoder, video_info_block
from robolearn.errors import DatasetError

__all__ = ["DatasetWriter", "SaveTiming", "STAGING_DIR", "LOCK_FILE", "ROSBAG_DIR", "tasks_table"]

STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
ROSBAG_DIR = "rosbag"
_TMP = ".rl-tmp-"
_log = logging.getLogger(__name__)


# -- durable file operations --------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder created so the new entries survive a power loss."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        _fsync_path(d.parent)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy")
    _fsync_path(path)


def _replace_atomic(path: Path, data: bytes) -> None:
    """Write-temp + fsync + os.replace: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f"{_TMP}{path.name}")
    _write_bytes(tmp, data)
    os.replace(tmp, path)
    _fsync_path(path.parent)


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame({"task_index": ...}, index=tasks)."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                     "__index_level_0__": pa.array(tasks, pa.string())}, schema=schema)


def _tasks_bytes(tasks: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(tasks_table(tasks), sink)
    return sink.getvalue().to_pybytes()


def _info_bytes(info: dict[str, Any]) -> bytes:
    return json.dumps(info, indent=4, ensure_ascii=False).encode()


# -- the writer ---------------------------------------------------------------------------------------------------
@dataclass
class SaveTiming:
    """Where the last save_episode spent its time (s): waiting for the encoders, building files, moving them."""

    encode_wait: float = 0.0
    write: float = 0.0
    commit: float = 0.0
    total: float = 0.0


@dataclass
class _OpenEpisode:
    index: int
    task: str
    staging: Path
    encoders: dict[str, VideoEncoder]
    columns: dict[str, list[np.ndarray]]
    frames: int = 0
    started: float = field(default_factory=time.perf_counter)


class DatasetWriter:
    """Records episodes into the LeRobot v3.0 dataset at `root`: a new one, or appended to an existing one with the
    same fps, features and robot_type (else DatasetError naming the field that differs).

    add_frame(frame) takes exactly the caller's features: vectors as arrays of their shape (a shape-(1,) feature
    also as a Python/NumPy scalar; floats for float features, integers for int64, bools for bool), videos as uint8
    [H, W, 3]. The writer adds timestamp (= frame_index / fps), frame_index, episode_index, index and task_index.
    With rosbag=True every saved episode is also exported to root/rosbag/episode_NNNNNN/ (rosbag2, MCAP) in a
    background thread that re-decodes the committed video; close() waits for it.
    """

    def __init__(self, root: str | Path, *, fps: int, features: dict[str, FeatureSpec], robot_type: str,
                 rosbag: bool = False) -> None:
        self.root = Path(root)
        if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
            raise DatasetError(f"fps must be a positive integer, got {fps!r}")
        self.fps = int(fps)
        if not isinstance(features, dict) or not features:
            raise DatasetError("features must be a non-empty dict {name: FeatureSpec}")
        self._specs: dict[str, FeatureSpec] = dict(features)
        video_info = {k: video_info_block(s.shape[0], s.shape[1], self.fps)
                      for k, s in self._specs.items() if isinstance(s, FeatureSpec) and s.dtype == "video"}
        wanted = feature_dicts(self._specs, video_info)
        self.robot_type = robot_type
        self.rosbag = bool(rosbag)
        self.last_save = SaveTiming()
        self._episode: _OpenEpisode | None = None
        self._closed = False
        self._bags: ThreadPoolExecutor | None = None
        self._bag_futures: list = []

        exists = (self.root / INFO_PATH).is_file()
        if not exists and self.root.exists() and not _is_empty(self.root):
            raise DatasetError(f"{describe_folder(self.root)}; refusing to write a dataset into a folder that is "
                               f"neither empty nor a LeRobot {CODEBASE_VERSION} dataset")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.root)
        try:
            if (self.root / INFO_PATH).is_file():
                self._open_existing(wanted)
            else:
                self._create(wanted)
        except BaseException:
            self._unlock()
            raise
        if self.rosbag:
            self._export_missing_bags()

    # -- public state ----------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        """Committed frames."""
        return int(self.info["total_frames"])

    @property
    def episode_frames(self) -> int:
        """Frames in the open episode (0 when none is open)."""
        return self._episode.frames if self._episode is not None else 0

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    # -- episodes --------------------------------------------------------------------------------------------
    def start_episode(self, task: str) -> None:
        """Open a new episode described by `task` (a natural-language instruction)."""
        self._check_usable()
        if self._episode is not None:
            raise DatasetError(f"{self.root}: episode {self._episode.index} is still open; save or discard it first")
        if not isinstance(task, str) or not task.strip():
            raise DatasetError(f"task must be a non-empty string, got {task!r}")
        index = self.num_episodes
        staging = self.root / STAGING_DIR / f"episode_{index:06d}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        encoders = {k: VideoEncoder(staging / f"{k}.mp4", height=s.shape[0], width=s.shape[1], fps=self.fps)
                    for k, s in self._specs.items() if s.dtype == "video"}
        columns = {k: [] for k, s in self._specs.items() if s.dtype != "video"}
        self._episode = _OpenEpisode(index, task, staging, encoders, columns)

    def add_frame(self, frame: dict[str, np.ndarray | float | bool | int]) -> None:
        """Append one frame to the open episode; images are queued to the encoders (no waiting on encoding)."""
        ep = self._episode
        if ep is None:
            raise DatasetError("add_frame: no open episode; call start_episode(task) first")
        if not isinstance(frame, dict):
            raise DatasetError(f"add_frame: expected a dict {{feature: value}}, got {type(frame).__name__}")
        if frame.keys() != self._specs.keys():
            missing = [k for k in self._specs if k not in frame]
            extra = [k for k in frame if k not in self._specs]
            parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
                    ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
            raise DatasetError(f"add_frame: {'; '.join(parts)} (features: {', '.join(self._specs)})")
        values = {k: _checked(k, self._specs[k], v) for k, v in frame.items()}
        for k, v in values.items():
            if k in ep.encoders:
                ep.encoders[k].put(v)
            else:
                ep.columns[k].append(v)
        ep.frames += 1

    def discard_episode(self) -> None:
        """Drop the open episode: nothing of it stays on disk. No-op when no episode is open."""
        ep, self._episode = self._episode, None
        if ep is None:
            return
        for enc in ep.encoders.values():
            enc.abort()
        _drop_staging(ep.staging)

    def save_episode(self) -> int:
        """Commit the open episode atomically and return its episode_index."""
        ep = self._episode
        if ep is None:
            raise DatasetError("save_episode: no open episode; call start_episode(task) first")
        if ep.frames == 0:
            raise DatasetError(f"save_episode: episode {ep.index} has no frames; add frames or discard it")
        t0 = time.perf_counter()
        try:
            encoded = {k: enc.finish() for k, enc in ep.encoders.items()}
        except DatasetError:
            self.discard_episode()
            raise
        t1 = time.perf_counter()
        n, start, index = ep.frames, self.num_frames, ep.index
        task_index = self._tasks.index(ep.task) if ep.task in self._tasks else len(self._tasks)
        new_task = task_index == len(self._tasks)
        features = self.info["features"]

        columns: dict[str, np.ndarray] = {}
        for k, spec in self._specs.items():
            if spec.dtype != "video":
                stacked = np.stack(ep.columns[k])
                columns[k] = stacked.reshape(n) if spec.shape == (1,) else stacked
        columns["timestamp"] = (np.arange(n, dtype=np.float64) / self.fps).astype(np.float32)
        columns["frame_index"] = np.arange(n, dtype=np.int64)
        columns["episode_index"] = np.full(n, index, dtype=np.int64)
        columns["index"] = np.arange(start, start + n, dtype=np.int64)
        columns["task_index"] = np.full(n, task_index, dtype=np.int64)

        stats = {}
        for k in features:
            if k in encoded:
                stats[k] = image_stats(encoded[k].histogram, encoded[k].sampled_frames)
            else:
                stats[k] = vector_stats(columns[k])

        data_pos, meta_pos = self._next["data"], self._next["meta"]
        row: dict[str, Any] = {"episode_index": index, "tasks": [ep.task], "length": n,
                               "data/chunk_index": data_pos[0], "data/file_index": data_pos[1],
                               "dataset_from_index": start, "dataset_to_index": start + n}
        for k in encoded:
            chunk, file = self._next[f"videos/{k}"]
            row.update({f"videos/{k}/chunk_index": chunk, f"videos/{k}/file_index": file,
                        f"videos/{k}/from_timestamp": 0.0, f"videos/{k}/to_timestamp": n / self.fps})
        row.update(flatten_stats(stats))
        row.update({"meta/episodes/chunk_index": meta_pos[0], "meta/episodes/file_index": meta_pos[1]})

        tasks = self._tasks + [ep.task] if new_task else self._tasks
        total_stats = aggregate_stats([self._stats, stats]) if self._stats else stats
        info = dict(self.info, total_episodes=index + 1, total_frames=start + n, total_tasks=len(tasks),
                    splits={"train": f"0:{index + 1}"})

        # Stage every file of the episode, fsynced, then move them into place; the meta/episodes file commits.
        stage = ep.staging
        _write_parquet(_data_table(columns, features), stage / "data.parquet")
        _write_parquet(pa.Table.from_pylist([row]), stage / "episode.parquet")
        if new_task:
            _write_bytes(stage / "tasks.parquet", _tasks_bytes(tasks))
        _write_bytes(stage / "stats.json", stats_to_json(total_stats).encode())
        _write_bytes(stage / "info.json", _info_bytes(info))
        for video in encoded.values():
            _fsync_path(video.path)
        moves: list[tuple[Path, Path]] = []
        for k, video in encoded.items():
            moves.append((video.path, episode_file(self.root, self._video_path, *self._next[f"videos/{k}"], k)))
        moves.append((stage / "data.parquet", episode_file(self.root, self._data_path, *data_pos)))
        if new_task:
            moves.append((stage / "tasks.parquet", self.root / TASKS_PATH))
        moves.append((stage / "episode.parquet", episode_file(self.root, EPISODES_PATH, *meta_pos)))  # the commit
        moves.append((stage / "stats.json", self.root / STATS_PATH))
        moves.append((stage / "info.json", self.root / INFO_PATH))
        for src, dst in moves:
            _ensure_dir(dst.parent)
            if src.suffix in (".mp4", ".parquet") and src.name != "tasks.parquet" and dst.exists():
                raise DatasetError(f"{dst}: already exists; refusing to overwrite a committed file")
        t2 = time.perf_counter()
        for src, dst in moves:
            os.replace(src, dst)
        for parent in dict.fromkeys(dst.parent for _, dst in moves):
            _fsync_path(parent)
        t3 = time.perf_counter()

        # Committed: advance the in-memory state.
        self._episode = None
        self.info, self._tasks, self._stats = info, tasks, total_stats
        self._next["data"] = next_chunk_file(*data_pos, self._chunks_size)
        self._next["meta"] = next_chunk_file(*meta_pos, self._chunks_size)
        for k in encoded:
            self._next[f"videos/{k}"] = next_chunk_file(*self._next[f"videos/{k}"], self._chunks_size)
        _drop_staging(stage)
        if self.rosbag:
            videos = {k: episode_file(self.root, self._video_path, row[f"videos/{k}/chunk_index"],
                                      row[f"videos/{k}/file_index"], k) for k in encoded}
            self._submit_bag(index, columns, videos)
        self.last_save = SaveTiming(t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t0)
        return index

    def close(self) -> None:
        """Discard an open episode, wait for background rosbag exports, release the dataset. Idempotent."""
        if self._closed:
            return
        try:
            self.discard_episode()
            if self._bags is not None:
                self._bags.shutdown(wait=True)
                for index, future in self._bag_futures:
                    if future.exception() is not None:
                        _log.warning("rosbag export of episode %d failed: %s", index, future.exception())
        finally:
            self._closed = True
            self._unlock()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening -----------------------------------------------------------------------------------------------
    def _create(self, features: dict[str, dict]) -> None:
        has_video = bool(video_keys(features))
        self.info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": DEFAULT_CHUNK_SIZE,
            "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            "fps": self.fps,
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if has_video else None,
            "features": features,
        }
        _ensure_dir(self.root / "meta")
        _replace_atomic(self.root / INFO_PATH, _info_bytes(self.info))  # info.json first: the dataset exists
        _replace_atomic(self.root / TASKS_PATH, _tasks_bytes([]))
        _replace_atomic(self.root / STATS_PATH, b"{}")
        self._tasks, self._stats = [], {}
        self._set_layout()
        self._next = {"data": (0, 0), "meta": (0, 0), **{f"videos/{k}": (0, 0) for k in video_keys(features)}}

    def _open_existing(self, wanted: dict[str, dict]) -> None:
        info = read_info(self.root)
        where = self.root / INFO_PATH
        if int(info["fps"]) != self.fps:
            raise DatasetError(f"{where}: fps: the dataset has {info['fps']}, the writer was given {self.fps}")
        if info.get("robot_type") != self.robot_type:
            raise DatasetError(f"{where}: robot_type: the dataset has {info.get('robot_type')!r}, the writer was "
                               f"given {self.robot_type!r}")
        have = {k: v for k, v in info["features"].items() if k not in DEFAULT_FEATURES}
        want = {k: v for k, v in wanted.items() if k not in DEFAULT_FEATURES}
        for k in want:
            if k not in have:
                raise DatasetError(f"{where}: features: {k!r} is not a feature of the dataset (it has "
                                   f"{', '.join(have)})")
        for k in have:
            if k not in want:
                raise DatasetError(f"{where}: features: the dataset's feature {k!r} is missing from the writer's "
                                   f"features")
            for fld in ("dtype", "shape", "names"):
                a, b = _norm(have[k].get(fld)), _norm(want[k].get(fld))
                if a != b:
                    raise DatasetError(f"{where}: features[{k!r}].{fld}: the dataset has {a!r}, the writer was "
                                       f"given {b!r}")
        self.info = info
        self._set_layout()
        self._recover()

    def _set_layout(self) -> None:
        self._chunks_size = int(self.info.get("chunks_size") or DEFAULT_CHUNK_SIZE)
        self._data_path = self.info.get("data_path") or DATA_PATH
        self._video_path = self.info.get("video_path") or VIDEO_PATH

    def _recover(self) -> None:
        """Undo an uncommitted episode and make tasks/stats/info agree with the committed meta/episodes rows."""
        root, info = self.root, self.info
        shutil.rmtree(root / STAGING_DIR, ignore_errors=True)
        for tmp in list((root / "meta").glob(f"{_TMP}*")) + list((root / ROSBAG_DIR).glob(".partial-*")):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        rows = read_episodes_meta(root)
        for i, row in enumerate(rows):
            if row["episode_index"] != i:
                raise DatasetError(f"{root}: meta/episodes holds episode {row['episode_index']} where episode {i} "
                                   f"was expected; the dataset is damaged (not a crash leftover), repair it first")
        vkeys = video_keys(info["features"])
        referenced: dict[str, set[Path]] = {"data": set(), **{k: set() for k in vkeys}}
        for row in rows:
            paths = {"data": episode_file(root, self._data_path, row["data/chunk_index"], row["data/file_index"])}
            for k in vkeys:
                paths[k] = episode_file(root, self._video_path, row[f"videos/{k}/chunk_index"],
                                        row[f"videos/{k}/file_index"], k)
            for kind, path in paths.items():
                if not path.is_file():
                    raise DatasetError(f"{path}: missing, but committed episode {row['episode_index']} refers to "
                                       f"it; the dataset is damaged (not a crash leftover)")
                referenced[kind].add(path)
        last = rows[-1] if rows else None
        self._next = {"meta": _after(last, "meta/episodes", self._chunks_size),
                      "data": _after(last, "data", self._chunks_size),
                      **{f"videos/{k}": _after(last, f"videos/{k}", self._chunks_size) for k in vkeys}}
        # Files moved into place by a save that died before its commit point: after the last committed position.
        _remove_leftovers(root / "data", "*.parquet", referenced["data"], self._next["data"])
        for k in vkeys:
            _remove_leftovers(root / "videos" / k, "*.mp4", referenced[k], self._next[f"videos/{k}"])

        tasks_path = root / TASKS_PATH
        tasks = read_tasks(root) if tasks_path.is_file() else []
        rewrite_tasks = not tasks_path.is_file()
        for row in rows:
            for task in row.get("tasks") or []:
                if task not in tasks:  # committed, but the crash came before tasks.parquet was replaced
                    tasks.append(task)
                    rewrite_tasks = True
        used = {task for row in rows for task in row.get("tasks") or []}
        while tasks and tasks[-1] not in used:  # new in a save that died before its commit point
            tasks.pop()
            rewrite_tasks = True
        if rewrite_tasks:
            _replace_atomic(tasks_path, _tasks_bytes(tasks))
        totals = {"total_episodes": len(rows), "total_frames": int(sum(r["length"] for r in rows)),
                  "total_tasks": len(tasks), "splits": {"train": f"0:{len(rows)}"} if rows else {}}
        stale = any(info.get(k) != v for k, v in totals.items())
        stats = None
        try:
            stats = json.loads((root / STATS_PATH).read_text())
        except (OSError, ValueError):
            stale = True
        if stale or rewrite_tasks or not isinstance(stats, dict):
            rebuilt = aggregate_stats([unflatten_stats(r) for r in rows]) if rows else {}
            _replace_atomic(root / STATS_PATH, stats_to_json(rebuilt).encode())
            self._stats = rebuilt
        else:
            self._stats = {k: {s: np.asarray(v) for s, v in ft.items()} for k, ft in stats.items()}
        if stale:
            info.update(totals)
            _replace_atomic(root / INFO_PATH, _info_bytes(info))
        self._tasks = tasks

    # -- rosbag ------------------------------------------------------------------------------------------------
    def _submit_bag(self, index: int, columns: dict[str, np.ndarray] | None, videos: dict[str, Path] | None) -> None:
        from robolearn.data.rosbag import export_rosbag, write_episode_bag

        if self._bags is None:
            self._bags = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rosbag-export")
        out = self.root / ROSBAG_DIR
        if columns is None:
            future = self._bags.submit(export_rosbag, self.root, index, out)
        else:
            future = self._bags.submit(write_episode_bag, out, index, self.fps, self.info["features"], columns,
                                       videos or {})
        self._bag_futures.append((index, future))

    def _export_missing_bags(self) -> None:
        for index in range(self.num_episodes):
            if not (self.root / ROSBAG_DIR / f"episode_{index:06d}").is_dir():
                self._submit_bag(index, None, None)

    # -- misc --------------------------------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._closed:
            raise DatasetError(f"{self.root}: the writer is closed")

    def _unlock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _drop_staging(folder: Path) -> None:
    """Remove an episode's staging folder, and root/.staging once it is empty."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


def _is_empty(root: Path) -> bool:
    return all(p.name in (LOCK_FILE, STAGING_DIR) for p in root.iterdir())


def _lock(root: Path) -> int:
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatasetError(f"{root}: another DatasetWriter has this dataset open") from None
    return fd


def _norm(value: Any) -> Any:
    return [_norm(v) for v in value] if isinstance(value, (list, tuple)) else value


def _after(row: dict[str, Any] | None, prefix: str, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after the last committed episode's file of kind `prefix` ((0, 0) for none)."""
    if row is None:
        return 0, 0
    return next_chunk_file(int(row[f"{prefix}/chunk_index"]), int(row[f"{prefix}/file_index"]), chunks_size)


def _position(path: Path) -> tuple[int, int] | None:
    try:
        return int(path.parent.name.removeprefix("chunk-")), int(path.stem.removeprefix("file-"))
    except ValueError:
        return None


def _remove_leftovers(folder: Path, pattern: str, referenced: set[Path], first_free: tuple[int, int]) -> None:
    """Delete files at or after `first_free` that no committed episode refers to (uncommitted leftovers)."""
    for path in folder.glob(f"chunk-*/file-*{pattern[1:]}"):
        pos = _position(path)
        if pos is not None and pos >= first_free and path not in referenced:
            _log.info("removing %s: left by an episode that was not committed", path)
            path.unlink()


def _data_table(columns: dict[str, np.ndarray], features: dict[str, dict]) -> pa.Table:
    schema = data_schema(features)
    arrays = []
    for fld in schema:
        values = columns[fld.name]
        if pa.types.is_fixed_size_list(fld.type):
            flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=fld.type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, fld.type.list_size))
        else:
            arrays.append(pa.array(values, type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _checked(key: str, spec: FeatureSpec, value: Any) -> np.ndarray:
    """The frame value of feature `key` as an array of its dtype and shape, or DatasetError naming the key."""
    if spec.dtype == "video":
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.shape != spec.shape:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise DatasetError(f"add_frame: {key!r} must be a uint8 image of shape {spec.shape}, got {got}")
        return value
    arr = np.asarray(value)
    kinds = {"float32": "fiu", "float64": "fiu", "int64": "iu", "bool": "b"}[spec.dtype]
    if arr.dtype.kind not in kinds:
        raise DatasetError(f"add_frame: {key!r} must hold {spec.dtype} values, got {arr.dtype}")
    if arr.shape != spec.shape and not (spec.shape == (1,) and arr.shape == ()):
        raise DatasetError(f"add_frame: {key!r} must have shape {spec.shape}, got {arr.shape}")
    return arr.astype(spec.dtype).reshape(spec.shape)
