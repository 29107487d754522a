"""panda-wipe, the contact-rich arm task of the safety stack: real MuJoCo contact between the pad and the table.

A scripted wiper (damped least-squares IK toward the moving target, pressing a set depth below the surface) shows
what the task measures: pressing gently wipes the line within the force limit; pressing deep wipes it too but
violates the limit on most steps, which is what the `force_limit` cost counts.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.ik import dls_ik
from robolearn.sim.tasks import make_task


def scripted_wipe(depths: list[float], seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One episode per depth: (the ended episodes' metrics, violating steps per env, mean contact force while
    moving)."""
    task = make_task("panda-wipe", len(depths), seed=seed)
    m, d = task.model, mujoco.MjData(task.model)
    site, joints = m.site("ee").id, np.arange(7)
    d.qpos[:7] = task.default_joint_pos.numpy()
    mujoco.mj_forward(m, d)
    down = np.zeros(4)
    mujoco.mju_mat2Quat(down, d.site_xmat[site])  # the pad pointing at the table, as at the default pose
    q = task.joint_pos.numpy().astype(np.float64).copy()
    violations = torch.zeros(len(depths))
    forces = []
    for step in range(task.max_episode_steps):
        for env, depth in enumerate(depths):
            goal = (task.target[env] + 0.3 * task.target_vel[env]).numpy().astype(np.float64)  # lead a little
            goal[2] += 0.03 if step < 40 else -depth  # come down above the start, then press
            q[env] = dls_ik(m, d, site, joints, joints, q[env], goal, down, iterations=3)
        action = (torch.from_numpy(q).float() - task.default_joint_pos) / task.cfg.action_scale
        _, _, cost, _, _, info = task.step(action)
        violations += cost
        if step > 60 and step < task.max_episode_steps - 1:
            forces.append(task.force.clone())
    ended = info["ended"]
    assert bool(ended["mask"].all())  # every episode ended on the last step (time out)
    return ended, violations, torch.stack(forces).mean(dim=0)


def test_gentle_pressing_wipes_within_the_limit_and_deep_pressing_violates_it():
    ended, violations, force = scripted_wipe([0.01, 0.06])
    gentle, deep = 0, 1
    assert ended["success"][gentle] == 1.0 and ended["wiped"][gentle] >= 0.8
    assert 3.0 < force[gentle] < 30.0  # touching, under the limit
    assert violations[gentle] <= 5  # at most the landing
    assert force[deep] > 30.0 and violations[deep] > 100  # over the limit most of the 200 steps
    assert ended["peak_force"][deep] > ended["peak_force"][gentle]


def test_the_target_waits_then_moves_along_the_line_to_its_end():
    task = make_task("panda-wipe", 4, seed=3)
    start, end = task.line_start.clone(), task.line_end.clone()
    assert torch.allclose(task.target, start) and (task.target_vel == 0).all()
    assert ((end - start)[:, :2].norm(dim=1) >= task.cfg.line_min_length - 1e-6).all()
    assert torch.allclose(start[:, 2], torch.tensor(2 * task.cfg.pad_radius))  # the tool point with the pad down
    settle = int(round(task.cfg.settle_s / task.dt))
    for _ in range(settle):
        task.step(torch.zeros(4, task.num_actions))
    assert torch.allclose(task.target, start)  # still waiting at the start
    task.step(torch.zeros(4, task.num_actions))
    speed = (end - start) / (task.max_episode_steps - settle - 1) / task.dt
    assert torch.allclose(task.target_vel, speed, atol=1e-6)
    for _ in range(task.max_episode_steps - settle - 2):
        task.step(torch.zeros(4, task.num_actions))
    assert torch.allclose(task.target, end, atol=1e-5)  # at the end on the last step
    task.step(torch.zeros(4, task.num_actions))  # the episode ends: new lines, the target back at their starts
    assert not torch.allclose(task.line_start, start) and torch.allclose(task.target, task.line_start)
    obs = task.observations()["policy"]
    assert obs.shape == (4, 7 + 7 + 3 + 3 + 3 + 1 + 3 + 7) and torch.isfinite(obs).all()


@pytest.mark.parametrize(("override", "message"), [
    ({"contact_force": 40.0}, "contact_force must be in \\(0, force_limit=30.0\\)"),
    ({"settle_s": 5.0}, "settle_s \\(5.0\\) must be shorter than episode_length_s"),
    ({"line_min_length": 2.0}, "line_min_length must be in"),
    ({"pad_radius": -0.01}, "pad_radius must be > 0, got -0.01"),
    ({"pad_friction": -1.0}, "pad_friction must be >= 0, got -1.0"),
    ({"line_x": [0.6, 0.4]}, "line_x must be \\[low, high\\] with low < high, got \\[0.6, 0.4\\]"),
])
def test_bad_wipe_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        make_task("panda-wipe", 1, overrides=override)
