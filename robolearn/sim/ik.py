"""Damped least-squares inverse kinematics on a MuJoCo model (kinematics only): the Cartesian step shared by the
manipulation tasks and the real-arm teleop, so that the simulated and the real arm follow a command the same way."""

from __future__ import annotations

import mujoco
import numpy as np

__all__ = ["dls_ik"]


def dls_ik(model: mujoco.MjModel, data: mujoco.MjData, site: int, qpos_adr: np.ndarray, dof_adr: np.ndarray,
           q: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray, *, damping: float = 0.05,
           iterations: int = 2) -> np.ndarray:
    """Joint positions [n] (at `qpos_adr`, moving the dofs `dof_adr`) that bring site `site` toward `target_pos` [3]
    and orientation `target_quat` [4] (w, x, y, z), from `q` [n]: `iterations` steps of
    dq = J^T (J J^T + damping^2 I)^-1 [position error; rotation vector error]. Overwrites `data.qpos`."""
    jp, jr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    quat, err_quat, rot_err = np.zeros(4), np.zeros(4), np.zeros(3)
    q = np.array(q, dtype=np.float64)
    lam2 = damping**2
    for _ in range(iterations):
        data.qpos[qpos_adr] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_jacSite(model, data, jp, jr, site)
        mujoco.mju_mat2Quat(quat, data.site_xmat[site])
        mujoco.mju_negQuat(err_quat, quat)
        mujoco.mju_mulQuat(err_quat, target_quat, err_quat)
        mujoco.mju_quat2Vel(rot_err, err_quat, 1.0)
        err = np.concatenate([target_pos - data.site_xpos[site], rot_err])
        jac = np.vstack([jp, jr])[:, dof_adr]
        q += jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
    return q
