"""rosbag2 (MCAP) export of recorded episodes, read back with rosbags' AnyReader: topics, types, counts, arrays,
images and timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from robolearn.data import DatasetReader, DatasetWriter, FeatureSpec, export_rosbag, validate_dataset

FPS = 20
H, W = 32, 48
FEATURES = {
    "observation.state": FeatureSpec("float32", (3,), ("shoulder", "elbow", "wrist")),
    "action": FeatureSpec("float32", (3,)),
    "teleop.twist": FeatureSpec("float64", (2,)),
    "next.done": FeatureSpec("bool", (1,)),
    "intervention": FeatureSpec("bool", (1,)),
    "observation.images.front": FeatureSpec("video", (H, W, 3)),
}
EXPECTED_TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/robolearn/action": "std_msgs/msg/Float32MultiArray",
    "/robolearn/teleop/twist": "std_msgs/msg/Float32MultiArray",
    "/robolearn/next/done": "std_msgs/msg/Bool",
    "/robolearn/intervention": "std_msgs/msg/Bool",
    "/camera/front/image_raw": "sensor_msgs/msg/Image",
}


def frames_of(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for t in range(n):
        img = np.empty((H, W, 3), np.uint8)
        for c in range(3):
            img[..., c] = (40 + 6 * t + 30 * c + (xx // 12) * 5 + (yy // 8) * 3) % 250
        out.append({"observation.state": rng.standard_normal(3).astype(np.float32),
                    "action": rng.standard_normal(3).astype(np.float32),
                    "teleop.twist": rng.standard_normal(2),
                    "next.done": np.array([t == n - 1]), "intervention": np.array([t % 3 == 0]),
                    "observation.images.front": img})
    return out


def record(root: Path, lengths: list[int], rosbag: bool) -> list[list[dict]]:
    episodes = []
    with DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="arm", rosbag=rosbag) as writer:
        for e, n in enumerate(lengths):
            episodes.append(frames_of(e, n))
            writer.start_episode("wave")
            for frame in episodes[-1]:
                writer.add_frame(frame)
            writer.save_episode()
    return episodes


def read_bag(path: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, object]]]]:
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    with AnyReader([path], default_typestore=typestore) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages: dict[str, list[tuple[int, object]]] = {t: [] for t in types}
        for conn, stamp, raw in reader.messages():
            messages[conn.topic].append((stamp, reader.deserialize(raw, conn.msgtype)))
    return types, messages


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[list[dict]]]:
    root = tmp_path_factory.mktemp("bag") / "ds"
    return root, record(root, [12, 16], rosbag=False)


def test_exported_episode_reads_back_with_every_topic_and_value(recorded, tmp_path):
    root, episodes = recorded
    frames = episodes[1]
    n = len(frames)
    bag = export_rosbag(root, 1, tmp_path / "bags")
    assert bag == tmp_path / "bags" / "episode_000001" and (bag / "metadata.yaml").is_file()
    assert [p.suffix for p in bag.iterdir() if p.suffix == ".mcap"] == [".mcap"]
    types, messages = read_bag(bag)
    assert types == EXPECTED_TOPICS
    assert {t: len(m) for t, m in messages.items()} == {t: n for t in EXPECTED_TOPICS}
    stamps = [int(round(t * 1e9 / FPS)) for t in range(n)]
    for topic, msgs in messages.items():
        assert [s for s, _ in msgs] == stamps, topic
    joints = [m for _, m in messages["/joint_states"]]
    assert list(joints[0].name) == ["shoulder", "elbow", "wrist"]
    assert np.array_equal(np.stack([j.position for j in joints]), np.stack([f["observation.state"] for f in frames]))
    assert [j.header.stamp.sec * 10**9 + j.header.stamp.nanosec for j in joints] == stamps
    action = np.stack([m.data for _, m in messages["/robolearn/action"]])
    assert action.dtype == np.float32 and np.array_equal(action, np.stack([f["action"] for f in frames]))
    twist = np.stack([m.data for _, m in messages["/robolearn/teleop/twist"]])
    np.testing.assert_allclose(twist, np.stack([f["teleop.twist"] for f in frames]), rtol=1e-6)
    assert [m.data for _, m in messages["/robolearn/next/done"]] == [t == n - 1 for t in range(n)]
    assert [m.data for _, m in messages["/robolearn/intervention"]] == [t % 3 == 0 for t in range(n)]
    images = [m for _, m in messages["/camera/front/image_raw"]]
    img = images[5]
    assert (img.encoding, img.height, img.width, img.step, img.header.frame_id) == ("rgb8", H, W, 3 * W, "front")
    decoded = DatasetReader(root).video_frames(1, "observation.images.front")
    assert np.array_equal(img.data.reshape(H, W, 3), decoded[5])  # the dataset's (decoded) frame, bit for bit
    written = frames[5]["observation.images.front"].astype(float)
    assert np.abs(img.data.reshape(H, W, 3).astype(float) - written).mean() < 4.0  # lossy codec


def test_writer_with_rosbag_writes_one_bag_per_saved_episode(tmp_path):
    root = tmp_path / "ds"
    record(root, [8, 10], rosbag=True)
    assert sorted(p.name for p in (root / "rosbag").iterdir()) == ["episode_000000", "episode_000001"]
    for e, n in enumerate([8, 10]):
        _, messages = read_bag(root / "rosbag" / f"episode_{e:06d}")
        assert {len(m) for m in messages.values()} == {n}
    assert validate_dataset(root) == []
    # a later session with rosbag=True exports the episodes that have no bag yet
    (root / "rosbag" / "episode_000000" / "metadata.yaml").unlink()
    for p in (root / "rosbag" / "episode_000000").iterdir():
        p.unlink()
    (root / "rosbag" / "episode_000000").rmdir()
    DatasetWriter(root, fps=FPS, features=FEATURES, robot_type="arm", rosbag=True).close()
    assert sorted(p.name for p in (root / "rosbag").iterdir()) == ["episode_000000", "episode_000001"]
