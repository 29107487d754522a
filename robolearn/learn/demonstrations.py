"""Demonstrations for learning from a dataset: the (observation, action) episodes of a robolearn/LeRobot v3 dataset
and the min-max normalizers from its `meta/stats.json`, with a one-line DatasetError for each way a dataset can be
unfit (a missing feature, NaNs, a constant action dimension, another task than the one being trained)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.features import STATS_PATH
from robolearn.data.lerobot_reader import DatasetReader
from robolearn.data.sidecar import SIDECAR, episode_session
from robolearn.data.stats import stats_from_json
from robolearn.errors import ConfigError, DatasetError
from robolearn.learn.diffusion import MinMaxNormalizer

__all__ = ["Demonstrations", "load_demonstrations", "decode_episodes", "obs_key_columns"]


def obs_key_columns(key: str, names: Sequence[str] | None, where: str) -> tuple[str, list[int] | None]:
    """An observation key -> (feature, the columns it takes, None for all). `feature` takes the whole feature,
    `feature[name,name]` the columns of those names (as the feature's `names` list them), in that order: an image
    policy of panda-push reads the goal, `observation.environment_state[goal_x,goal_y,goal_z]`, and sees the block
    only through the camera. `names`: the feature's column names (None: unknown). `where`: the error's origin."""
    if not key.endswith("]"):
        return key, None
    feature, _, inner = key[:-1].partition("[")
    wanted = [n.strip() for n in inner.split(",") if n.strip()]
    if not feature or not wanted:
        raise ConfigError(f"{where}: observation key {key!r}: expected FEATURE or FEATURE[name,name,...]")
    known = list(names or [])
    missing = [n for n in wanted if n not in known]
    if missing:
        raise ConfigError(f"{where}: observation key {key!r}: {feature} has no column {missing[0]!r} (its columns: "
                          f"{', '.join(known) or 'unnamed'})")
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"{where}: observation key {key!r} names a column twice")
    return feature, [known.index(n) for n in wanted]


def _feature_names(feature: dict[str, Any]) -> list[str] | None:
    names = feature.get("names")
    names = names.get("motors", names) if isinstance(names, dict) else names
    return list(names) if isinstance(names, list | tuple) else None


@dataclass
class Demonstrations:
    episodes: list[tuple[np.ndarray, np.ndarray]]  # per episode: observations [T, O], actions [T, A]
    obs_norm: MinMaxNormalizer
    action_norm: MinMaxNormalizer
    fps: int
    task: str | None  # the robolearn task that recorded them (meta/robolearn.json), None for a foreign dataset
    images: list[np.ndarray] | None = None  # per episode [T, K, 3, H, W] uint8: the image_keys' frames, resized

    @property
    def obs_dim(self) -> int:
        return self.episodes[0][0].shape[1]

    @property
    def action_dim(self) -> int:
        return self.episodes[0][1].shape[1]

    @property
    def frames(self) -> int:
        return sum(len(o) for o, _ in self.episodes)


def load_demonstrations(root: str | Path, *, task: str | None = None,
                        obs_keys: Sequence[str] = ("observation.state",), action_key: str = "action",
                        max_episodes: int | None = None, image_keys: Sequence[str] = (),
                        image_size: Sequence[int] = (96, 128), ee_targets: Any = None,
                        console: Any = None) -> Demonstrations:
    """Episodes 0 .. max_episodes - 1 of the dataset at `root`; the observation is the features `obs_keys`
    side by side (panda-push's state policy: joints, end effector, block and goal). `task`: the robolearn task
    being trained; every episode must have been recorded on it. `image_keys`: camera (video) features, decoded
    by `decode_episodes` and resized to `image_size`. `ee_targets` (a `ManipulationCfg` with `action_space:
    ee_target`): the recorded end-effector motions become the commanded positions they lead to
    (`ee_targets_from_motions`, from each episode's first `observation.ee_pos`), normalized by their own min/max."""
    reader = DatasetReader(root)
    obs_keys, image_keys = list(obs_keys), list(image_keys)
    columns: dict[str, tuple[str, list[int] | None]] = {action_key: (action_key, None)}
    for key in (*obs_keys, action_key, *image_keys):
        feature = key.partition("[")[0] if key in obs_keys else key
        if feature not in reader.features:
            raise DatasetError(f"{reader.root}/meta/info.json: no feature {feature!r} (features: "
                               f"{sorted(reader.features)})")
        if key in obs_keys:
            try:
                columns[key] = obs_key_columns(key, _feature_names(reader.features[feature]),
                                               f"{reader.root}/meta/info.json")
            except ConfigError as exc:
                raise DatasetError(str(exc)) from None
    for key in image_keys:
        if reader.features[key].get("dtype") != "video":
            kind = reader.features[key].get("dtype")
            raise DatasetError(f"{reader.root}/meta/info.json: image key {key!r} is a {kind} feature, not a video "
                               f"(camera) feature")
    if ee_targets is not None:
        names = _feature_names(reader.features[action_key])
        if list(names or []) != ["dx", "dy", "dz", "grip"]:
            raise DatasetError(f"{reader.root}/meta/info.json: {action_key} is {names}, not end-effector motions "
                               "[dx, dy, dz, grip]: only those convert to end-effector targets (action_space "
                               "ee_target)")
        if "observation.ee_pos" not in reader.features:
            raise DatasetError(f"{reader.root}/meta/info.json: no feature 'observation.ee_pos' (the end effector's "
                               "start, from which the motions become targets)")
    count = reader.num_episodes if max_episodes is None else min(max_episodes, reader.num_episodes)
    if count < 1:
        raise DatasetError(f"{reader.root}: no episodes")
    recorded_on = None
    if (reader.root / SIDECAR).is_file():  # recorded by robolearn: the task of every episode is known
        rows = [reader.episode_meta(i) for i in range(reader.num_episodes)]
        tasks = {episode_session(reader.root, rows, i)["task"] for i in range(count)}
        if task is not None and tasks != {task}:
            raise DatasetError(f"{reader.root / SIDECAR}: episodes recorded on {sorted(tasks)}, not on "
                               f"{task!r}")
        recorded_on = tasks.pop() if len(tasks) == 1 else None
    episodes = []
    for i in range(count):
        data = reader.episode(i)
        parts = {}
        for key in (*obs_keys, action_key):
            feature, cols = columns[key]
            x = np.array(data[feature], dtype=np.float32).reshape(len(data[feature]), -1)  # a writable copy
            x = x if cols is None else x[:, cols]
            bad = ~np.isfinite(x)
            if bad.any():
                frame, dim = np.argwhere(bad)[0]
                raise DatasetError(f"{reader.root}: {key} of episode {i} is not finite (frame {frame}, dimension "
                                   f"{dim})")
            parts[key] = x
        if ee_targets is not None:
            from robolearn.sim.tasks.manipulation import ee_targets_from_motions

            start = np.asarray(data["observation.ee_pos"][0], dtype=np.float64)
            parts[action_key] = ee_targets_from_motions(start, parts[action_key], ee_targets)
        episodes.append((np.concatenate([parts[k] for k in obs_keys], axis=1), parts[action_key]))
    stats = _stats(reader.root)
    bounds = {}
    for key in (*obs_keys, action_key):
        feature, cols = columns[key]
        if feature not in stats or "min" not in stats[feature] or "max" not in stats[feature]:
            raise DatasetError(f"{reader.root / STATS_PATH}: no min/max for {feature!r}")
        low, high = (stats[feature][b].astype(np.float64).reshape(-1) for b in ("min", "max"))
        width = np.array(data[feature][0]).size
        if len(low) != width or len(high) != width:
            raise DatasetError(f"{reader.root / STATS_PATH}: {feature} has {len(low)} dimensions, the data {width}")
        bounds[key] = (low, high) if cols is None else (low[cols], high[cols])
    if ee_targets is not None:  # derived actions: their own range
        actions = np.concatenate([a for _, a in episodes])
        bounds[action_key] = (actions.min(axis=0).astype(np.float64), actions.max(axis=0).astype(np.float64))
    where = str(reader.root / STATS_PATH)
    try:
        obs_norm = MinMaxNormalizer(np.concatenate([bounds[k][0] for k in obs_keys]),
                                    np.concatenate([bounds[k][1] for k in obs_keys]),
                                    name=f"{where}: {'+'.join(obs_keys)}")
        action_norm = MinMaxNormalizer(*bounds[action_key], name=f"{where}: {action_key}", constant_ok=False)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    images = decode_episodes(reader, count, image_keys, image_size, console=console) if image_keys else None
    return Demonstrations(episodes, obs_norm, action_norm, reader.fps, recorded_on, images)


def decode_episodes(reader: DatasetReader, count: int, keys: Sequence[str], size: Sequence[int], *,
                    console: Any = None, workers: int | None = None) -> list[np.ndarray]:
    """[T, K, 3, H, W] uint8 per episode: the video features `keys` of episodes 0 .. count - 1, decoded by a pool of
    threads (PyAV decodes without the GIL) and resized to `size`, with a progress bar; kept in memory (and on the
    training device) so no batch waits for a decoder: 8,609 frames of one camera at 96 x 128 take 317 MB."""
    from rich.progress import Progress

    from robolearn.learn.models.image_encoder import resize_frames

    def one(index: int) -> np.ndarray:
        per_camera = [resize_frames(reader.video_frames(index, key), size).numpy() for key in keys]
        return np.stack(per_camera, axis=1)

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    out: list[np.ndarray | None] = [None] * count
    with Progress(console=console, transient=True) as bar, ThreadPoolExecutor(workers) as pool:
        job = bar.add_task(f"decoding {count} episodes of {', '.join(keys)}", total=count)
        futures = {pool.submit(one, i): i for i in range(count)}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            bar.advance(job)
    return out  # type: ignore[return-value]


def _stats(root: Path) -> dict[str, dict[str, np.ndarray]]:
    path = root / STATS_PATH
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (min/max of observations and actions)") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DatasetError(f"{path}: expected an object {{feature: {{stat: values}}}}")
    return stats_from_json(data)
