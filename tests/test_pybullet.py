"""The `pybullet` backend (sim2sim): MuJoCo's state layout, sensor meaning and per-env randomization in a second
physics engine, real PyBullet against real MuJoCo."""

from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robolearn.cli import app
from robolearn.errors import ConfigError
from robolearn.sim.backends import make_backend
from robolearn.sim.robots.robot_cfg import load_robot_cfg
from robolearn.sim.scene import build_robot_scene
from robolearn.sim.tasks import make_task

pb = pytest.importorskip("pybullet")

STAND_JOINT_TOLERANCE = 0.15  # rad: PD stand after 1 s, MuJoCo vs PyBullet (measured 0.10; contacts differ)


@pytest.fixture(scope="module")
def go2():
    """A Go2 task (for its model and sensor columns) and nominal-parameter backends of both engines."""
    task = make_task("go2-flat", 1, seed=0)
    sims = {name: make_backend(name, task.model, 3) for name in ("mujoco", "pybullet")}
    yield task, sims
    for sim in sims.values():
        sim.close()
    task.close()


def _random_state(model: mujoco.MjModel, task, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    qpos = torch.zeros(n, model.nq, dtype=torch.float64)
    qpos[:, :2] = torch.randn(n, 2, generator=g, dtype=torch.float64)
    qpos[:, 2] = 0.5
    quat = torch.randn(n, 4, generator=g, dtype=torch.float64)
    qpos[:, 3:7] = quat / quat.norm(dim=1, keepdim=True)
    noise = 0.3 * torch.randn(n, 12, generator=g, dtype=torch.float64)
    qpos[:, 7:] = torch.tensor(task.robot.default_joint_pos) + noise
    qvel = torch.randn(n, model.nv, generator=g, dtype=torch.float64)
    return qpos, qvel


def test_state_layout_quaternion_and_frame_sensors_match_mujoco(go2):
    task, sims = go2
    qpos, qvel = _random_state(task.model, task, 3)
    ids = torch.arange(3)
    for sim in sims.values():
        sim.set_state(ids, qpos, qvel)
    pyb = sims["pybullet"]
    # Round trip through PyBullet (base COM frame, (x, y, z, w) quaternions, world angular velocity) and back.
    got = pyb.qpos.clone()
    got[:, 3:7] *= torch.sign((got[:, 3:7] * qpos[:, 3:7]).sum(dim=1, keepdim=True))  # q and -q: same rotation
    assert torch.allclose(got, qpos, atol=1e-6), "free joint pos + quat (w, x, y, z) + joints, MuJoCo order"
    assert torch.allclose(pyb.qvel, qvel, atol=1e-6), "world linear, body-frame angular, joint velocities"
    expected, got = sims["mujoco"].forward(ids), pyb.forward(ids)
    for foot in task.robot_cfg.feet:
        for sensor in (f"{foot}_pos", f"{foot}_vel"):
            cols = task.sensor(sensor)
            assert torch.allclose(got[:, cols], expected[:, cols], atol=1e-6), sensor


def test_free_fall_follows_gravity_in_both_engines(go2):
    task, sims = go2
    qpos, _ = _random_state(task.model, task, 3)
    qpos[:, 2] = 2.0
    qvel = torch.zeros(3, task.model.nv, dtype=torch.float64)
    ctrl = qpos[:, 7:].unsqueeze(1).expand(3, 20, 12).clone()  # PD holds the joints: 20 steps, 0.1 s
    for sim in sims.values():
        sim.set_state(torch.arange(3), qpos, qvel)
        sim.step(ctrl)
        dt, n = task.model.opt.timestep, 20  # semi-implicit Euler in both: v_n = -g n dt, z_n = z_0 - g dt^2 n(n+1)/2
        assert torch.allclose(sim.qvel[:, 2], torch.full((3,), -9.81 * n * dt, dtype=torch.float64), atol=1e-6)
        fallen = 9.81 * dt * dt * n * (n + 1) / 2
        assert torch.allclose(sim.qpos[:, 2], torch.full((3,), 2.0 - fallen, dtype=torch.float64), atol=1e-6)


def test_pd_stand_holds_the_go2_up_in_both_engines(go2):
    """Default pose, feet on the floor, PD targets = default pose for 1 s (nominal friction, masses, gains)."""
    task, sims = go2
    model = task.model
    n = 3
    qpos = torch.zeros(n, model.nq, dtype=torch.float64)
    qpos[:, 3] = 1.0
    qpos[:, 7:] = torch.tensor(task.robot.default_joint_pos)
    sims["mujoco"].set_state(torch.arange(n), qpos, torch.zeros(n, model.nv, dtype=torch.float64))
    lowest_foot = min(sims["mujoco"].forward(torch.arange(1))[0, task.sensor(f"{f}_pos")][2].item()
                      for f in task.robot_cfg.feet)
    qpos[:, 2] = 0.0225 + 0.002 - lowest_foot  # foot spheres (r 2.25 cm) 2 mm above the floor
    ctrl = qpos[:, 7:].unsqueeze(1).expand(n, task.cfg.decimation, 12).clone()
    out = {}
    for name, sim in sims.items():
        sim.set_state(torch.arange(n), qpos, torch.zeros(n, model.nv, dtype=torch.float64))
        for _ in range(50):
            sensors = sim.step(ctrl)
        out[name] = (sim.qpos.clone(), sensors[:, -1].clone())
    weight = float(model.body_mass.sum() * 9.81)
    touch = task._touch_cols
    for name, (q, s) in out.items():
        assert (q[:, 2] > 0.2).all(), f"{name}: the base stays up"
        assert (q[:, 3] > 0.99).all(), f"{name}: and level"
        assert (s[:, touch] > 1.0).all(), f"{name}: four feet touch the floor"
        assert s[:, touch].sum(dim=1).sub(weight).abs().max() < 0.15 * weight, f"{name}: feet carry the weight"
    (q_mj, s_mj), (q_pb, s_pb) = out["mujoco"], out["pybullet"]
    assert (q_mj[:, 7:] - q_pb[:, 7:]).abs().max() < STAND_JOINT_TOLERANCE
    for foot in task.robot_cfg.feet:  # feet on the floor in both: foot origin heights within 1 cm
        z = task.sensor(f"{foot}_pos").start + 2
        assert (s_mj[:, z] - s_pb[:, z]).abs().max() < 0.01


def test_per_env_randomization_reaches_pybullet():
    task = make_task("go2-flat", 3, backend="pybullet", seed=3)
    sim = task.sim
    try:
        urdf_base_mass = sim.layout.link_mass[-1]
        urdf_base_inertia = sim.layout.link_inertia[-1]
        for env in range(3):
            client, body = sim._clients[env], sim._bodies[env]
            friction = [pb.getDynamicsInfo(body, link, physicsClientId=client)[1] for link in sim.layout.link_geoms]
            assert len(friction) == 9, "base, thighs, calves (feet fused into them, as in MuJoCo)"
            assert friction == pytest.approx([task.friction[env].item()] * 9, rel=1e-5), "floor x link = MuJoCo's max"
            base = pb.getDynamicsInfo(body, -1, physicsClientId=client)
            assert base[0] == pytest.approx(urdf_base_mass + task.added_mass[env].item(), rel=1e-6)
            assert base[2] == pytest.approx(urdf_base_inertia, rel=1e-9), "inertia kept (not recomputed from shapes)"
            strength = task.motor_strength[env].item()
            assert sim.model_field("actuator_gainprm", env)[0, 0] == pytest.approx(20.0 * strength, rel=1e-5)
            assert sim.model_field("actuator_forcerange", env)[0, 1] == pytest.approx(23.7 * strength, rel=1e-5)
        assert len({round(task.friction[e].item(), 6) for e in range(3)}) == 3, "each env its own friction"
        with pytest.raises(ConfigError, match="geom_solref"):
            sim.set_model_field("geom_solref", torch.arange(1), task.model.geom_solref[None])
    finally:
        task.close()


def test_unsupported_sensor_is_a_clear_error():
    spec = build_robot_scene(load_robot_cfg("go2"), timestep=0.005)
    spec.add_sensor(name="imu_acc", type=mujoco.mjtSensor.mjSENS_ACCELEROMETER, objtype=mujoco.mjtObj.mjOBJ_SITE,
                    objname="imu")
    model = spec.compile()
    with pytest.raises(ConfigError, match=r"sensor 'imu_acc' of type accelerometer; supported: .*touch"):
        make_backend("pybullet", model, 1)


def test_listed_and_evaluated_through_the_cli(tmp_path):
    from robolearn.learn.config import load_train_cfg
    from robolearn.learn.train import make_ppo_runner

    cli = CliRunner()
    listed = cli.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert sum(line.strip().startswith("pybullet ") for line in listed.output.splitlines()) == 1
    # An (untrained) panda-reach run, evaluated on PyBullet: same table as play, eval_pybullet.json.
    cfg = load_train_cfg("panda-reach", overrides={"num_envs": 4, "steps_per_env": 4})
    runner = make_ppo_runner(cfg, tmp_path / "run")
    runner.save(tmp_path / "run" / "checkpoints" / "model.pt")
    runner.close()
    result = cli.invoke(app, ["eval", str(tmp_path / "run"), "--backend", "pybullet", "--episodes", "3",
                              "--num-envs", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "panda-reach on pybullet: 3 episodes" in result.output and "survival=1" in result.output
    report = json.loads((tmp_path / "run" / "eval_pybullet.json").read_text())
    assert report["backend"] == "pybullet" and report["episodes"] == 3 and len(report["per_episode"]) == 3
    assert [e["env_id"] for e in report["per_episode"]] == [0, 1, 2]
    assert {"survival", "success", "final_distance"} <= set(report["summary"])
    assert np.isfinite(report["summary"]["final_distance"])
