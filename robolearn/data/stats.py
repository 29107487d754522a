"""Feature statistics as LeRobot writes them (compute_stats.py): per episode, aggregated, and their on-disk forms.

Keys per feature: min, max, mean, std, count, and the quantiles q01, q10, q50, q90, q99. Vectors of shape (n,) give
arrays of shape (n,) (count: (1,), the number of frames). Images/videos give per-channel values of shape (3, 1, 1)
normalised to [0, 1]; robolearn computes them exactly from a 256-bin histogram of every (downsampled) frame.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["REQUIRED_STAT_KEYS", "QUANTILES", "vector_stats", "image_stats", "aggregate_stats", "stats_to_json",
           "stats_from_json", "flatten_stats", "unflatten_stats"]

REQUIRED_STAT_KEYS = ("min", "max", "mean", "std", "count")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one feature over an episode. values: [T] (shape-(1,) features) or [T, n]; results (1,) or (n,)."""
    x = np.asarray(values)
    if x.dtype == np.bool_:
        x = x.astype(np.float64)
    x = x.reshape(len(x), -1)
    xf = x.astype(np.float64)
    out = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": xf.mean(axis=0), "std": xf.std(axis=0),
           "count": np.array([len(x)], dtype=np.int64)}
    for key, q in QUANTILES.items():
        out[key] = np.quantile(xf, q, axis=0)
    return out


def image_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats (3, 1, 1) in [0, 1] from a [3, 256] histogram of uint8 pixel values over `frames` frames."""
    hist = np.asarray(histogram, dtype=np.float64)
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(axis=1)
    mean = (hist * levels).sum(axis=1) / total
    var = (hist * (levels - mean[:, None]) ** 2).sum(axis=1) / total
    present = hist > 0
    lo = np.array([levels[np.argmax(p)] for p in present])
    hi = np.array([levels[255 - np.argmax(p[::-1])] for p in present])
    cdf = np.cumsum(hist, axis=1) / total[:, None]

    def shaped(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).reshape(3, 1, 1)

    out = {"min": shaped(lo), "max": shaped(hi), "mean": shaped(mean), "std": shaped(np.sqrt(var)),
           "count": np.array([int(frames)], dtype=np.int64)}
    for key, q in QUANTILES.items():
        out[key] = shaped([levels[min(255, int(np.searchsorted(c, q - 1e-12)))] for c in cdf])
    return out


def aggregate_stats(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Stats over several episodes (LeRobot's aggregate_stats): min of mins, max of maxes, count-weighted mean,
    pooled variance, count-weighted quantiles (approximate, as LeRobot's)."""
    keys: list[str] = []
    for stats in stats_list:
        keys += [k for k in stats if k not in keys]
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        parts = [s[key] for s in stats_list if key in s]
        means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
        variances = np.stack([np.asarray(p["std"], dtype=np.float64) ** 2 for p in parts])
        counts = np.stack([np.asarray(p["count"]) for p in parts]).astype(np.int64)
        total = counts.sum(axis=0)
        weights = counts.astype(np.float64).reshape((len(parts),) + (1,) * (means.ndim - 1))
        mean = (means * weights).sum(axis=0) / total.sum()
        var = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total.sum()
        agg = {"min": np.min(np.stack([np.asarray(p["min"]) for p in parts]), axis=0),
               "max": np.max(np.stack([np.asarray(p["max"]) for p in parts]), axis=0),
               "mean": mean, "std": np.sqrt(var), "count": total}
        for q in QUANTILES:
            if all(q in p for p in parts):
                agg[q] = (np.stack([np.asarray(p[q], dtype=np.float64) for p in parts]) * weights).sum(0) / total.sum()
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> str:
    """meta/stats.json text: {feature: {stat: nested list}} (LeRobot's serialize_dict + write_json, indent 4)."""
    plain = {k: {s: np.asarray(v).tolist() for s, v in ft.items()} for k, ft in stats.items()}
    return json.dumps(plain, indent=4, ensure_ascii=False)


def stats_from_json(data: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Parsed meta/stats.json back to arrays."""
    return {k: {s: np.asarray(v) for s, v in ft.items()} for k, ft in data.items()}


def flatten_stats(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, list]:
    """Per-episode stats as meta/episodes columns: {"stats/<feature>/<stat>": list} (LeRobot's flatten_dict)."""
    return {f"stats/{k}/{s}": np.asarray(v).tolist() for k, ft in stats.items() for s, v in ft.items()}


def unflatten_stats(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The `stats/<feature>/<stat>` columns of one meta/episodes row back to {feature: {stat: array}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for column, value in row.items():
        if not column.startswith("stats/") or value is None:
            continue
        feature, _, stat = column[len("stats/"):].rpartition("/")
        out.setdefault(feature, {})[stat] = np.asarray(value)
    return out
