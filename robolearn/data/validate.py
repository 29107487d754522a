"""Checking a folder against the LeRobot v3.0 layout: metadata, every data file, every video, the stats; and, in a
dataset recorded by robolearn, that meta/robolearn.json agrees with the episodes' tasks.

validate_dataset never raises on a bad dataset: each problem is one message naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data.features import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_DIR,
    EPISODES_PATH,
    FEATURE_DTYPES,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_NAMES,
    VIDEO_PATH,
    arrow_type,
    data_keys,
    episode_file,
    video_keys,
)
from robolearn.data.lerobot_reader import column_to_numpy, describe_folder, read_tasks, version_message
from robolearn.data.sidecar import sidecar_problems
from robolearn.data.stats import REQUIRED_STAT_KEYS
from robolearn.data.video import decode_video, probe_video
from robolearn.errors import DatasetError

__all__ = ["validate_dataset", "REQUIRED_INFO_KEYS", "REQUIRED_EPISODE_COLUMNS", "VIDEO_INFO_KEYS"]

# info.json keys written by LeRobot's create_empty_dataset_info (utils.py)
REQUIRED_INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
                      "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
                      "data_path", "video_path", "features")
# meta/episodes columns written by LeRobot's save_episode / _save_episode_metadata (lerobot_dataset.py)
REQUIRED_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                            "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index",
                            "meta/episodes/file_index")
VIDEO_EPISODE_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
# the `info` block of a video feature (video_utils.get_video_info)
VIDEO_INFO_KEYS = ("video.height", "video.width", "video.codec", "video.pix_fmt", "video.is_depth_map", "video.fps",
                   "video.channels", "has_audio")
_NUMPY = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "bool": np.bool_}


def validate_dataset(root: str | Path) -> list[str]:
    """Problems found in the dataset at `root`, [] when it is a valid LeRobot v3.0 dataset."""
    root = Path(root)
    try:
        return _Check(root).run()
    except Exception as exc:  # noqa: BLE001 - a bad dataset is reported, never raised
        return [f"{root}: validation stopped by an unexpected error: {type(exc).__name__}: {exc}"]


class _Check:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []

    def bad(self, message: str) -> None:
        self.problems.append(message)

    def run(self) -> list[str]:
        info = self.info()
        if info is None:
            return self.problems
        features = self.features(info)
        tasks = self.tasks(info)
        rows = self.episodes(info, features)
        if features is not None and rows is not None:
            self.data_files(info, features, rows, tasks)
            self.videos(info, features, rows)
        self.stats(features, rows)
        if rows is not None:  # robolearn's meta/robolearn.json (if any) must agree with the episodes' tasks
            for problem in sidecar_problems(self.root, rows):
                self.bad(problem)
        return self.problems

    # -- meta/info.json ----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        problem = describe_folder(self.root)
        if problem is not None:
            self.bad(problem)
            return None
        path = self.root / INFO_PATH
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            self.bad(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.bad(f"{path}: unreadable ({exc})")
            return None
        if not isinstance(info, dict):
            self.bad(f"{path}: expected a JSON object, got {type(info).__name__}")
            return None
        if info.get("codebase_version") != CODEBASE_VERSION:
            self.bad(version_message(path, info.get("codebase_version")))
            return None
        missing = [k for k in REQUIRED_INFO_KEYS if k not in info]
        for k in missing:
            self.bad(f"{path}: required key {k!r} is missing")
        for k in ("total_episodes", "total_frames", "total_tasks", "chunks_size", "fps"):
            v = info.get(k)
            if k in info and (isinstance(v, bool) or not isinstance(v, int) or v < (1 if k in ("fps",
                                                                                              "chunks_size") else 0)):
                self.bad(f"{path}: {k} must be a {'positive' if k in ('fps', 'chunks_size') else 'non-negative'} "
                         f"integer, got {v!r}")
        if "fps" in missing or "features" in missing or not isinstance(info.get("fps"), int) or info["fps"] <= 0:
            return None
        splits = info.get("splits")
        n = info.get("total_episodes")
        if isinstance(splits, dict) and "train" in splits and isinstance(n, int) and splits["train"] != f"0:{n}":
            self.bad(f"{path}: splits.train is {splits['train']!r}; expected '0:{n}' for {n} episodes")
        for k, default in (("data_path", DATA_PATH), ("video_path", VIDEO_PATH)):
            if info.get(k) not in (None, default) and k in info:
                self.bad(f"{path}: {k} is {info[k]!r}; expected the v3.0 template {default!r}")
        return info

    def features(self, info: dict[str, Any]) -> dict[str, dict] | None:
        path = self.root / INFO_PATH
        features = info.get("features")
        if not isinstance(features, dict):
            self.bad(f"{path}: features must be an object {{name: {{dtype, shape, names}}}}")
            return None
        ok = True
        for k, default in DEFAULT_FEATURES.items():
            f = features.get(k)
            if not isinstance(f, dict):
                self.bad(f"{path}: default feature {k!r} is missing from features")
                ok = False
            elif f.get("dtype") != default["dtype"] or list(f.get("shape") or []) != default["shape"]:
                self.bad(f"{path}: features[{k!r}] must be dtype {default['dtype']!r} shape {default['shape']}, "
                         f"got {f.get('dtype')!r} {f.get('shape')!r}")
                ok = False
        for k, f in features.items():
            where = f"{path}: features[{k!r}]"
            if not isinstance(f, dict):
                self.bad(f"{where}: expected an object with dtype, shape, names")
                ok = False
                continue
            for key in ("dtype", "shape", "names"):
                if key not in f:
                    self.bad(f"{where}: key {key!r} is missing")
                    ok = False
            dtype, shape, names = f.get("dtype"), f.get("shape"), f.get("names")
            if dtype not in (*FEATURE_DTYPES, "image", "string", "int32", "int16", "int8", "uint8", "float16"):
                self.bad(f"{where}.dtype: {dtype!r} is not a LeRobot dtype")
                ok = False
            if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
                self.bad(f"{where}.shape: {shape!r} is not a list of positive integers")
                ok = False
                continue
            if names is not None and not isinstance(names, (list, dict)):
                self.bad(f"{where}.names: must be a list or null, got {names!r}")
            if dtype == "video":
                if len(shape) != 3:
                    self.bad(f"{where}.shape: a video feature has shape [height, width, channels], got {shape}")
                    ok = False
                if not isinstance(names, list) or len(names) != 3 or names[:2] != list(VIDEO_NAMES[:2]):
                    self.bad(f"{where}.names: expected {list(VIDEO_NAMES)}, got {names!r}")
                block = f.get("info")
                if not isinstance(block, dict):
                    self.bad(f"{where}.info: the video info block is missing")
                else:
                    for key in VIDEO_INFO_KEYS:
                        if key not in block:
                            self.bad(f"{where}.info: key {key!r} is missing")
                    if len(shape) == 3 and (block.get("video.height"), block.get("video.width")) != tuple(shape[:2]):
                        self.bad(f"{where}.info: video.height x video.width {block.get('video.height')}x"
                                 f"{block.get('video.width')} differ from shape {shape}")
            elif dtype in _NUMPY and isinstance(names, list) and len(shape) == 1 and len(names) != shape[0]:
                self.bad(f"{where}.names: {len(names)} names for shape {shape}")
        if video_keys(features) and info.get("video_path") is None:
            self.bad(f"{path}: video_path is null but there are video features {video_keys(features)}")
            ok = False
        return features if ok else None

    # -- meta/tasks.parquet ------------------------------------------------------------------------------------
    def tasks(self, info: dict[str, Any]) -> list[str] | None:
        try:
            tasks = read_tasks(self.root)
        except DatasetError as exc:
            self.bad(str(exc))
            return None
        if info.get("total_tasks") != len(tasks):
            self.bad(f"{self.root / INFO_PATH}: total_tasks is {info.get('total_tasks')} but {TASKS_PATH} holds "
                     f"{len(tasks)} tasks")
        return tasks

    # -- meta/episodes -----------------------------------------------------------------------------------------
    def episodes(self, info: dict[str, Any], features: dict[str, dict] | None) -> list[dict[str, Any]] | None:
        folder = self.root / EPISODES_DIR
        files = sorted(folder.glob("chunk-*/file-*.parquet"))
        rows: list[dict[str, Any]] = []
        readable = True
        for path in files:
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                self.bad(f"{path}: unreadable parquet ({exc})")
                readable = False
                continue
            cols = list(REQUIRED_EPISODE_COLUMNS)
            for k in video_keys(features or {}):
                cols += [f"videos/{k}/{c}" for c in VIDEO_EPISODE_COLUMNS]
            missing = [c for c in cols if c not in table.column_names]
            if missing:
                self.bad(f"{path}: columns {missing} are missing")
                readable = False
                continue
            for i, row in enumerate(table.to_pylist()):
                pos = (row["meta/episodes/chunk_index"], row["meta/episodes/file_index"])
                if episode_file(self.root, EPISODES_PATH, *pos) != path:
                    self.bad(f"{path}: row {i} (episode {row['episode_index']}) says meta/episodes/chunk_index, "
                             f"file_index = {pos}")
                rows.append(row)
        if not readable:
            return None
        rows.sort(key=lambda r: r["episode_index"])
        where = self.root / INFO_PATH
        indices = [r["episode_index"] for r in rows]
        if indices != list(range(len(rows))):
            self.bad(f"{folder}: episode_index values {indices[:10]}{'...' if len(indices) > 10 else ''} are not "
                     f"0..{len(rows) - 1}")
            return None
        if info.get("total_episodes") != len(rows):
            self.bad(f"{where}: total_episodes is {info.get('total_episodes')} but {EPISODES_DIR} holds "
                     f"{len(rows)} episodes")
        frames = sum(r["length"] for r in rows)
        if info.get("total_frames") != frames:
            self.bad(f"{where}: total_frames is {info.get('total_frames')} but the episodes' lengths sum to {frames}")
        expected_from = 0
        for r in rows:
            e = r["episode_index"]
            if r["length"] is None or r["length"] <= 0:
                self.bad(f"{folder}: episode {e}: length is {r['length']!r}")
            if r["dataset_from_index"] != expected_from or r["dataset_to_index"] - r["dataset_from_index"] \
                    != r["length"]:
                self.bad(f"{folder}: episode {e}: dataset_from_index..dataset_to_index = "
                         f"{r['dataset_from_index']}..{r['dataset_to_index']}; expected {expected_from}.."
                         f"{expected_from + (r['length'] or 0)}")
            expected_from = r["dataset_to_index"]
            if not isinstance(r["tasks"], list) or not r["tasks"]:
                self.bad(f"{folder}: episode {e}: tasks is {r['tasks']!r}; expected a non-empty list of strings")
        return rows

    # -- data/ -------------------------------------------------------------------------------------------------
    def data_files(self, info: dict[str, Any], features: dict[str, dict], rows: list[dict[str, Any]],
                   tasks: list[str] | None) -> None:
        fps = info["fps"]
        keys = data_keys(features)
        by_file: dict[Path, list[dict[str, Any]]] = {}
        for r in rows:
            path = episode_file(self.root, info.get("data_path") or DATA_PATH, r["data/chunk_index"],
                                r["data/file_index"])
            by_file.setdefault(path, []).append(r)
        for path in sorted((self.root / "data").glob("chunk-*/file-*.parquet")):
            if path not in by_file:
                self.bad(f"{path}: no episode in {EPISODES_DIR} refers to this data file (an uncommitted leftover; "
                         f"opening the dataset with DatasetWriter removes it)")
        for path, eps in by_file.items():
            if not path.is_file():
                self.bad(f"{path}: missing (data of episodes {[r['episode_index'] for r in eps]})")
                continue
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                self.bad(f"{path}: unreadable parquet ({exc})")
                continue
            names = table.column_names
            missing = [k for k in keys if k not in names]
            extra = [k for k in names if k not in keys]
            if missing:
                self.bad(f"{path}: columns {missing} of info.json features are missing")
            if extra:
                self.bad(f"{path}: columns {extra} are not info.json features")
            for k in keys:
                if k in names and not _type_matches(table.schema.field(k).type, features[k]):
                    self.bad(f"{path}: column {k!r} has type {table.schema.field(k).type}; features[{k!r}] says "
                             f"dtype {features[k]['dtype']} shape {features[k]['shape']} ({arrow_type(features[k])})")
            if missing or any(k not in names for k in DEFAULT_FEATURES):
                continue
            ep_col = column_to_numpy(table.column("episode_index"))
            for r in eps:
                self._episode_rows(path, table, ep_col, r, fps, tasks, keys, features)

    def _episode_rows(self, path: Path, table: pa.Table, ep_col: np.ndarray, r: dict[str, Any], fps: int,
                      tasks: list[str] | None, keys: list[str], features: dict[str, dict]) -> None:
        e, n = r["episode_index"], r["length"]
        sel = np.flatnonzero(ep_col == e)
        where = f"{path}: episode {e}"
        if len(sel) != n:
            self.bad(f"{where}: {len(sel)} rows have episode_index {e}; meta/episodes says length {n}")
            return
        part = table.take(pa.array(sel))
        frame_index = column_to_numpy(part.column("frame_index"))
        if not np.array_equal(frame_index, np.arange(n)):
            self.bad(f"{where}: frame_index does not run 0..{n - 1}")
        index = column_to_numpy(part.column("index"))
        if not np.array_equal(index, np.arange(r["dataset_from_index"], r["dataset_from_index"] + n)):
            self.bad(f"{where}: index does not run {r['dataset_from_index']}..{r['dataset_from_index'] + n - 1} "
                     f"(global and contiguous)")
        timestamp = column_to_numpy(part.column("timestamp")).astype(np.float64)
        err = np.abs(timestamp - frame_index / fps)
        if err.size and err.max() > 1e-4:
            t = int(np.argmax(err))
            self.bad(f"{where}: timestamp {timestamp[t]:.6f} at frame {t} differs from frame_index / fps = "
                     f"{frame_index[t] / fps:.6f}")
        task_index = column_to_numpy(part.column("task_index"))
        if tasks is not None:
            if task_index.size and (task_index.min() < 0 or task_index.max() >= len(tasks)):
                self.bad(f"{where}: task_index values {sorted(set(task_index.tolist()))} are not in {TASKS_PATH} "
                         f"(0..{len(tasks) - 1})")
            elif set(tasks[i] for i in set(task_index.tolist())) != set(r["tasks"] or []):
                self.bad(f"{where}: the tasks of its task_index values differ from meta/episodes tasks {r['tasks']}")
        for k in keys:
            f = features[k]
            if list(f["shape"]) != [1] and f["dtype"] in _NUMPY:
                try:
                    values = column_to_numpy(part.column(k))
                except (pa.ArrowException, ValueError):
                    values = None
                if values is None or values.shape != (n, f["shape"][0]):
                    self.bad(f"{where}: column {k!r} rows are not vectors of length {f['shape'][0]}")

    # -- videos/ -----------------------------------------------------------------------------------------------
    def videos(self, info: dict[str, Any], features: dict[str, dict], rows: list[dict[str, Any]]) -> None:
        template = info.get("video_path") or VIDEO_PATH
        for key in video_keys(features):
            f = features[key]
            by_file: dict[Path, list[dict[str, Any]]] = {}
            for r in rows:
                path = episode_file(self.root, template, r[f"videos/{key}/chunk_index"],
                                    r[f"videos/{key}/file_index"], key)
                by_file.setdefault(path, []).append(r)
            for path in sorted((self.root / "videos" / key).glob("chunk-*/file-*.mp4")):
                if path not in by_file:
                    self.bad(f"{path}: no episode in {EPISODES_DIR} refers to this video (an uncommitted leftover; "
                             f"opening the dataset with DatasetWriter removes it)")
            for path, eps in by_file.items():
                if not path.is_file():
                    self.bad(f"{path}: missing (video {key} of episodes {[r['episode_index'] for r in eps]})")
                    continue
                try:
                    probe = probe_video(path)
                    expected_codec = (f.get("info") or {}).get("video.codec")
                    if expected_codec and probe["codec"] != expected_codec:
                        self.bad(f"{path}: codec {probe['codec']!r}; features[{key!r}].info says {expected_codec!r}")
                    for r in eps:
                        self._video_episode(path, key, f, r, info["fps"])
                except DatasetError as exc:
                    self.bad(str(exc))

    def _video_episode(self, path: Path, key: str, f: dict[str, Any], r: dict[str, Any], fps: int) -> None:
        e, n = r["episode_index"], r["length"]
        start, end = float(r[f"videos/{key}/from_timestamp"]), float(r[f"videos/{key}/to_timestamp"])
        if abs((end - start) - n / fps) > 1.5 / fps:
            self.bad(f"{path}: episode {e}: videos/{key} from_timestamp..to_timestamp = {start:.4f}..{end:.4f} s "
                     f"does not span its {n} frames at {fps} fps")
        frames = decode_video(path, start, end, tolerance=0.5 / fps)
        if len(frames) != n:
            self.bad(f"{path}: episode {e}: {len(frames)} frames decode between {start:.4f} s and {end:.4f} s; the "
                     f"episode has {n} frames")
        elif tuple(frames.shape[1:3]) != tuple(f["shape"][:2]):
            self.bad(f"{path}: episode {e}: frames are {frames.shape[1]}x{frames.shape[2]}; features[{key!r}].shape "
                     f"says {f['shape'][0]}x{f['shape'][1]}")

    # -- meta/stats.json ---------------------------------------------------------------------------------------
    def stats(self, features: dict[str, dict] | None, rows: list[dict[str, Any]] | None) -> None:
        path = self.root / STATS_PATH
        if not path.is_file():
            self.bad(f"{path}: missing")
            return
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self.bad(f"{path}: not valid JSON ({exc})")
            return
        if not isinstance(stats, dict):
            self.bad(f"{path}: expected an object {{feature: {{stat: values}}}}")
            return
        if features is None or not rows:
            return
        total = sum(r["length"] for r in rows)
        stale = []
        for k, f in features.items():
            if f.get("dtype") == "string":
                continue
            if k not in stats:
                self.bad(f"{path}: feature {k!r} has no stats")
                continue
            for s in REQUIRED_STAT_KEYS:
                if s not in stats[k]:
                    self.bad(f"{path}: {k}.{s} is missing")
                    continue
                shape = np.asarray(stats[k][s]).shape
                want = (1,) if s == "count" else (3, 1, 1) if f.get("dtype") in ("video", "image") \
                    else tuple(f["shape"])
                if shape != want:
                    self.bad(f"{path}: {k}.{s} has shape {list(shape)}; expected {list(want)}")
            count = stats[k].get("count")
            if f.get("dtype") not in ("video", "image") and isinstance(count, list) and count and count[0] != total:
                stale.append(f"{k} ({count[0]})")
        if stale:
            self.bad(f"{path}: count differs from the dataset's {total} frames for {', '.join(stale)}")


def _type_matches(t: pa.DataType, feature: dict[str, Any]) -> bool:
    """Whether a parquet column type stores `feature` (fixed-size lists as written by HF datasets, or lists)."""
    base = _NUMPY.get(feature["dtype"])
    if base is None:
        return True
    want = pa.from_numpy_dtype(base)
    shape = list(feature["shape"])
    if shape == [1]:
        return t == want
    if pa.types.is_fixed_size_list(t):
        return t.value_type == want and t.list_size == shape[0]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return t.value_type == want
    return False
