"""Feature specs and the LeRobot v3.0 on-disk layout: path templates, default per-frame columns, arrow column types.

Everything here mirrors LeRobot's `datasets/utils.py` (DEFAULT_FEATURES, the path templates, create_empty_dataset_info)
so that a folder written by robolearn loads with `LeRobotDataset` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from robolearn.errors import DatasetError

__all__ = [
    "CODEBASE_VERSION",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DATA_FILE_SIZE_IN_MB",
    "DEFAULT_VIDEO_FILE_SIZE_IN_MB",
    "INFO_PATH",
    "STATS_PATH",
    "TASKS_PATH",
    "EPISODES_DIR",
    "EPISODES_PATH",
    "DATA_PATH",
    "VIDEO_PATH",
    "DEFAULT_FEATURES",
    "FEATURE_DTYPES",
    "VIDEO_NAMES",
    "FeatureSpec",
    "feature_dicts",
    "video_keys",
    "data_keys",
    "arrow_type",
    "data_schema",
    "chunk_file_of",
    "next_chunk_file",
    "episode_file",
]

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100  # upper bound per data file (robolearn writes one file per episode)
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200  # upper bound per video file (robolearn writes one file per episode)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + _CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"

# Columns the writer adds to every frame row (LeRobot DEFAULT_FEATURES), in LeRobot's order.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

FEATURE_DTYPES = ("float32", "float64", "int64", "bool", "video")
VIDEO_NAMES = ("height", "width", "channels")
_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


@dataclass(frozen=True)
class FeatureSpec:
    """One per-frame feature the caller provides to `DatasetWriter.add_frame`.

    dtype: "float32" | "float64" | "int64" | "bool" (a vector of shape (n,), stored as one parquet column) or
    "video" (uint8 RGB frames of shape (H, W, 3), stored as an mp4 per episode). names: one per vector element (e.g.
    joint names), or None; for video always ("height", "width", "channels").
    """

    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else (self.shape,)
        object.__setattr__(self, "shape", shape)
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.dtype not in FEATURE_DTYPES:
            raise DatasetError(f"feature dtype {self.dtype!r} is not supported; expected one of "
                               f"{', '.join(FEATURE_DTYPES)}")
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape):
            raise DatasetError(f"feature shape {shape!r} must be a tuple of positive integers")
        if self.dtype == "video":
            if len(shape) != 3 or shape[2] != 3:
                raise DatasetError(f"video feature shape {shape!r} must be (height, width, 3)")
            if self.names is not None and self.names != VIDEO_NAMES:
                raise DatasetError(f"video feature names must be {VIDEO_NAMES} or None, got {self.names!r}")
        else:
            if len(shape) != 1:
                raise DatasetError(f"feature shape {shape!r}: only vectors (n,) and videos (H, W, 3) are supported")
            if self.names is not None and len(self.names) != shape[0]:
                raise DatasetError(f"feature of shape {shape!r} has {len(self.names)} names; expected {shape[0]}")

    def to_dict(self) -> dict[str, Any]:
        """LeRobot's feature dict {"dtype", "shape", "names"} (the video "info" block is added by the writer)."""
        if self.dtype == "video":
            return {"dtype": "video", "shape": list(self.shape), "names": list(VIDEO_NAMES)}
        return {"dtype": self.dtype, "shape": list(self.shape),
                "names": list(self.names) if self.names is not None else None}


def feature_dicts(features: dict[str, FeatureSpec], video_info: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """info.json `features`: the caller's features (video ones with their `info` block), then DEFAULT_FEATURES."""
    if not isinstance(features, dict) or not features:
        raise DatasetError("features must be a non-empty dict {name: FeatureSpec}")
    out: dict[str, dict] = {}
    for key, spec in features.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise DatasetError(f"feature name {key!r} must be a non-empty string without '/' (LeRobot rule)")
        if key in DEFAULT_FEATURES:
            raise DatasetError(f"feature name {key!r} is reserved: the writer adds it to every frame")
        if not isinstance(spec, FeatureSpec):
            raise DatasetError(f"feature {key!r}: expected a FeatureSpec, got {type(spec).__name__}")
        out[key] = spec.to_dict()
        if spec.dtype == "video":
            out[key]["info"] = video_info[key]
    out.update({k: {**v, "shape": list(v["shape"])} for k, v in DEFAULT_FEATURES.items()})
    return out


def video_keys(features: dict[str, dict]) -> list[str]:
    """Names of the video features of an info.json `features` dict."""
    return [k for k, f in features.items() if f.get("dtype") == "video"]


def data_keys(features: dict[str, dict]) -> list[str]:
    """Names of the columns of a data parquet file: every non-video feature, in info.json order."""
    return [k for k, f in features.items() if f.get("dtype") != "video"]


def arrow_type(feature: dict[str, Any]) -> pa.DataType:
    """Parquet column type of a feature, as HF `datasets` writes it: shape (1,) -> scalar, (n,) -> fixed list."""
    base = _ARROW.get(feature["dtype"])
    if base is None:
        raise DatasetError(f"feature dtype {feature['dtype']!r} has no parquet column type")
    shape = list(feature["shape"])
    if shape == [1]:
        return base
    if len(shape) != 1:
        raise DatasetError(f"feature shape {shape}: only vectors are stored in parquet columns")
    return pa.list_(base, shape[0])


def data_schema(features: dict[str, dict]) -> pa.Schema:
    """Arrow schema of a data file: one column per non-video feature, in info.json order."""
    return pa.schema([pa.field(k, arrow_type(features[k])) for k in data_keys(features)])


def chunk_file_of(episode_index: int, chunks_size: int) -> tuple[int, int]:
    """(chunk_index, file_index) of an episode that has a file of its own: file = episode % chunks_size."""
    return episode_index // chunks_size, episode_index % chunks_size


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The file after (chunk, file): LeRobot's update_chunk_file_indices."""
    return (chunk_index + 1, 0) if file_index >= chunks_size - 1 else (chunk_index, file_index + 1)


def episode_file(root: Path, template: str, chunk_index: int, file_index: int, video_key: str | None = None) -> Path:
    """Path of a data / video / episodes-metadata file from its template and indices."""
    kwargs: dict[str, Any] = {"chunk_index": int(chunk_index), "file_index": int(file_index)}
    if video_key is not None:
        kwargs["video_key"] = video_key
    return root / template.format(**kwargs)
