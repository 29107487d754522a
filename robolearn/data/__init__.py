"""LeRobot v3.0 datasets: crash-safe episode writer, reader, validator, stats and rosbag2 (MCAP) export."""

from robolearn.data.features import CODEBASE_VERSION, DEFAULT_FEATURES, FeatureSpec
from robolearn.data.lerobot_reader import DatasetReader
from robolearn.data.lerobot_writer import DatasetWriter
from robolearn.data.rosbag import export_rosbag
from robolearn.data.validate import validate_dataset

__all__ = [
    "CODEBASE_VERSION",
    "DEFAULT_FEATURES",
    "FeatureSpec",
    "DatasetWriter",
    "DatasetReader",
    "validate_dataset",
    "export_rosbag",
]
