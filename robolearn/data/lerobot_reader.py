"""Reading LeRobot v3.0 datasets: the metadata files, an episode's columns and its decoded video frames.

The reader follows the chunk/file indices and the dataset_from_index / from_timestamp ranges of meta/episodes, so it
reads robolearn's one-file-per-episode layout and LeRobot's concatenated files alike.
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
    EPISODES_DIR,
    INFO_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    data_keys,
    episode_file,
)
from robolearn.data.video import decode_video
from robolearn.errors import DatasetError

__all__ = ["DatasetReader", "describe_folder", "read_info", "read_tasks", "read_episodes_meta", "column_to_numpy"]


def describe_folder(root: Path) -> str | None:
    """Why `root` is not a LeRobot v3.0 folder, in words, or None when it has a meta/info.json to read."""
    if not root.exists():
        return f"{root}: no such folder"
    if not root.is_dir():
        return f"{root}: not a folder"
    if (root / INFO_PATH).is_file():
        return None
    if (root / "meta_data" / "info.json").is_file():
        return (f"{root}: a LeRobot v1.x dataset (meta_data/info.json); expected a LeRobot {CODEBASE_VERSION} "
                f"dataset with {INFO_PATH}")
    return (f"{root}: not a LeRobot dataset: {INFO_PATH} is missing (expected a LeRobot {CODEBASE_VERSION} folder "
            f"with {INFO_PATH}, {TASKS_PATH}, {EPISODES_DIR}/ and data/)")


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json of a LeRobot v3.0 dataset; DatasetError for a missing, foreign, unparseable or other-version
    folder, saying what it is and what was expected."""
    problem = describe_folder(root)
    if problem is not None:
        raise DatasetError(problem)
    path = root / INFO_PATH
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise DatasetError(version_message(path, version))
    for key in ("fps", "features"):
        if key not in info:
            raise DatasetError(f"{path}: required key {key!r} is missing")
    return info


def version_message(path: Path, version: Any) -> str:
    """The message for an info.json whose codebase_version is not v3.0."""
    if isinstance(version, str) and version.startswith("v2"):
        return (f"{path}: codebase_version is {version!r}: a LeRobot {version} dataset (per-episode files, "
                f"meta/episodes.jsonl); expected {CODEBASE_VERSION!r} (convert it with LeRobot's "
                f"convert_dataset_v21_to_v30)")
    return f"{path}: codebase_version is {version!r}; expected {CODEBASE_VERSION!r}"


def read_tasks(root: Path) -> list[str]:
    """Task strings ordered by task_index, from meta/tasks.parquet (index = task string, column task_index)."""
    path = root / TASKS_PATH
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: unreadable parquet ({exc})") from None
    if "task_index" not in table.column_names:
        raise DatasetError(f"{path}: column 'task_index' is missing")
    task_column = next((c for c in ("__index_level_0__", "task") if c in table.column_names), None)
    if task_column is None:
        raise DatasetError(f"{path}: no task column (the pandas index '__index_level_0__' or 'task')")
    indices = table.column("task_index").to_pylist()
    names = table.column(task_column).to_pylist()
    if sorted(indices) != list(range(len(indices))):
        raise DatasetError(f"{path}: task_index values {sorted(indices)} are not 0..{len(indices) - 1}")
    out = [""] * len(indices)
    for i, name in zip(indices, names, strict=True):
        out[i] = name
    return out


def read_episodes_meta(root: Path) -> list[dict[str, Any]]:
    """Rows of every meta/episodes/chunk-*/file-*.parquet, sorted by episode_index (DatasetError if unreadable)."""
    rows: list[dict[str, Any]] = []
    for path in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        try:
            rows += pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"{path}: unreadable parquet ({exc})") from None
    for row in rows:
        if "episode_index" not in row:
            raise DatasetError(f"{root / EPISODES_DIR}: a row has no 'episode_index' column")
    rows.sort(key=lambda r: r["episode_index"])
    return rows


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A parquet column as [T] (scalars) or [T, n] (fixed or variable lists of equal length); other types (LeRobot
    image structs, strings) as an object array [T]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_fixed_size_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
                                           or pa.types.is_boolean(t.value_type)):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), t.list_size)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return column.to_numpy(zero_copy_only=False)
    values = column.to_pylist()
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and len({len(v) for v in values if v is not None}) <= 1:
        return np.array(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class DatasetReader:
    """Read access to the LeRobot v3.0 dataset at `root`.

    episode(i) -> {column: [T, ...]} for every non-video feature (shape-(1,) features as [T]);
    video_frames(i, key) -> uint8 [T, H, W, 3]; episode_meta(i) -> its meta/episodes row.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.info: dict[str, Any] = read_info(self.root)
        self.fps: int = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.tasks: list[str] = read_tasks(self.root)
        self._episodes = read_episodes_meta(self.root)
        for i, row in enumerate(self._episodes):
            if row["episode_index"] != i:
                raise DatasetError(f"{self.root / EPISODES_DIR}: episode indices are not contiguous: expected {i}, "
                                   f"found {row['episode_index']}")

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return int(sum(row["length"] for row in self._episodes))

    def episode_meta(self, index: int) -> dict[str, Any]:
        """The meta/episodes row of episode `index` (a copy)."""
        return dict(self._row(index))

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """Every non-video column of episode `index`, each [T, ...] in frame order."""
        row = self._row(index)
        path = episode_file(self.root, self.info.get("data_path") or DATA_PATH, row["data/chunk_index"],
                            row["data/file_index"])
        keys = data_keys(self.features)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise DatasetError(f"{path}: missing (data of episode {index})") from None
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"{path}: unreadable parquet ({exc})") from None
        missing = [k for k in keys if k not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: columns {missing} of info.json features are missing")
        ep = column_to_numpy(table.column("episode_index"))
        selected = np.flatnonzero(ep == index)
        if len(selected) != row["length"]:
            raise DatasetError(f"{path}: episode {index} has {len(selected)} rows; meta/episodes says {row['length']}")
        table = table.take(pa.array(selected))
        return {k: column_to_numpy(table.column(k)) for k in keys}

    def video_frames(self, index: int, key: str) -> np.ndarray:
        """Decoded frames [T, H, W, 3] uint8 of video feature `key` in episode `index`."""
        if self.features.get(key, {}).get("dtype") != "video":
            videos = [k for k, f in self.features.items() if f.get("dtype") == "video"]
            raise DatasetError(f"{self.root}: {key!r} is not a video feature; video features: {videos}")
        row = self._row(index)
        path = episode_file(self.root, self.info.get("video_path") or VIDEO_PATH, row[f"videos/{key}/chunk_index"],
                            row[f"videos/{key}/file_index"], video_key=key)
        if not path.is_file():
            raise DatasetError(f"{path}: missing (video {key} of episode {index})")
        frames = decode_video(path, float(row[f"videos/{key}/from_timestamp"]),
                              float(row[f"videos/{key}/to_timestamp"]), tolerance=0.5 / self.fps)
        if len(frames) != row["length"]:
            raise DatasetError(f"{path}: {len(frames)} frames of episode {index} decode; the episode has "
                               f"{row['length']}")
        return frames

    def _row(self, index: int) -> dict[str, Any]:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self._episodes):
            raise DatasetError(f"{self.root}: episode {index} does not exist; the dataset has "
                               f"{len(self._episodes)} episodes")
        return self._episodes[int(index)]
