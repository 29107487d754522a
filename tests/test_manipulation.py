"""panda-push / panda-lift: end-effector actions through IK, the joint action space, the scripted experts, scenes
and cameras. Real MuJoCo, real offscreen rendering."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.render import CameraRig
from robolearn.sim.tasks import make_task
from robolearn.teleop.experts import make_expert


@pytest.fixture(scope="module")
def push():
    task = make_task("panda-push", 2, seed=1)
    yield task
    task.close()


def test_shapes_and_groups(push):
    obs = push.reset()
    assert push.num_actions == 4 and push.robot.joint_names[-2:] == ("panda_finger_joint1", "panda_finger_joint2")
    assert obs["policy"].shape == (2, 9 + 9 + 3 + 3 + 3 + 4)
    assert obs["privileged"].shape == (2, obs["policy"].shape[1] + 4 + 6)
    assert (push.block_pos[:, 2] - push.cfg.block_size).abs().max() < 1e-6, "blocks start on the table"
    assert ((push.goal[:, :2] - push.block_pos[:, :2]).norm(dim=1) >= push.cfg.goal_min_distance).all()


def test_end_effector_actions_move_the_gripper_and_keep_it_pointing_down(push):
    push.reset()
    start = push.ee_pos.clone()
    action = torch.tensor([[1.0, 0.0, -1.0, -1.0], [0.0, -1.0, 0.0, 1.0]])
    for _ in range(10):  # 10 steps of 1 cm commanded
        push.step(action)
    hold = torch.tensor([[0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 1.0]])
    for _ in range(30):  # settle
        push.step(hold)
    moved = push.ee_pos - start
    assert moved[0].tolist() == pytest.approx([0.1, 0.0, -0.1], abs=0.01)
    assert moved[1].tolist() == pytest.approx([0.0, -0.1, 0.0], abs=0.01)
    # gripper: env 0 open (fingers 4 cm each), env 1 closed
    assert push.gripper_width[0] == pytest.approx(0.08, abs=0.003) and push.gripper_width[1] < 0.003
    # the hand still points down: the end-effector z axis is world -z
    data = mujoco.MjData(push.model)
    data.qpos[:] = push.sim.qpos[0].numpy()
    mujoco.mj_kinematics(push.model, data)
    z_axis = data.site_xmat[push._site].reshape(3, 3)[:, 2]
    assert z_axis[2] < -0.995


def test_commanded_position_stays_in_the_workspace(push):
    push.reset()
    for _ in range(80):
        push.step(torch.tensor([[0.0, 0.0, -1.0, 1.0]] * 2))
    assert (push.ee_target[:, 2] >= push.cfg.workspace_low[2] - 1e-6).all()
    assert (push.ee_pos[:, 2] > 0.0).all(), "the gripper does not go through the table"


def test_joint_action_space_tracks_absolute_joint_targets():
    task = make_task("panda-lift", 1, seed=0, overrides={"action_space": "joint"})
    assert task.num_actions == 8 and task.action_names()[-1] == "grip"
    target = task.default_joint_pos[:7] + torch.tensor([0.3, -0.2, 0.1, 0.2, -0.1, 0.1, 0.2])
    for _ in range(60):
        task.step(torch.cat([target, torch.ones(1)]).unsqueeze(0))
    assert (task.joint_pos[0, :7] - target).abs().max() < 0.01
    task.close()


@pytest.mark.parametrize("name", ["panda-push", "panda-lift"])
def test_scripted_expert_solves_the_task(name):
    task = make_task(name, 4, seed=5)
    expert = make_expert(task)
    successes = None
    for _ in range(task.max_episode_steps):
        _, _, _, _, _, info = task.step(expert.act())
        if info["ended"]["mask"].any():
            successes = info["ended"]["success"][info["ended"]["mask"]]
            break
    task.close()
    assert successes is not None and successes.sum() == 4, successes


def test_push_expert_acts_on_the_state_alone():
    """The push expert has no phases: midway through an episode (approaching, pushing, lifting off the line) an
    expert made now commands what the one that has run all along commands. Demonstrations then hold one action
    per state, which an imitating policy can learn without hidden switches."""
    task = make_task("panda-push", 16, seed=3)
    expert = make_expert(task)
    for step in range(90):
        actions = expert.act()
        assert torch.equal(make_expert(task).act(), actions), f"step {step}"
        task.step(actions)
    task.close()


def test_restart_rebuilds_the_same_scene(push):
    push.reset()
    for _ in range(5):
        push.step(torch.zeros(2, 4))
    scene = push.scene(1)
    before = push.observations()["policy"][1].clone()
    push.reset()
    push.restart(*scene, env_ids=torch.tensor([1]))
    after = push.observations()["policy"][1]
    # joint velocities differ (the restart is at rest); positions, block and goal are the same
    assert torch.allclose(after[:9], before[:9], atol=1e-6) and torch.allclose(after[18:27], before[18:27], atol=1e-5)


def test_camera_rig_renders_the_declared_camera(push):
    rig = CameraRig(push)
    frames = rig.frames(push, 0)
    assert set(frames) == {"front"} and frames["front"].shape == (240, 320, 3) and frames["front"].dtype == np.uint8
    # the same state renders the same frame, the first one included (a fresh renderer's first frame was lit
    # differently, 3.3 grey levels per pixel on average, until the rig rendered one to warm up)
    assert np.array_equal(rig.frames(push, 0)["front"], frames["front"])
    for _ in range(10):
        push.step(torch.tensor([[1.0, 1.0, -1.0, 1.0]] * 2))
    moved = rig.frames(push, 0)["front"]
    assert np.abs(moved.astype(int) - frames["front"].astype(int)).mean() > 0.5, "the arm moved in the image"
    rig.close()


def test_bad_manipulation_configs_are_refused():
    with pytest.raises(ConfigError, match="action_space must be one of ee, ee_target, joint, got 'cartesian'"):
        make_task("panda-push", 1, overrides={"action_space": "cartesian"})
    with pytest.raises(ConfigError, match="robot panda has no finger joints"):
        make_task("panda-push", 1, overrides={"robot": "panda"})
    with pytest.raises(ConfigError, match="no scripted expert for task 'panda-reach'"):
        make_expert(make_task("panda-reach", 1))
