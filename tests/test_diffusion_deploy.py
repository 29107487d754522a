"""A diffusion policy from export to the Panda twin: the denoiser bundle, the runtime's numpy DDIM loop against
diffusers, end-effector actions through the bundle's kinematic chain, the object pose source, late chunks."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import torch

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import MANIFEST, PARITY, load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.errors import BundleError


def _tiny_bundle(pushes, root, **task_overrides):
    """A tiny diffusion run on two panda-push demos (replanning every 4 actions), exported."""
    from robolearn.export import export_run
    from robolearn.learn.diffusion_run import load_diffusion_cfg, make_diffusion_runner

    small = {"steps_per_iteration": 3, "max_iterations": 1, "dataset": str(pushes),
             "diffusion": {"down_dims": [16, 32, 64], "batch_size": 8}, "eval": {"episodes": 1},
             "task_overrides": {"episode_length_s": 1.0, **task_overrides}}
    runner = make_diffusion_runner(load_diffusion_cfg("panda-push", overrides=small), root / "run", log_interval=0)
    runner.learn(progress=False)
    runner.close()
    report = export_run(root / "run", root / "bundle")
    assert report.graph_file == "denoiser.onnx" and report.parity_max_error <= 1e-4
    return root


@pytest.fixture(scope="module")
def push_bundle(pushes, tmp_path_factory):
    return _tiny_bundle(pushes, tmp_path_factory.mktemp("dp"))


# The profile's 100 ms policy timeout is 6 chunks' worth on an idle machine (benchmarks measure that); tests share
# the machine with other tests (pytest-xdist workers), where a chunk can take several times longer.
TEST_POLICY_TIMEOUT_MS = 300


def _profile(**changes) -> HardwareProfile:
    prof = load_profile("panda_gripper")
    return from_dict(HardwareProfile, merge(to_dict(prof), {"stand": {"duration_s": 0.05},
                                                            "safety": {"policy_timeout_ms": TEST_POLICY_TIMEOUT_MS},
                                                            **changes}), where="test")


def test_bundle_declares_the_sampler_and_its_loop_matches_diffusers(push_bundle) -> None:
    """deploy.yaml carries the denoiser graph, DDIM schedule, horizons and normalization; the runtime's
    onnxruntime + numpy loop plans the chunk that torch + diffusers plan from the same noise, cold and warm."""
    from robolearn.learn.checkpoint import load_checkpoint
    from robolearn.learn.diffusion_run import load_diffusion

    bundle = load_bundle(push_bundle / "bundle")
    m = bundle.manifest
    g = m.policy
    assert m.action.type == "ee_target" and m.action.dim == 4 and m.action.scale == pytest.approx(0.01)
    assert [t.name for t in m.observation] == ["joint_pos_abs", "ee_pos", "object_pose", "target_pos"]
    assert [c.name for c in m.commands] == ["target_x", "target_y", "target_z"]
    assert g.chunk.horizon == 5 and g.chunk.execute == 4 and g.history == 4  # panda-push.yaml: 4 frames, 8 actions
    assert g.diffusion.timesteps == list(range(90, -1, -10)) and len(g.diffusion.alphas_cumprod) == 100
    assert g.diffusion.warm_timesteps == [40, 20, 0]  # the tail of a 5-step schedule (panda-push.yaml)
    assert bundle.parity_error is not None and bundle.parity_error <= 1e-3

    ckpt, file = load_checkpoint(push_bundle / "run", with_path=True)
    _, model = load_diffusion(ckpt, file)
    sampler = bundle.policy.graph
    gen = torch.Generator().manual_seed(3)
    frames = torch.rand(1, g.history, model.obs_dim, generator=gen) * torch.tensor(g.diffusion.obs_span) + torch.tensor(
        g.diffusion.obs_low)
    noise = torch.randn(1, g.diffusion.pred_horizon, 4, generator=gen)
    with torch.no_grad():
        cold = model.denoise(frames, noise=noise)
    sampler.reset()
    sampler.noise = noise.numpy()
    got = sampler(frames.reshape(-1).numpy())
    want = model.action_norm.inverse(cold)[0, g.history - 1:].numpy()
    assert np.abs(got - want).max() < 1e-4
    # warm start: the previous plan shifted by the executed actions, re-noised to the first warm level
    sampler.d = type(g.diffusion)(**{**to_dict(g.diffusion), "sampler": "warm"})
    noise2 = torch.randn(1, g.diffusion.pred_horizon, 4, generator=gen)
    sampler.noise = noise2.numpy()
    calls = sampler.calls
    got = sampler(frames.reshape(-1).numpy())
    assert sampler.calls - calls == len(g.diffusion.warm_timesteps) == model.cfg.warm_steps
    e = g.chunk.execute
    shifted = torch.cat((cold[:, e:], cold[:, -1:].expand(-1, e, -1)), dim=1)
    with torch.no_grad():
        warm = model.denoise(frames, noise=noise2, start=shifted, start_steps=model.cfg.warm_steps,
                             steps=model.cfg.warm_schedule_steps or None)
    assert np.abs(got - model.action_norm.inverse(warm)[0, g.history - 1:].numpy()).max() < 1e-4
    sampler.noise = None


def test_a_tampered_or_malformed_diffusion_bundle_is_a_one_line_error(push_bundle, tmp_path) -> None:
    import shutil

    import yaml

    folder = tmp_path / "b"
    shutil.copytree(push_bundle / "bundle", folder)
    data = dict(np.load(folder / PARITY))
    data["chunks"] = data["chunks"] + 0.01
    np.savez(folder / PARITY, **data)
    with pytest.raises(BundleError, match=r"parity.npz: the denoising loop here .* differs from the exporter's"):
        load_bundle(folder)
    shutil.copyfile(push_bundle / "bundle" / PARITY, folder / PARITY)
    manifest = yaml.safe_load((folder / MANIFEST).read_text())
    manifest["graphs"][0]["diffusion"]["timesteps"] = [100, 50]
    (folder / MANIFEST).write_text(yaml.safe_dump(manifest))
    with pytest.raises(BundleError, match=r"diffusion.timesteps: expected decreasing noise levels in 0..99"):
        load_bundle(folder)
    manifest["graphs"][0]["diffusion"]["timesteps"] = [90, 50, 0]
    manifest["action"]["ee"]["gripper_joints"] = ["panda_thumb"]
    (folder / MANIFEST).write_text(yaml.safe_dump(manifest))
    with pytest.raises(BundleError, match=r"action.ee: joints \['panda_thumb'\] are not in joints.names"):
        load_bundle(folder)


def test_ee_actions_follow_the_training_ik_through_the_bundle_chain(push_bundle) -> None:
    """The runtime's numpy IK over the bundle's kinematic chain is the training task's MuJoCo IK (1e-9)."""
    from robolearn.deploy.kinematics import ChainKinematics, quat_to_mat
    from robolearn.sim.ik import dls_ik
    from robolearn.sim.tasks import make_task

    m = load_bundle(push_bundle / "bundle").manifest
    kin = ChainKinematics.from_manifest(m)
    task = make_task("panda-push", 1, seed=0)
    try:
        import mujoco

        data = mujoco.MjData(task.model)
        rng = np.random.default_rng(0)
        rot = quat_to_mat(m.action.ee.orientation)
        for _ in range(5):
            q = np.asarray(m.joints.default_pos) + np.r_[rng.uniform(-0.3, 0.3, 7), 0.0, 0.0]
            target = kin.fk(q) + rng.uniform(-0.03, 0.03, 3)
            want = dls_ik(task.model, data, task._site, task._arm_qpos, task._arm_dof, q[:7], target,
                          np.asarray(m.action.ee.orientation), damping=m.action.ee.ik_damping,
                          iterations=m.action.ee.ik_iterations)
            got = kin.ik(q, target, rot, damping=m.action.ee.ik_damping, iterations=m.action.ee.ik_iterations)
            assert np.abs(got[:7] - want).max() < 1e-9 and np.array_equal(got[7:], q[7:])
    finally:
        task.close()


@pytest.mark.parametrize("action_space", ["ee", "ee_target"])
def test_the_runtime_turns_actions_into_the_joint_targets_training_did(pushes, push_bundle, tmp_path,
                                                                      action_space) -> None:
    """From the same joint targets and commanded end effector, the runtime and the training task turn the same
    actions into the same joint targets: end-effector motions (ee_delta) and end-effector targets (ee_target,
    approached at most `scale` per axis and step, clamped to the workspace; the bundle bounds them to it)."""
    import torch

    from robolearn.sim.tasks import make_task

    # policies/diffusion/panda-push.yaml acts in targets; the recorded motions are the other action space
    root = push_bundle if action_space == "ee_target" else _tiny_bundle(pushes, tmp_path, action_space="ee")
    m = load_bundle(root / "bundle").manifest
    assert m.action.type == {"ee": "ee_delta", "ee_target": "ee_target"}[action_space]
    task = make_task("panda-push", 1, seed=0, overrides={"action_space": action_space})
    rt, _, _ = _runtime(root)
    try:
        if action_space == "ee_target":
            assert m.action.bounds == [*zip(m.action.ee.workspace_low, m.action.ee.workspace_high, strict=True),
                                       (-1.0, 1.0)]
        rt._ee_target = rt.kinematics.fk(rt._to)  # as `run` starts: from the end effector where it stands
        task.targets[0] = torch.from_numpy(rt._to).float()
        task.ee_target[0] = torch.from_numpy(rt._ee_target).float()
        rng = np.random.default_rng(1)
        for step in range(12):
            if action_space == "ee":
                action = rng.uniform(-1.5, 1.5, 4)
            else:  # near and far targets (rate-limited), some outside the workspace (clamped)
                action = np.r_[rt._ee_target + rng.uniform(-0.05, 0.05, 3) * (1 + 4 * (step % 3 == 0)),
                               rng.uniform(-1, 1)]
            applied = m.apply_action_clip(action)
            before = rt._ee_target.copy()
            got = rt._to = rt._action_targets(applied)  # the next IK starts from these targets, as in a tick
            want = task.action_to_ctrl(torch.from_numpy(applied[None]).float())[0, 0].numpy()
            assert np.abs(got - want).max() < 1e-4, step
            assert np.abs(rt._ee_target - task.ee_target[0].numpy()).max() < 1e-6, step
            assert np.abs(rt._ee_target - before).max() <= m.action.scale + 1e-9
            low, high = m.action.ee.workspace_low, m.action.ee.workspace_high
            assert np.all(rt._ee_target >= np.asarray(low) - 1e-9) and np.all(rt._ee_target <= np.asarray(high) + 1e-9)
    finally:
        rt.close()
        task.close()


def _runtime(push_bundle, *, objects=None, policy=None, profile=None):
    from robolearn.twin.tabletop import TabletopTwin, sample_scene

    bundle = load_bundle(push_bundle / "bundle")
    prof = profile or _profile()
    twin = TabletopTwin("panda-push", 1.0 / prof.control_hz, joint_names=prof.joint_names)
    block, goal = sample_scene("panda-push", 4)
    twin.place(block, goal)
    rt = DeployRuntime(bundle, prof, twin, objects=objects or twin.object_pose, policy=policy)
    rt.tick()
    assert rt.stand() == "stand"
    rt.spin(0.1)
    rt.set_command(goal)
    return rt, twin, bundle


def test_the_runtime_runs_the_denoising_loop_and_moves_the_arm_on_the_twin(push_bundle) -> None:
    """30 Hz policy, 480 Hz control, in real time: one chunk of 10 denoiser calls every `execute` actions (4 in
    panda-push.yaml), end-effector actions become joint targets, the fingers follow the grip, nothing trips."""
    rt, twin, bundle = _runtime(push_bundle)
    try:
        start_ee = rt.kinematics.fk(rt.last_state.q[rt.index])
        calls = bundle.policy.graph.calls  # the loader's parity check planned already
        assert rt.run() == "run"
        rt.spin(1.0)
        assert rt.mode == Mode.RUN and not rt.trips
        steps = rt._run_ticks // rt.policy_every  # policy steps asked for
        answered = len(rt.stats.policy_latency)  # actions the policy returned (fewer on a busy machine)
        chunks = (bundle.policy.graph.calls - calls) // 10
        execute = bundle.manifest.policy.chunk.execute
        assert abs(chunks - answered / execute) <= 1.5 and answered >= steps / 3, (chunks, answered, steps)
        assert np.linalg.norm(rt._ee_target - start_ee) > 1e-3  # the commanded end effector moved
        assert rt.last_action.shape == (4,) and np.all(np.abs(rt.last_action) <= 1.0)
        assert np.allclose(rt._to[7:], 0.04 * (1.0 - (rt.last_action[3] + 1.0) / 2.0))  # the fingers' targets
        assert rt.stats.summary()["policy_p50_ms"] >= 0.0
    finally:
        rt.close()


def test_a_late_chunk_is_held_then_damped_and_a_bad_object_pose_damps(push_bundle) -> None:
    """A chunk later than the policy timeout: the control loop keeps ticking (holding the target), then damps.
    A stale or NaN object pose, and no pose source at all, are refused as well."""
    import threading

    state = {"slow": False}
    resume = threading.Event()

    def slow_policy(obs):
        bundle_policy = slow_policy.inner
        if state["slow"] and not bundle_policy.queue:
            resume.wait(5.0)  # a stalled denoising loop (released once the test has seen the damp)
        return bundle_policy(obs)

    slow_policy.inner = load_bundle(push_bundle / "bundle").policy
    rt, twin, _ = _runtime(push_bundle, policy=slow_policy)
    try:
        rt.run()
        rt.spin(0.3)
        assert rt.mode == Mode.RUN
        state["slow"] = True
        ticks, t0 = rt.ticks, time.monotonic()
        while rt.mode == Mode.RUN and time.monotonic() - t0 < 3.0:  # the queued actions, then the timeout
            rt.spin(0.05)
        held = time.monotonic() - t0
        assert rt.mode == Mode.DAMP and "policy stalled" in rt.trips[-1].reason
        assert held >= TEST_POLICY_TIMEOUT_MS / 1000  # not before the timeout
        assert rt.ticks - ticks > 0.6 * held * 480  # the loop ticked on at the control rate meanwhile
    finally:
        resume.set()
        rt.close()

    stamp = [time.monotonic()]
    rt, twin, _ = _runtime(push_bundle, objects=lambda: (twin_pose(), stamp[0]))
    try:
        rt.run()
        rt.spin(0.15)
        assert rt.mode == Mode.DAMP and "object pose is stale" in rt.trips[-1].reason
    finally:
        rt.close()
    rt, twin, _ = _runtime(push_bundle, objects=lambda: (np.full(7, np.nan), time.monotonic()))
    try:
        rt.run()
        rt.spin(0.05)
        assert rt.mode == Mode.DAMP and "object pose" in rt.trips[-1].reason and "NaN" in rt.trips[-1].reason
    finally:
        rt.close()
    from robolearn.twin.sim_robot import SimRobot

    prof = _profile()
    with pytest.raises(BundleError, match="the policy observes object_pose, but no object pose source was given"):
        DeployRuntime(load_bundle(push_bundle / "bundle"), prof,
                      SimRobot("panda_gripper", 1.0 / prof.control_hz, joint_names=prof.joint_names))


def twin_pose() -> np.ndarray:
    return np.array([0.5, 0.0, 0.025, 1.0, 0.0, 0.0, 0.0])


def test_deploy_cli_runs_the_diffusion_bundle_on_the_tabletop_twin(push_bundle, tmp_path) -> None:
    """`robolearn deploy --robot panda_gripper --policy B --auto` stands, runs and damps the twin with the block;
    the report says how close the block came to its goal; a transport without an object source is refused."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cli_batch import run_cli_batch

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "robolearn.cli", "deploy", "--robot", "panda_gripper", "--policy",
                          str(push_bundle / "bundle"), "--auto", "--duration", "4", "--seed", "2", "--set",
                          "stand.duration_s=0.5", "--set", f"safety.policy_timeout_ms={TEST_POLICY_TIMEOUT_MS}",
                          "--report",
                          str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=120, cwd=root,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["to"] for t in report["timeline"]] == ["stand", "run", "damp"] and not report["trips"]
    assert 0.0 <= report["sim"]["object_best_goal_distance_m"] <= report["sim"]["object_goal_distance_m"] + 1e-9
    assert report["timing"]["policy_p99_ms"] > 0

    bundle = str(push_bundle / "bundle")
    bad = [(("deploy", "--robot", "panda_gripper", "--policy", bundle, "--transport", "dds", "--set",
             "dds.object_topic=''", "--auto", "--duration", "1"),
            "the policy observes object_pose; give it a pose source: --transport dds with dds.object_topic"),
           (("deploy", "--robot", "panda_gripper", "--policy", bundle, "--transport", "dds", "--auto", "--duration",
             "1"), "the policy's command is its goal (target_x, target_y, target_z): give it with --cmd x,y,z"),
           (("deploy", "--robot", "panda", "--policy", bundle, "--auto", "--duration", "1"),
            "joints ['panda_finger_joint1', 'panda_finger_joint2'] of the policy are not on robot panda"),
           (("deploy", "--robot", "go2", "--policy", bundle, "--auto", "--duration", "1"),
            "this arm policy cannot run on the legged robot go2"),
           (("export", str(push_bundle / "run"), "--output", str(tmp_path / "b"), "--execute", "20"),
            "diffusion.execute must be in [1, pred_horizon - obs_horizon + 1] = [1, 5]"),
           (("export", str(push_bundle / "run"), "--output", str(tmp_path / "b"), "--sampler", "ddpm"),
            "a bundle plans with ddim or warm (--sampler ddim|warm), not ddpm")]
    for (_, message), res in zip(bad, run_cli_batch([a for a, _ in bad]), strict=True):
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_pinned_threads_keep_their_cpus() -> None:
    """threads.pin: the policy thread runs on the profile's policy CPUs, the control loop on its own while it
    spins, and the caller's affinity comes back afterwards."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    from robolearn.deploy.runtime import PolicyWorker, thread_cpus

    prof = _profile(threads={"pin": True})
    control, policy = thread_cpus(prof.threads)
    assert control == set(allowed[:-1]) and policy == {allowed[-1]}
    seen = {}

    def where(obs):
        seen["cpus"] = os.sched_getaffinity(threading.get_native_id())
        return obs

    worker = PolicyWorker(where, cpus=policy)
    assert worker.submit(np.zeros(1))
    for _ in range(200):
        if worker.poll() is not None:
            break
        time.sleep(0.005)
    worker.close()
    assert seen["cpus"] == policy
    with pytest.raises(Exception, match=r"threads: CPUs \[4096\] are not available"):
        thread_cpus(_profile(threads={"pin": True, "policy_cpus": [4096]}).threads)


def test_closing_the_policy_worker_waits_for_the_plan_in_flight() -> None:
    """close() returns once the policy thread has left the policy: a daemon thread still inside onnxruntime when the
    interpreter exits aborts the process (seen at the end of a 20-episode twin run). A policy that never returns is
    waited for only up to close's timeout."""
    from robolearn.deploy.runtime import PolicyWorker

    entered, left, stuck = threading.Event(), threading.Event(), threading.Event()

    def slow(obs):
        entered.set()
        time.sleep(0.3)
        left.set()
        return obs

    worker = PolicyWorker(slow)
    assert worker.submit(np.zeros(1)) and entered.wait(5.0)  # the request is in flight
    worker.close()
    assert left.is_set() and not worker._thread.is_alive()

    def never(obs):
        entered.set()
        stuck.wait(10.0)
        return obs

    entered.clear()
    worker = PolicyWorker(never)
    assert worker.submit(np.zeros(1)) and entered.wait(5.0)
    start = time.monotonic()
    worker.close(timeout_s=0.2)
    assert 0.15 <= time.monotonic() - start < 2.0 and worker._thread.is_alive()
    stuck.set()


def test_a_bundle_observes_whole_terms_of_the_recorded_features() -> None:
    """A key that takes columns of a feature (`feature[name,...]`) becomes the deploy terms those columns make up;
    part of a term, or terms out of order, is an export error naming the key and the terms."""
    from robolearn.export import _recorded_observation
    from robolearn.sim.tasks import make_task

    task = make_task("panda-push", 1)
    block = ",".join(f"block_{c}" for c in ("x", "y", "z", "qw", "qx", "qy", "qz"))
    for keys, terms in ((["observation.environment_state"], ["object_pose", "target_pos"]),
                        ([f"observation.environment_state[{block}]"], ["object_pose"]),
                        (["observation.ee_pos", "observation.environment_state[goal_x,goal_y,goal_z]"],
                         ["ee_pos", "target_pos"])):
        assert [t.name for t in _recorded_observation(task, keys)] == terms
    for key in ("observation.environment_state[goal_x,goal_y]", "observation.environment_state[goal_y,goal_x,goal_z]"):
        with pytest.raises(BundleError, match=rf"observation key '{re.escape(key)}' takes part of a deploy observation "
                                              r"term or reorders them \(object_pose: 7 columns, target_pos: 3"):
            _recorded_observation(task, [key])
    task.close()


def test_an_image_policy_is_exported_with_its_encoder_and_the_runtime_feeds_it_the_camera(pushes, tmp_path) -> None:
    """An image-based run exports denoiser + encoder graphs (parity through both); on the twin the runtime reads
    the camera (a recorded video file standing in for the device) and the policy thread resizes and encodes it;
    a stale or failing camera damps; a missing camera source is refused."""
    from robolearn.export import export_run
    from robolearn.learn.diffusion_run import load_diffusion_cfg, make_diffusion_runner
    from robolearn.teleop.camera import CameraError, OpenCVCamera, parse_camera

    small = {"steps_per_iteration": 2, "max_iterations": 1, "dataset": str(pushes), "max_episodes": 1,
             "obs_keys": ["observation.state", "observation.ee_pos",
                          "observation.environment_state[goal_x,goal_y,goal_z]"],
             "image_keys": ["observation.images.front"],
             "diffusion": {"down_dims": [16, 32, 64], "batch_size": 4, "image_size": [48, 64], "crop": [44, 60],
                           "encoder_channels": [8, 8, 16, 16], "keypoints": 8, "image_features": 8},
             "eval": {"episodes": 1, "num_envs": 1}, "task_overrides": {"episode_length_s": 0.2}}
    runner = make_diffusion_runner(load_diffusion_cfg("panda-push", overrides=small), tmp_path / "run",
                                   log_interval=0)
    runner.learn(progress=False)
    runner.close()
    report = export_run(tmp_path / "run", tmp_path / "bundle")
    assert report.parity_max_error <= 1e-4 and (tmp_path / "bundle" / "encoder.onnx").is_file()
    bundle = load_bundle(tmp_path / "bundle")
    cams = bundle.manifest.policy.diffusion.cameras
    assert [(c.name, c.feature, c.height, c.width, c.graph) for c in cams] == [
        ("front", "observation.images.front", 48, 64, "encoder")]
    assert bundle.parity_error <= 1e-3
    # the block only through the camera: the goal columns of environment_state are the command, no object term
    assert [t.name for t in bundle.manifest.observation] == ["joint_pos_abs", "ee_pos", "target_pos"]

    video = sorted((pushes / "videos" / "observation.images.front").rglob("*.mp4"))[0]
    camera = OpenCVCamera(parse_camera(f"opencv:{video}"))
    encoder = bundle.graphs["encoder"]
    runs = []
    original = encoder.run
    encoder.run = lambda feeds: runs.append(feeds["image"].shape) or original(feeds)
    from robolearn.twin.tabletop import TabletopTwin, sample_scene

    # The first plan decodes video, warms two ONNX sessions and encodes the frames: under a second xdist worker's
    # load it once took over 300 ms (a stall trip). This test checks that the camera reaches the encoder; the
    # stall rule has its own tests.
    prof = _profile(safety={"policy_timeout_ms": 1000})
    try:
        twin = TabletopTwin("panda-push", 1.0 / prof.control_hz, joint_names=prof.joint_names)
        twin.place(*sample_scene("panda-push", 4))
        with pytest.raises(BundleError, match=r"the policy sees camera\(s\) \['front'\], but no source was given"):
            DeployRuntime(bundle, prof, twin)
        rt = DeployRuntime(bundle, prof, twin, cameras={"front": camera.read})  # no object pose source needed
        rt.tick()
        rt.stand()
        rt.spin(0.1)
        rt.run()
        rt.spin(0.6)
        assert rt.mode == Mode.RUN and not rt.trips, rt.trips
        assert runs and all(shape == (4, 3, 48, 64) for shape in runs)  # the 4 frames of the history, resized
        rt.close()
    finally:
        camera.close()

    def stale():
        return np.zeros((240, 320, 3), np.uint8), time.monotonic() - 1.0

    def unplugged():
        raise CameraError("--camera opencv:0: disconnected (the device stopped delivering)")

    for source, reason in ((stale, "camera front: the newest frame is"), (unplugged, "camera front: CameraError")):
        twin = TabletopTwin("panda-push", 1.0 / prof.control_hz, joint_names=prof.joint_names)
        rt = DeployRuntime(bundle, prof, twin, objects=twin.object_pose, cameras={"front": source})
        rt.tick()
        rt.stand()
        rt.spin(0.1)
        rt.run()
        rt.spin(0.05)
        assert rt.mode == Mode.DAMP and reason in rt.trips[-1].reason, rt.trips
        rt.close()

    from cli_batch import run_cli_batch

    b = str(tmp_path / "bundle")
    bad = [(("deploy", "--robot", "panda_gripper", "--policy", b, "--camera", "side=opencv:0", "--auto"),
            "--camera side: the policy sees no camera of that name (its cameras: front)"),
           (("deploy", "--robot", "panda_gripper", "--policy", b, "--camera", "front", "--auto"),
            "--camera 'front': expected NAME=opencv:<index, device or file>")]
    for (_, message), res in zip(bad, run_cli_batch([a for a, _ in bad]), strict=True):
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_twin_renders_its_camera_in_another_process_from_its_own_state() -> None:
    """TwinCamera: the frame is the task's camera at the twin's current state (the block where the twin put it), as
    the demonstrations' renderer draws it; a render process that dies is a camera fault."""
    from robolearn.errors import RobolearnError
    from robolearn.sim.render import CameraRig
    from robolearn.sim.tasks import make_task
    from robolearn.twin.tabletop import TabletopTwin, sample_scene

    prof = _profile()
    twin = TabletopTwin("panda-push", 1.0 / prof.control_hz, joint_names=prof.joint_names)
    block, goal = sample_scene("panda-push", 7)
    twin.place(block, goal)
    try:
        cam = twin.camera("front")
        time.sleep(0.1)
        frame, stamp = cam.read()
        assert frame.shape == (240, 320, 3) and time.monotonic() - stamp < 0.5
        task = make_task("panda-push", 1, seed=0)
        rig = CameraRig(task)
        try:
            task.restart(torch.from_numpy(twin.data.qpos[twin.qpos_adr]).float().unsqueeze(0),
                         torch.from_numpy(block).float().unsqueeze(0), torch.from_numpy(goal).float().unsqueeze(0))
            want = rig.frames(task)["front"].astype(float)
        finally:
            rig.close()
            task.close()
        assert np.abs(frame.astype(float) - want).mean() < 2.0  # the same scene, block and goal included
        moved = block.copy()
        moved[1] += 0.1
        twin.place(moved, goal)  # the next frames show the block where the twin has it
        time.sleep(0.15)
        assert np.abs(cam.read()[0].astype(float) - frame).mean() > 0.2
        cam._process.kill()
        cam._process.join()
        with pytest.raises(RobolearnError, match="twin camera front: the render process is not delivering frames"):
            cam.read()
    finally:
        twin.close()
