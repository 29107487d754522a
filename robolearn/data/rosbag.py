"""rosbag2 (MCAP) export of an episode with the `rosbags` library (no ROS install needed).

Topics, one message per frame, header and bag time = the frame's timestamp (frame_index / fps, from the episode
start):
  observation.state with names  -> sensor_msgs/msg/JointState on /joint_states (position)
  other float / int features     -> std_msgs/msg/Float32MultiArray on /robolearn/<feature, dots as slashes>
  bool features of shape (1,)    -> std_msgs/msg/Bool on /robolearn/<feature, dots as slashes>
  video features                 -> sensor_msgs/msg/Image (rgb8) on /camera/<camera>/image_raw, where <camera> is
                                    the key without its "observation.images." prefix
The writer's columns added to every frame (timestamp, frame_index, ...) are carried by the message times.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from robolearn.data.features import DEFAULT_FEATURES
from robolearn.errors import DatasetError

__all__ = ["ROS_DISTRO_STORE", "topic_of", "camera_name", "export_rosbag", "write_episode_bag"]

ROS_DISTRO_STORE = Stores.ROS2_HUMBLE
_BAG_VERSION = 8


def camera_name(key: str) -> str:
    """Camera name of a video feature: "observation.images.front" -> "front"."""
    name = key.removeprefix("observation.images.").removeprefix("observation.image.")
    return name.replace(".", "_") or "camera"


def topic_of(key: str, feature: dict[str, Any]) -> tuple[str, str]:
    """(topic, ROS 2 message type) of a feature in the exported bag."""
    if feature["dtype"] == "video":
        return f"/camera/{camera_name(key)}/image_raw", "sensor_msgs/msg/Image"
    if key == "observation.state" and feature.get("names"):
        return "/joint_states", "sensor_msgs/msg/JointState"
    topic = "/robolearn/" + key.replace(".", "/")
    if feature["dtype"] == "bool" and list(feature["shape"]) == [1]:
        return topic, "std_msgs/msg/Bool"
    return topic, "std_msgs/msg/Float32MultiArray"


def write_episode_bag(out_dir: str | Path, episode_index: int, fps: int, features: dict[str, dict],
                      columns: dict[str, np.ndarray], videos: dict[str, Path | np.ndarray]) -> Path:
    """Write out_dir/episode_NNNNNN/ (rosbag2, MCAP) from an episode's columns [T, ...] and its video frames
    (uint8 [T, H, W, 3], or the mp4 to decode). Written under a temporary name, then renamed into place."""
    from robolearn.data.video import decode_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"episode_{int(episode_index):06d}"
    final, scratch = out_dir / name, out_dir / f".partial-{name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    tmp = scratch / name  # the bag folder under its final name: its .mcap file is named after it
    frames = {k: decode_video(v, tolerance=0.5 / fps) if isinstance(v, (str, Path)) else v for k, v in videos.items()}
    n = len(columns["frame_index"]) if "frame_index" in columns else len(next(iter(columns.values())))
    for k, f in frames.items():
        if len(f) != n:
            raise DatasetError(f"rosbag export of episode {episode_index}: video {k} has {len(f)} frames, the "
                               f"episode {n}")

    ts = get_typestore(ROS_DISTRO_STORE)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    keys = [k for k in features if k not in DEFAULT_FEATURES and (k in columns or k in frames)]
    with Writer(tmp, version=_BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for k in keys:
            topic, msgtype = topic_of(k, features[k])
            conns[k] = (writer.add_connection(topic, msgtype, typestore=ts), msgtype)
        for t in range(n):
            stamp_ns = int(round(t * 1e9 / fps))  # = timestamp column, exactly (the column is float32)
            stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
            for k in keys:
                conn, msgtype = conns[k]
                feature = features[k]
                if msgtype == "sensor_msgs/msg/Image":
                    img = np.ascontiguousarray(frames[k][t], dtype=np.uint8)
                    msg = T[msgtype](header=Header(stamp=stamp, frame_id=camera_name(k)), height=img.shape[0],
                                     width=img.shape[1], encoding="rgb8", is_bigendian=0, step=img.shape[1] * 3,
                                     data=img.reshape(-1))
                elif msgtype == "sensor_msgs/msg/JointState":
                    msg = T[msgtype](header=Header(stamp=stamp, frame_id=""), name=list(feature["names"]),
                                     position=np.asarray(columns[k][t], dtype=np.float64).reshape(-1),
                                     velocity=np.zeros(0, np.float64), effort=np.zeros(0, np.float64))
                elif msgtype == "std_msgs/msg/Bool":
                    msg = T[msgtype](data=bool(np.asarray(columns[k][t]).reshape(-1)[0]))
                else:
                    values = np.asarray(columns[k][t], dtype=np.float32).reshape(-1)
                    dim = T["std_msgs/msg/MultiArrayDimension"](label=k, size=len(values), stride=len(values))
                    msg = T[msgtype](layout=T["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0), data=values)
                writer.write(conn, stamp_ns, ts.serialize_cdr(msg, msgtype))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final


def export_rosbag(root: str | Path, episode_index: int, out_dir: str | Path) -> Path:
    """Export episode `episode_index` of the dataset at `root` to out_dir/episode_NNNNNN/ (rosbag2, MCAP)."""
    from robolearn.data.lerobot_reader import DatasetReader

    reader = DatasetReader(root)
    columns = reader.episode(episode_index)
    videos = {k: reader.video_frames(episode_index, k) for k, f in reader.features.items() if f["dtype"] == "video"}
    return write_episode_bag(out_dir, episode_index, reader.fps, reader.features, columns, videos)
