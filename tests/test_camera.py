"""Real cameras through OpenCV (`robolearn teleop --camera opencv:...`): a video file stands in for a USB device
(the same cv2.VideoCapture, frames paced at the file's rate, its end a disconnect). Real files, a real gamepad FIFO,
the Panda's MuJoCo twin and a real subprocess for the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from robolearn.teleop.camera import CameraError, OpenCVCamera, parse_camera  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FPS = 30


def _video(path: Path, frames: int, size=(240, 320)) -> Path:
    """An h264 file whose frame i is red (R = 8 i) with a white square moving right by one pixel per frame."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=FPS, codec="libx264", quality=8, macro_block_size=1) as writer:
        for i in range(frames):
            image = np.zeros((*size, 3), np.uint8)
            image[..., 0] = min(255, 8 * i)
            image[40:60, 40 + i:60 + i] = 255
            writer.append_data(image)
    return path


def test_camera_specs_and_their_errors() -> None:
    assert parse_camera("opencv:0").source == 0
    assert parse_camera("opencv:/dev/video2").source == "/dev/video2"
    spec = parse_camera("opencv:demo.mp4", size="120x160", fps=15)
    assert (spec.source, spec.height, spec.width, spec.fps) == ("demo.mp4", 120, 160, 15)
    assert spec.max_age_s == 0.5 and parse_camera("opencv:0", fps=2).max_age_s == 1.5  # 3 frame periods
    for text, kwargs, message in [
        ("usb:0", {}, "--camera 'usb:0': expected opencv:<index, device path or video file>"),
        ("opencv:", {}, "expected opencv:"),
        ("opencv:0", {"size": "320"}, "--camera-size '320': expected HEIGHTxWIDTH"),
        ("opencv:0", {"fps": 0.0}, "--camera-fps: expected frames per second > 0"),
    ]:
        with pytest.raises(CameraError, match=message.replace("(", r"\(").replace("[", r"\[")):
            parse_camera(text, **kwargs)
    with pytest.raises(CameraError, match="opencv:/nowhere/cam.mp4: cannot open \\(no such video file\\)"):
        OpenCVCamera(parse_camera("opencv:/nowhere/cam.mp4"))


def test_frames_are_rgb_resized_paced_and_the_end_is_a_disconnect(tmp_path) -> None:
    video = _video(tmp_path / "cam.mp4", 24)
    with OpenCVCamera(parse_camera(f"opencv:{video}", size="120x160")) as cam:
        assert cam.shape == (120, 160)
        first, t0 = cam.read()
        assert first.dtype == np.uint8 and first.shape == (120, 160, 3)
        assert first[..., 0].mean() < 20 and first[..., 2].mean() < 20  # red channel first (RGB), frame 0 dark
        time.sleep(0.4)
        later, t1 = cam.read()
        assert t1 - t0 == pytest.approx(0.4, abs=0.12)  # paced at 30 fps, not decoded as fast as possible
        assert later[..., 0].mean() > first[..., 0].mean() + 50  # newer frames are redder
        assert 0 <= time.monotonic() - t1 < 0.1  # the newest frame, not a queue of old ones
        time.sleep(0.7)  # 24 frames = 0.8 s: the file has ended
        with pytest.raises(CameraError, match="disconnected \\(end of the video file"):
            cam.read()


def _gamepad_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_teleop_records_the_camera_beside_the_joints_and_a_disconnect_is_a_one_line_error(tmp_path) -> None:
    """`robolearn teleop --robot panda --device gamepad --camera opencv:<file>` as a user runs it (the gamepad is a
    FIFO carrying js_event bytes): the saved episode holds the camera frames and their age against the joint state.
    Then a camera that ends mid-recording: a one-line error, the episode dropped."""
    from robolearn.data import DatasetReader
    from robolearn.teleop.gamepad import JS_EVENT, JS_EVENT_AXIS, JS_EVENT_BUTTON

    def js(value: int, kind: int, number: int) -> bytes:
        return JS_EVENT.pack(1000, value, kind, number)

    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "COLUMNS": "300"}

    def teleop(video: Path, dataset: Path, pad: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "robolearn.cli", "teleop", "--robot", "panda", "--transport",
                                 "sim", "--device", "gamepad", "--device-path", str(pad), "--dataset", str(dataset),
                                 "--camera", f"opencv:{video}", "--camera-size", "120x160", "--duration", "20",
                                 "--episodes", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    dataset = tmp_path / "real"
    pad = _gamepad_fifo(tmp_path / "js0")
    proc = teleop(_video(tmp_path / "long.mp4", 300), dataset, pad)  # 10 s of camera
    w = os.open(pad, os.O_WRONLY)  # blocks until the teleop opened the gamepad (camera and arm are up)
    try:
        os.write(w, js(-32767, JS_EVENT_AXIS, 1))  # left stick forward: the end effector moves +x
        time.sleep(1.5)
        os.write(w, js(0, JS_EVENT_AXIS, 1) + js(1, JS_EVENT_BUTTON, 0) + js(0, JS_EVENT_BUTTON, 0))  # A: save
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(w)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "camera opencv:" in out and "120x160" in out
    reader = DatasetReader(dataset)
    assert reader.num_episodes == 1
    episode = reader.episode(0)
    ages = episode["observation.camera_age_s"].reshape(-1)
    assert len(ages) >= 30 and (ages >= 0).all() and np.median(ages) < 0.05, ages  # 30 fps frames, fresh
    frames = reader.video_frames(0, "observation.images.camera")
    assert frames.shape[1:] == (120, 160, 3) and frames[-1][..., 0].mean() > frames[0][..., 0].mean()
    assert episode["observation.state"][-1][0] != episode["observation.state"][0][0]  # the arm moved

    dataset2, pad2 = tmp_path / "unplugged", _gamepad_fifo(tmp_path / "js1")
    proc = teleop(_video(tmp_path / "short.mp4", 30), dataset2, pad2)  # 1 s of camera, then it is gone
    w = os.open(pad2, os.O_WRONLY)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: --camera opencv:") and "disconnected (end of the video file" in lines[-1]
    assert "Traceback" not in err
    assert not (dataset2 / "meta" / "info.json").exists() or DatasetReader(dataset2).num_episodes == 0
    report = json.dumps(out)  # the session printed no report: it ended on the error
    assert "episodes_saved" not in report


def test_a_camera_that_disconnects_mid_recording_damps_the_arm(tmp_path) -> None:
    """In process, to see the arm: the camera's end raises out of the recording, whose `finally` leaves the twin
    on a damping command (kp = 0), with the episode dropped."""
    from robolearn.deploy.interface import JointCommand
    from robolearn.deploy.profile import load_profile
    from robolearn.teleop.arm_teleop import ArmTeleop, record_arm_teleop
    from robolearn.teleop.devices import make_device
    from robolearn.twin.sim_robot import SimRobot

    profile = load_profile("panda")
    robot = SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=list(profile.joint_names))
    written: list[JointCommand] = []
    write = robot.write
    robot.write = lambda cmd: (written.append(cmd), write(cmd))[1]  # what the arm was told, in order
    pad = _gamepad_fifo(tmp_path / "js0")
    device = make_device("gamepad", path=str(pad))
    camera = OpenCVCamera(parse_camera(f"opencv:{_video(tmp_path / 'short.mp4', 15)}"))  # 0.5 s
    try:
        with pytest.raises(CameraError, match="disconnected"):
            record_arm_teleop(ArmTeleop(profile, robot, max_speed=0.1), device, duration=10.0,
                              dataset=tmp_path / "ds", camera=camera.read, camera_shape=camera.shape)
    finally:
        camera.close()
        device.close()
        robot.close()
    assert len(written) > 100 and written[-2].kp.any()  # it was holding the arm under PD ...
    assert not written[-1].kp.any() and written[-1].kd.any()  # ... and ended on damping
