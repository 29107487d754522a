"""The learning core: the `Algorithm` interface and the one `Runner` every algorithm runs under (PPO and
distillation today), their networks (`models`), storage, evaluation and multi-process training."""

from robolearn.learn.algorithm import Algorithm
from robolearn.learn.runner import Runner, RunnerCfg, TrainingInterrupted

__all__ = ["Algorithm", "Runner", "RunnerCfg", "TrainingInterrupted"]
