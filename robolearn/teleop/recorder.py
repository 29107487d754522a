"""The recording loop: one simulated robot, a driver (scripted expert, teleop device, or a policy a human can take
over), the task's cameras, and a LeRobot v3 dataset written episode by episode (optionally rosbag2 too).

Per frame, at the task's control rate (30 Hz for panda-push / panda-lift):

    observation (state + camera frames) -> driver -> action -> task.step -> add_frame(observation, action, reward,
    done, success, intervention)

Episodes end `hold_after_success_s` after success (2 s: the robot is seen stopping at the goal; 0: never on success),
on the task's time limit, or on the operator's keys
(save, discard, re-record: discard and start over from the same scene). With `realtime` the loop is paced to the
fps; the live line shows the achieved rate and warns when it falls below 95% of the target.

Each episode's LeRobot task is the robolearn task's short `instruction` ("push the block to the goal");
`meta/robolearn.json` records which robolearn task, overrides and long description recorded which episodes (one
session per recording setup, see robolearn.data.sidecar), so that `robolearn dataset replay` rebuilds each
episode's own scene, also in a dataset that mixes tasks; LeRobot ignores it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.data.sidecar import SIDECAR, add_session, read_sidecar
from robolearn.errors import ConfigError
from robolearn.sim.tasks import make_task
from robolearn.sim.tasks.manipulation import ManipulationTask

__all__ = ["PolicyFn", "Driver", "ExpertDriver", "TeleopDriver", "leader_options", "InterventionDriver",
           "RecordReport", "Recorder", "SIDECAR", "read_sidecar", "task_language"]

PolicyFn = Callable[[ManipulationTask, dict[str, torch.Tensor]], torch.Tensor]  # (task, obs) -> actions [1, A]
RATE_WARN = 0.95  # warn when the achieved rate over the last second is below this fraction of the target
# Seconds an episode goes on once the task succeeds: the demos then show the robot stopping at the goal. On
# panda-push (100 expert demos, 4-frame diffusion policy, 200 scenes, two seeds) 2.0 s against 0.5 s raised the
# success from 90% to 96% and the block still at the goal at the episode's end from 46% to 77%: with 0.5 s the
# policy pushed on past the goal
HOLD_AFTER_SUCCESS_S = 2.0


@dataclass
class Step:
    """What a driver decided for one frame."""

    action: torch.Tensor  # [1, A]
    human: bool = False  # the executed action came from a person
    policy_action: torch.Tensor | None = None  # [1, A] what the policy proposed (interventions)
    events: list[str] = field(default_factory=list)


class Driver:
    """Decides each frame's action; `has_policy` drivers also record the policy's own proposal."""

    has_policy = False
    help = ""

    def act(self, task: ManipulationTask, obs: dict[str, torch.Tensor]) -> Step:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional
        """Release devices."""


class ExpertDriver(Driver):
    """The task's scripted expert (`robolearn record --expert`)."""

    def __init__(self, task: ManipulationTask) -> None:
        from robolearn.teleop.experts import make_expert

        self.expert = make_expert(task)

    def act(self, task: ManipulationTask, obs: dict[str, torch.Tensor]) -> Step:
        return Step(self.expert.act())


def command_to_action(task: ManipulationTask, cmd: Any) -> torch.Tensor | None:
    """A teleop command as the task's action [1, A], or None when it carries no usable command (a stale leader)."""
    grip = 2.0 * float(np.clip(cmd.gripper, 0.0, 1.0)) - 1.0
    if task.cfg.action_space == "joint":
        if cmd.joint_pos is None:
            return None
        arm = np.asarray(cmd.joint_pos, dtype=np.float32)  # the arm joints, in the task's order (leader_joints)
        return torch.from_numpy(np.append(arm, np.float32(grip))).unsqueeze(0)
    twist = np.clip(np.asarray(cmd.twist, dtype=np.float32), -1.0, 1.0)
    return torch.tensor([[twist[0], twist[1], twist[2], grip]], dtype=torch.float32)


def leader_options(task: ManipulationTask, leader_joints: list[str]) -> dict[str, Any]:
    """Leader-follower options for a task in `action_space: joint`: the leader reports the task's arm joints (by
    name) and, if it has one, the first finger joint as the gripper (open at the task's `finger_open`)."""
    arm = [task.robot.joint_names[i] for i in task._arm]
    finger = task.robot.joint_names[task._fingers[0]]
    options: dict[str, Any] = {"joint_names": arm}
    if finger in leader_joints:
        options.update(gripper_joint=finger, gripper_open=task.cfg.finger_open, gripper_closed=0.0)
    return options


def hold_action(task: ManipulationTask) -> torch.Tensor:
    """The action that keeps the arm where it is commanded now."""
    if task.cfg.action_space == "joint":
        return torch.cat([task.targets[:1, task._arm], (2.0 * task.grip[:1] - 1.0).unsqueeze(1)], dim=1)
    return torch.cat([torch.zeros(1, 3), (2.0 * task.grip[:1] - 1.0).unsqueeze(1)], dim=1)


class TeleopDriver(Driver):
    """A person drives through a teleop device; every frame is human."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.help = getattr(device, "HELP", "")

    def act(self, task: ManipulationTask, obs: dict[str, torch.Tensor]) -> Step:
        cmd = self.device.read()
        action = command_to_action(task, cmd)
        if action is None:
            return Step(hold_action(task), human=False, events=list(cmd.events))
        return Step(action, human=True, events=list(cmd.events))

    def close(self) -> None:
        self.device.close()


class InterventionDriver(Driver):
    """A policy drives; a person takes over with any device input (while it lasts) or the takeover toggle. The
    frames a person drove are flagged `intervention`; the policy's proposal is recorded on every frame."""

    has_policy = True

    def __init__(self, policy: PolicyFn, device: Any) -> None:
        self.policy, self.device = policy, device
        self.takeover = False
        self.help = getattr(device, "HELP", "") + " | takeover: any input, or the takeover toggle"

    def act(self, task: ManipulationTask, obs: dict[str, torch.Tensor]) -> Step:
        proposal = self.policy(task, obs).detach().float().reshape(1, -1)
        cmd = self.device.read()
        if "takeover" in cmd.events:
            self.takeover = not self.takeover
        human_action = command_to_action(task, cmd)
        human = human_action is not None and (cmd.active or self.takeover)
        action = human_action if human else proposal
        return Step(action, human=human, policy_action=proposal, events=[e for e in cmd.events if e != "takeover"])

    def close(self) -> None:
        self.device.close()


@dataclass
class RecordReport:
    episodes_saved: int = 0
    episodes_discarded: int = 0
    successes: int = 0
    frames: int = 0
    wall_time_s: float = 0.0
    target_fps: float = 0.0
    achieved_fps: float = 0.0  # frames / time spent in the loop (realtime: includes the pacing)
    worst_second_fps: float = 0.0  # lowest frame count over any whole second of recording
    late_frames: int = 0  # realtime: frames that started more than one period late
    loop_ms_p50: float = 0.0  # compute per frame (render + driver + physics + dataset), without pacing
    loop_ms_p99: float = 0.0
    interventions: int = 0  # frames driven by a person while a policy was in charge
    episodes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class Recorder:
    """Records `episodes` episodes of `task_name` into the LeRobot v3 dataset at `root` (new, or appended to).

    `driver_factory(task) -> Driver` builds the driver once the task exists."""

    def __init__(self, task_name: str, root: str | Path, driver_factory: Callable[[ManipulationTask], Driver], *,
                 seed: int = 0, overrides: dict[str, Any] | None = None, rosbag: bool = False,
                 realtime: bool = True, hold_after_success_s: float = HOLD_AFTER_SUCCESS_S,
                 language: str | None = None) -> None:
        from robolearn.data import DatasetWriter, FeatureSpec
        from robolearn.sim.render import CameraRig

        if not hold_after_success_s >= 0:
            raise ConfigError(f"--hold-after-success: seconds >= 0 expected (0: episodes run to the time limit), got "
                              f"{hold_after_success_s}")
        self.root = Path(root)
        self.task: ManipulationTask = make_task(task_name, 1, seed=seed, overrides=overrides)  # type: ignore
        if not isinstance(self.task, ManipulationTask):
            self.task.close()
            raise ConfigError(f"task {task_name!r} cannot be recorded: recording needs a manipulation task with "
                              f"cameras (panda-push, panda-lift)")
        if self.task.cfg.action_space == "ee_target":
            self.task.close()
            raise ConfigError(f"task {task_name}: action_space ee_target is not recorded: teleop devices and the "
                              "scripted experts give end-effector motions (action_space ee); a policy learns targets "
                              "from them (its run's task_overrides: {action_space: ee_target})")
        fps = 1.0 / self.task.dt
        if abs(fps - round(fps)) > 1e-6:
            raise ConfigError(f"task {task_name}: control rate {fps:.4f} Hz is not a whole number of frames per "
                              f"second (sim_dt * decimation = {self.task.dt})")
        self.fps = int(round(fps))
        self.realtime = realtime
        self.hold_steps = int(round(hold_after_success_s * self.fps))
        self.driver = driver_factory(self.task)
        self.rig = CameraRig(self.task)
        features = {name: FeatureSpec(dtype, shape, names)
                    for name, (dtype, shape, names) in self.task.recording_features().items()}
        for name, cam in self.rig.cameras.items():
            features[f"observation.images.{name}"] = FeatureSpec("video", (cam.height, cam.width, 3))
        if self.driver.has_policy:
            features["policy_action"] = FeatureSpec("float32", (self.task.num_actions,),
                                                    tuple(self.task.action_names()))
        for name in ("next.reward",):
            features[name] = FeatureSpec("float32", (1,))
        for name in ("next.done", "next.success", "intervention"):
            features[name] = FeatureSpec("bool", (1,))
        self.features = features
        self.writer = DatasetWriter(self.root, fps=self.fps, features=features, robot_type=self.task.robot_cfg.name,
                                    rosbag=rosbag)
        self.language = language or task_language(task_name)
        try:
            from robolearn.data.lerobot_reader import read_episodes_meta
            from robolearn.sim.tasks import task_description

            session = {"task": task_name, "task_overrides": overrides or {}, "instruction": self.language,
                       "description": task_description(task_name)}
            self.sessions = add_session(self.root, read_episodes_meta(self.root), session,
                                        {"fps": self.fps, "cameras": list(self.rig.cameras),
                                         "robot": self.task.robot_cfg.name})
        except BaseException:
            self.close()
            raise
        self.report = RecordReport(target_fps=float(self.fps))

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self, episodes: int, *, on_status: Callable[[str], None] | None = None,
            on_episode: Callable[[dict[str, Any]], None] | None = None) -> RecordReport:
        task, writer, rep = self.task, self.writer, self.report
        period = 1.0 / self.fps
        frame_starts: deque[float] = deque()
        loop_ms: list[float] = []
        start = time.perf_counter()
        next_tick = start
        obs = task.reset()
        scene = task.scene(0)
        writer.start_episode(self.language)
        success_steps, episode_success, quit_requested, open_episode = 0, False, False, True
        per_second: dict[int, int] = {}
        while rep.episodes_saved < episodes and not quit_requested:
            if self.realtime:
                now = time.perf_counter()
                if now < next_tick:
                    time.sleep(next_tick - now)
                elif now - next_tick > period:
                    rep.late_frames += 1
                    next_tick = now  # do not try to catch up with a burst of frames
            t0 = time.perf_counter()
            frame_starts.append(t0)
            while frame_starts and t0 - frame_starts[0] > 1.0:
                frame_starts.popleft()
            second = int(t0 - start)
            per_second[second] = per_second.get(second, 0) + 1
            frame = task.recording_frame(0)
            for name, image in self.rig.frames(task, 0).items():
                frame[f"observation.images.{name}"] = image
            step = self.driver.act(task, obs)
            obs, reward, _, terminated, truncated, info = task.step(step.action)
            ended = bool(info["ended"]["mask"][0])  # the env has auto-reset: `task` already shows the next episode
            success = bool(info["ended"]["success"][0] > 0.5) if ended else bool(task.success()[0])
            success_steps = success_steps + 1 if success else 0
            episode_success |= success
            done = ended or (self.hold_steps > 0 and success_steps >= self.hold_steps) or "save" in step.events
            frame["action"] = step.action[0].numpy().astype(np.float32)
            if step.policy_action is not None:
                frame["policy_action"] = step.policy_action[0].numpy().astype(np.float32)
            frame["next.reward"] = np.array([float(reward[0])], dtype=np.float32)
            frame["next.done"] = np.array([done], dtype=bool)
            frame["next.success"] = np.array([success], dtype=bool)
            frame["intervention"] = np.array([step.human and self.driver.has_policy], dtype=bool)
            rep.interventions += int(step.human and self.driver.has_policy)
            writer.add_frame(frame)
            events = step.events
            if "quit" in events:
                quit_requested = True
            if done:
                frames = writer.episode_frames
                index = writer.save_episode()
                rep.episodes_saved += 1
                rep.successes += int(episode_success)
                record = {"episode_index": index, "frames": frames, "success": episode_success,
                          "terminated": bool(terminated[0])}
                rep.episodes.append(record)
                if on_episode is not None:
                    on_episode(record)
                obs, scene = self._new_episode(ended)
                success_steps, episode_success, open_episode = 0, False, False
            elif "discard" in events or "rerecord" in events:
                writer.discard_episode()
                rep.episodes_discarded += 1
                if "rerecord" in events:  # the same scene again
                    task.restart(*scene)
                    obs = task.observations()
                else:
                    obs, scene = self._new_episode(ended)
                success_steps, episode_success, open_episode = 0, False, False
            if rep.episodes_saved < episodes and not quit_requested and not open_episode:
                writer.start_episode(self.language)
                open_episode = True
            rep.frames += 1
            loop_ms.append((time.perf_counter() - t0) * 1000.0)
            if on_status is not None and rep.frames % max(1, self.fps // 4) == 0:
                on_status(self._status(len(frame_starts), episodes, step))
            next_tick += period
        rep.wall_time_s = time.perf_counter() - start
        rep.achieved_fps = rep.frames / max(rep.wall_time_s, 1e-9)
        whole = [n for s, n in per_second.items() if s < int(rep.wall_time_s)]  # seconds fully inside the run
        rep.worst_second_fps = float(min(whole)) if whole else rep.achieved_fps
        if loop_ms:
            rep.loop_ms_p50 = float(np.percentile(loop_ms, 50))
            rep.loop_ms_p99 = float(np.percentile(loop_ms, 99))
        return rep

    def _new_episode(self, already_reset: bool) -> tuple[dict[str, torch.Tensor], tuple]:
        obs = self.task.observations() if already_reset else self.task.reset()
        return obs, self.task.scene(0)

    def _status(self, recent_frames: int, episodes: int, step: Step) -> str:
        rep, w = self.report, self.writer
        rate = float(recent_frames)
        line = (f"episode {rep.episodes_saved + 1}/{episodes}  frame {w.episode_frames:4d}  "
                f"{rate:5.1f} fps (target {self.fps})  saved {rep.episodes_saved}  discarded {rep.episodes_discarded}")
        if step.human and self.driver.has_policy:
            line += "  [HUMAN]"
        if self.realtime and rate < RATE_WARN * self.fps and rep.frames > self.fps:
            line += f"  [yellow]WARNING: below {RATE_WARN:.0%} of the target rate[/]"
        return line

    def close(self) -> None:
        self.writer.close()
        self.driver.close()
        self.rig.close()
        self.task.close()


def task_language(task_name: str) -> str:
    """The episodes' language instruction (LeRobot's `task`): the task's short `instruction` (its YAML), else its
    description, else its name."""
    from robolearn.sim.tasks import task_description, task_instruction

    return task_instruction(task_name) or task_description(task_name) or task_name
