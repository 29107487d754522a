"""`pybullet` backend: the same robot in a second physics engine (Bullet), for sim2sim checks.

It loads the robot's URDF (resolved and rewritten by the URDF importer, as MuJoCo got it; see pybullet_urdf) into
one PyBullet DIRECT client per env, on a plane, and keeps the `Backend` contract of the `mujoco` backend:
`qpos`/`qvel` in MuJoCo's layout (free joint position + quaternion (w, x, y, z) of the base *link* frame, world
linear velocity, body-frame angular velocity, then the joints in MuJoCo order), and sensor data with MuJoCo's
columns and meaning, so tasks run unchanged. What is not the same, on purpose or by necessity:

- Bodies: links on fixed joints are merged into their parents, as MuJoCo's compiler fuses them (same masses,
  COMs and inertias as MuJoCo's bodies). Inertias come from the URDF, not from Bullet's shape estimate.
- Collision: PyBullet collides the URDF's collision meshes (convex hulls); MuJoCo collides the fitted primitives
  (Go2: sphere feet, capsule legs, box body). Meshes MuJoCo dropped (collision rule `none`) or does not collide
  with the floor are dropped here too. No self-collision, as in MuJoCo.
- Contacts: Bullet's rigid contacts (sequential impulses, 50 iterations, its defaults) instead of MuJoCo's soft
  contacts, which creep under sustained tangential load. Friction combines by product in Bullet and by max in
  MuJoCo: the floor gets friction 1 and every link the max of its MuJoCo geoms' friction and the floor's, so
  the pair coefficient is MuJoCo's. No torsional or rolling friction (MuJoCo's default condim 3 has none).
- Actuators: MuJoCo's PD position actuators become joint torques computed here at every physics step,
  `clip(gain * ctrl + b0 + b1 * q + b2 * dq, forcerange)` with the per-env gains, i.e. explicit PD (MuJoCo's
  implicitfast integrates the damping term implicitly). Joint damping and stiffness are added to that torque
  (explicit too); MuJoCo's `frictionloss` becomes a zero-velocity motor whose maximum force is the friction
  (Bullet's constraint solver makes it dry friction). Joint armature (rotor inertia), which Bullet lacks, is
  added to each hinge's child link as inertia about the hinge axis (exact on the joint's own mass-matrix
  diagonal, also felt by ancestor joints; `armature=False` leaves it out). Bullet's default link damping
  (0.04) and joint velocity cap (100 rad/s) are turned off.
- Sensors: computed from PyBullet state with MuJoCo's timing (kinematic and actuator sensors from the state at
  the start of each physics step, contact forces from that step's solve). `touch` sums the normal forces of the
  site body's floor contacts that MuJoCo would count (contact point inside the site, or the ray from it away
  from the body hitting the site: `mujoco.mju_rayGeom`); after `forward` (no solve) it reads 0. Supported:
  touch, frame{pos,quat,xaxis,yaxis,zaxis,linvel,angvel}, gyro, velocimeter, joint{pos,vel,actfrc},
  actuator{pos,vel,frc}; others raise ConfigError.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends.base import Backend, rows_as_ids
from robolearn.sim.backends.pybullet_model import (
    build_layout,
    load_pybullet,
    mj_ints,
    quat_conj,
    quat_mat,
    quat_mul,
    robot_cfg_for,
    rotate,
    to_mj,
    to_pb,
)
from robolearn.sim.backends.pybullet_urdf import pybullet_urdf
from robolearn.sim.robots.robot_cfg import RobotCfg

__all__ = ["PyBulletBackend", "RANDOMIZABLE_FIELDS"]

RANDOMIZABLE_FIELDS = ("geom_friction", "body_mass", "actuator_gainprm", "actuator_biasprm", "actuator_forcerange")
_S, _O, _J, _G = (mj_ints(e) for e in (mujoco.mjtSensor, mujoco.mjtObj, mujoco.mjtJoint, mujoco.mjtGeom))
_FRAME_SENSORS = {_S.mjSENS_FRAMEPOS, _S.mjSENS_FRAMEQUAT, _S.mjSENS_FRAMEXAXIS, _S.mjSENS_FRAMEYAXIS,
                  _S.mjSENS_FRAMEZAXIS, _S.mjSENS_FRAMELINVEL, _S.mjSENS_FRAMEANGVEL, _S.mjSENS_GYRO,
                  _S.mjSENS_VELOCIMETER}
_STATE_SENSORS = {_S.mjSENS_JOINTPOS, _S.mjSENS_JOINTVEL, _S.mjSENS_ACTUATORPOS, _S.mjSENS_ACTUATORVEL,
                  _S.mjSENS_ACTUATORFRC, _S.mjSENS_JOINTACTFRC}
_JOINT_FIXED_GAIN = (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtDyn.mjDYN_NONE), int(mujoco.mjtGain.mjGAIN_FIXED))
_AFFINE_BIAS = (int(mujoco.mjtBias.mjBIAS_NONE), int(mujoco.mjtBias.mjBIAS_AFFINE))
_SUPPORTED = sorted(mujoco.mjtSensor(s).name[len("mjSENS_"):].lower()
                    for s in (*_FRAME_SENSORS, *_STATE_SENSORS, _S.mjSENS_TOUCH))
_MAX_JOINT_VELOCITY = 1000.0  # rad/s: Bullet's default cap (100) off
pb: Any = None  # the pybullet module, imported when the first backend is made (see load_pybullet)


def _inside_site(local: np.ndarray, site_type: int, size: np.ndarray) -> np.ndarray:
    """Points [K, 3] in site coordinates inside the site's volume (MuJoCo site sizes)."""
    g = _G
    if site_type == g.mjGEOM_SPHERE:
        return np.linalg.norm(local, axis=1) <= size[0]
    if site_type == g.mjGEOM_BOX:
        return (np.abs(local) <= size).all(axis=1)
    if site_type == g.mjGEOM_ELLIPSOID:
        return ((local / size) ** 2).sum(axis=1) <= 1.0
    if site_type == g.mjGEOM_CYLINDER:
        return (np.linalg.norm(local[:, :2], axis=1) <= size[0]) & (np.abs(local[:, 2]) <= size[1])
    if site_type == g.mjGEOM_CAPSULE:
        axial = np.clip(local[:, 2], -size[1], size[1])
        return np.linalg.norm(local - np.stack([0 * axial, 0 * axial, axial], axis=1), axis=1) <= size[0]
    return np.zeros(len(local), dtype=bool)  # other zone types: only the ray test decides


# -- sensors -------------------------------------------------------------------------------------------------
@dataclass
class _FrameSensor:
    kind: int
    adr: int
    frame: int  # index into the backend's frame table


@dataclass
class _ScalarSensor:
    kind: int
    adr: int
    index: int  # joint index (into layout.pb_joints) or actuator id


@dataclass
class _TouchSensor:
    adr: int
    site: int
    body: int


def _frame_of(model: mujoco.MjModel, objtype: int, objid: int, sensor: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(MuJoCo body, position, quaternion) of a sensor's frame object relative to its body frame."""
    if objtype == _O.mjOBJ_SITE:
        return int(model.site_bodyid[objid]), model.site_pos[objid].copy(), model.site_quat[objid].copy()
    if objtype == _O.mjOBJ_GEOM:
        return int(model.geom_bodyid[objid]), model.geom_pos[objid].copy(), model.geom_quat[objid].copy()
    if objtype == _O.mjOBJ_XBODY:
        return int(objid), np.zeros(3), np.array([1.0, 0, 0, 0])
    if objtype == _O.mjOBJ_BODY:  # MuJoCo's "body" frame sensors use the inertial frame
        return int(objid), model.body_ipos[objid].copy(), model.body_iquat[objid].copy()
    raise ConfigError(f"backend 'pybullet': sensor {sensor!r} is attached to a {mujoco.mjtObj(objtype).name}; "
                      "supported: site, body, xbody, geom")


# -- the backend -------------------------------------------------------------------------------------------
class PyBulletBackend(Backend):
    name = "pybullet"

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str = "cpu", robot: RobotCfg | None = None,
                 armature: bool = True):
        if torch.device(device).type != "cpu":
            raise ValueError(f"backend 'pybullet' runs on the CPU; got device {device!r}")
        super().__init__(model, num_envs, "cpu")
        global pb
        pb = load_pybullet()
        self.robot_cfg = robot_cfg_for(model, robot)
        self._check_actuators()
        xml = pybullet_urdf(self.robot_cfg, model, armature=armature)
        self._clients: list[int] = []
        self._bodies: list[int] = []
        self._link_mass: list[dict[int, float]] = []  # PyBullet link masses that differ from the URDF's, per env
        self._planes: list[int] = []
        try:
            with tempfile.TemporaryDirectory(prefix="robolearn-pybullet-") as tmp:
                path = Path(tmp) / f"{self.robot_cfg.name}.urdf"
                path.write_text(xml)
                for _ in range(num_envs):
                    self._add_env(str(path))
        except Exception:
            self.close()
            raise
        self._setup_sensors()
        m = model
        self._qpos_np = np.zeros((num_envs, m.nq))
        self._qvel_np = np.zeros((num_envs, m.nv))
        self._qpos = torch.from_numpy(self._qpos_np)
        self._qvel = torch.from_numpy(self._qvel_np)
        self._fields = {f: np.repeat(getattr(m, f)[None], num_envs, 0) for f in RANDOMIZABLE_FIELDS}
        self._ctrl = np.zeros((num_envs, m.nu))
        self._act_force = np.zeros((num_envs, m.nu))
        self._nsub = 0
        all_envs = torch.arange(num_envs)
        for field in ("geom_friction", "body_mass"):
            self.set_model_field(field, all_envs, self._fields[field])
        qpos0 = np.repeat(m.qpos0[None], num_envs, 0)
        self.set_state(all_envs, torch.from_numpy(qpos0), torch.zeros(num_envs, m.nv, dtype=torch.float64))

    # -- construction ------------------------------------------------------------------------------------
    def _check_actuators(self) -> None:
        m = self.model
        for a in range(m.nu):
            name = m.actuator(a).name
            kinds = (int(m.actuator_trntype[a]), int(m.actuator_dyntype[a]), int(m.actuator_gaintype[a]))
            bias = int(m.actuator_biastype[a])
            if kinds != _JOINT_FIXED_GAIN or bias not in _AFFINE_BIAS:
                raise ConfigError(f"backend 'pybullet' emulates joint actuators with fixed gain and affine bias "
                                  f"(position/motor/velocity); actuator {name!r} is another kind")

    def _add_env(self, urdf: str) -> None:
        m = self.model
        client = pb.connect(pb.DIRECT)
        if client < 0:
            raise RuntimeError("pybullet: cannot open another DIRECT client")
        self._clients.append(client)
        pb.setTimeStep(float(m.opt.timestep), physicsClientId=client)
        pb.setGravity(*m.opt.gravity.tolist(), physicsClientId=client)
        # Inertias from the URDF (Bullet's default recomputes them from the collision shapes).
        body = pb.loadURDF(urdf, useFixedBase=not self._free_joint(), flags=pb.URDF_USE_INERTIA_FROM_FILE,
                           physicsClientId=client)
        if not hasattr(self, "layout"):
            self.layout = build_layout(m, client, body)
        lay = self.layout
        if not lay.free:  # a fixed base sits where MuJoCo's root link is (Bullet's base pose is its COM frame)
            pos, quat = lay.root_pose
            ipos, iquat = lay.base_inertial
            pb.resetBasePositionAndOrientation(body, (pos + quat_mat(quat) @ ipos).tolist(),
                                               to_pb(quat_mul(quat, iquat)).tolist(), physicsClientId=client)
        plane = -1
        for g in lay.floor_geoms:
            shape = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=client)
            plane = pb.createMultiBody(0, shape, basePosition=m.geom_pos[g].tolist(),
                                       baseOrientation=to_pb(m.geom_quat[g]).tolist(), physicsClientId=client)
            pb.changeDynamics(plane, -1, lateralFriction=1.0, physicsClientId=client)
        for link in lay.link_body:
            pb.changeDynamics(body, link, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0,
                              maxJointVelocity=_MAX_JOINT_VELOCITY, physicsClientId=client)
        # Bullet's default joint motors off; MuJoCo's frictionloss as a zero-velocity motor of that strength.
        friction = m.dof_frictionloss[lay.dof_adr]
        pb.setJointMotorControlArray(body, lay.pb_joints, pb.VELOCITY_CONTROL, targetVelocities=[0.0] * len(friction),
                                     forces=friction.tolist(), physicsClientId=client)
        self._bodies.append(body)
        self._planes.append(plane)
        self._link_mass.append({})

    def _free_joint(self) -> bool:
        return bool((self.model.jnt_type == _J.mjJNT_FREE).any())

    def _setup_sensors(self) -> None:
        m, lay = self.model, self.layout
        joint_index = {int(j): i for i, j in enumerate(np.flatnonzero(m.jnt_type != _J.mjJNT_FREE))}
        frames: dict[tuple[int, int], int] = {}
        self._frame_sensors: list[_FrameSensor] = []
        self._scalar_sensors: list[_ScalarSensor] = []
        self._touch_sensors: list[_TouchSensor] = []
        frame_table = []
        for s in range(m.nsensor):
            kind, objtype, objid = int(m.sensor_type[s]), int(m.sensor_objtype[s]), int(m.sensor_objid[s])
            adr, name = int(m.sensor_adr[s]), m.sensor(s).name
            if kind in _FRAME_SENSORS:
                if m.sensor_reftype[s] != _O.mjOBJ_UNKNOWN:
                    raise ConfigError(f"backend 'pybullet': sensor {name!r} has a reference frame; only world-frame "
                                      "frame sensors are supported")
                key = (objtype, objid)
                if key not in frames:
                    frames[key] = len(frame_table)
                    frame_table.append(_frame_of(m, objtype, objid, name))
                self._frame_sensors.append(_FrameSensor(kind, adr, frames[key]))
            elif kind in (_S.mjSENS_JOINTPOS, _S.mjSENS_JOINTVEL, _S.mjSENS_JOINTACTFRC):
                if objid not in joint_index:
                    raise ConfigError(f"backend 'pybullet': sensor {name!r} is on a free joint; use frame sensors")
                self._scalar_sensors.append(_ScalarSensor(kind, adr, joint_index[objid]))
            elif kind in _STATE_SENSORS:
                self._scalar_sensors.append(_ScalarSensor(kind, adr, objid))
            elif kind == _S.mjSENS_TOUCH:
                self._touch_sensors.append(_TouchSensor(adr, objid, int(m.site_bodyid[objid])))
            else:
                kind_name = mujoco.mjtSensor(kind).name[len("mjSENS_"):].lower()
                raise ConfigError(f"backend 'pybullet' does not compute sensor {name!r} of type {kind_name}; "
                                  f"supported: {', '.join(_SUPPORTED)}")
        touch_frames = []
        for t in self._touch_sensors:  # touch zones need their site's pose too
            key = (int(_O.mjOBJ_SITE), t.site)
            if key not in frames:
                frames[key] = len(frame_table)
                frame_table.append(_frame_of(m, *key, "touch"))
            touch_frames.append(frames[key])
        self._touch_frames = np.array(touch_frames, dtype=int)
        # Bodies whose pose / velocity the sensors need; the base comes from the base state, others from getLinkStates.
        self._kin_bodies = sorted({b for b, _, _ in frame_table})
        for b in self._kin_bodies:
            if b not in lay.body_link:
                raise ConfigError(f"backend 'pybullet': a sensor frame is on body {m.body(b).name!r}, which is not a "
                                  "link of the robot")
        slot = {b: i for i, b in enumerate(self._kin_bodies)}
        self._kin_links = [lay.body_link[b] for b in self._kin_bodies]
        self._kin_base = [i for i, link in enumerate(self._kin_links) if link == -1]
        self._kin_other = [i for i, link in enumerate(self._kin_links) if link != -1]
        self._other_links = [self._kin_links[i] for i in self._kin_other]
        self._frame_slot = np.array([slot[b] for b, _, _ in frame_table], dtype=int)
        self._frame_pos = np.array([p for _, p, _ in frame_table]).reshape(-1, 3)
        self._frame_quat = np.array([q for _, _, q in frame_table]).reshape(-1, 4)
        n, nb = self.num_envs, len(self._kin_bodies)
        self._kin = {k: np.zeros((n, nb, d)) for k, d in (("x", 3), ("q", 4), ("com", 3), ("v", 3), ("w", 3))}
        self._kin["q"][..., 0] = 1.0

    # -- state -------------------------------------------------------------------------------------------
    @property
    def qpos(self) -> torch.Tensor:
        return self._qpos

    @property
    def qvel(self) -> torch.Tensor:
        return self._qvel

    def _read_state(self, envs: np.ndarray) -> None:
        """PyBullet state of `envs` -> qpos / qvel (MuJoCo layout) and the sensor bodies' kinematics."""
        lay = self.layout
        joints, links = lay.pb_joints, self._other_links
        base, joint_q, joint_v, link_rows = [], [], [], []
        for e in envs.tolist():
            c, b = self._clients[e], self._bodies[e]
            if lay.free:
                pos, orn = pb.getBasePositionAndOrientation(b, physicsClientId=c)
                lin, ang = pb.getBaseVelocity(b, physicsClientId=c)
                base.append((*pos, *orn, *lin, *ang))
            states = pb.getJointStates(b, joints, physicsClientId=c)
            joint_q.append([s[0] for s in states])
            joint_v.append([s[1] for s in states])
            if links:
                rows = pb.getLinkStates(b, links, computeLinkVelocity=1, computeForwardKinematics=1,
                                        physicsClientId=c)
                link_rows.append([(*r[0], *r[4], *r[5], *r[6], *r[7]) for r in rows])
        self._qpos_np[np.ix_(envs, lay.qpos_adr)] = joint_q
        self._qvel_np[np.ix_(envs, lay.dof_adr)] = joint_v
        kin = self._kin
        if lay.free:
            arr = np.array(base)
            com, com_q, v, w = arr[:, 0:3], to_mj(arr[:, 3:7]), arr[:, 7:10], arr[:, 10:13]
            ipos, iquat = lay.base_inertial
            quat = quat_mul(com_q, quat_conj(iquat))  # base link frame = COM frame * inverse(inertial frame)
            mat = quat_mat(quat)
            pos = com - rotate(mat, np.broadcast_to(ipos, com.shape))
            self._qpos_np[envs, 0:3] = pos
            self._qpos_np[envs, 3:7] = quat
            self._qvel_np[envs, 0:3] = v + np.cross(w, pos - com)  # velocity of the link origin
            self._qvel_np[envs, 3:6] = rotate(mat.swapaxes(-1, -2), w)  # body frame, as MuJoCo's free joint
            for i in self._kin_base:
                kin["x"][envs, i], kin["q"][envs, i], kin["com"][envs, i] = pos, quat, com
                kin["v"][envs, i], kin["w"][envs, i] = v, w
        else:
            pos, quat = lay.root_pose
            for i in self._kin_base:  # fixed base: the root link does not move
                kin["x"][envs, i], kin["q"][envs, i] = pos, quat
                kin["com"][envs, i] = pos + quat_mat(quat) @ lay.base_inertial[0]
                kin["v"][envs, i], kin["w"][envs, i] = 0.0, 0.0
        if links:
            arr = np.array(link_rows)  # [k, links, 16]: com, link frame pos, link frame quat, com vel, ang vel
            idx = np.ix_(envs, self._kin_other)
            kin["com"][idx], kin["x"][idx], kin["q"][idx] = arr[..., 0:3], arr[..., 3:6], to_mj(arr[..., 6:10])
            kin["v"][idx], kin["w"][idx] = arr[..., 10:13], arr[..., 13:16]

    def set_state(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        env_ids, (qpos, qvel) = rows_as_ids(env_ids, qpos, qvel)
        if len(env_ids) == 0:
            return
        lay = self.layout
        envs = env_ids.numpy().astype(int)
        qpos_np = qpos.to(torch.float64).numpy()
        qvel_np = qvel.to(torch.float64).numpy()
        jq, jv = qpos_np[:, lay.qpos_adr], qvel_np[:, lay.dof_adr]
        if lay.free:
            pos, quat = qpos_np[:, 0:3], qpos_np[:, 3:7] / np.linalg.norm(qpos_np[:, 3:7], axis=1, keepdims=True)
            mat = quat_mat(quat)
            ipos, iquat = lay.base_inertial
            com = pos + rotate(mat, np.broadcast_to(ipos, pos.shape))
            com_q = to_pb(quat_mul(quat, np.broadcast_to(iquat, quat.shape)))
            w = rotate(mat, qvel_np[:, 3:6])
            v = qvel_np[:, 0:3] + np.cross(w, com - pos)
        for row, e in enumerate(envs.tolist()):
            c, b = self._clients[e], self._bodies[e]
            if lay.free:
                pb.resetBasePositionAndOrientation(b, com[row].tolist(), com_q[row].tolist(), physicsClientId=c)
                pb.resetBaseVelocity(b, v[row].tolist(), w[row].tolist(), physicsClientId=c)
            pb.resetJointStatesMultiDof(b, lay.pb_joints, [[x] for x in jq[row].tolist()],
                                        [[x] for x in jv[row].tolist()], physicsClientId=c)
        self._read_state(envs)

    # -- model parameters (domain randomization) ----------------------------------------------------------
    def set_model_field(self, field: str, env_ids: torch.Tensor, values: np.ndarray) -> None:
        if field not in self._fields:
            raise ConfigError(f"backend 'pybullet' cannot set model field {field!r} per env; supported: "
                              f"{', '.join(RANDOMIZABLE_FIELDS)}")
        env_ids, (values,) = rows_as_ids(env_ids, values)
        if len(env_ids) == 0:
            return
        envs = env_ids.numpy().astype(int)
        self._fields[field][envs] = values.numpy() if isinstance(values, torch.Tensor) else values
        if field == "geom_friction":
            self._apply_friction(envs)
        elif field == "body_mass":
            self._apply_mass(envs)
        # actuator fields are read by the torque computation at every physics step

    def model_field(self, field: str, env_id: int) -> np.ndarray:
        if field not in self._fields:
            return getattr(self.model, field)
        return self._fields[field][env_id]

    def _apply_friction(self, envs: np.ndarray) -> None:
        lay, friction = self.layout, self._fields["geom_friction"]
        for e in envs.tolist():
            floor = max((friction[e, g, 0] for g in lay.floor_geoms), default=0.0)
            for link, geoms in lay.link_geoms.items():
                mu = max(float(friction[e, geoms, 0].max()), floor)  # MuJoCo: max of the pair; Bullet: product
                pb.changeDynamics(self._bodies[e], link, lateralFriction=mu, physicsClientId=self._clients[e])

    def _apply_mass(self, envs: np.ndarray) -> None:
        """Mass changes of MuJoCo bodies go to their PyBullet link of the same name. The inertia is passed along:
        PyBullet's changeDynamics(mass=...) alone recomputes it from the collision shape."""
        lay, mass = self.layout, self._fields["body_mass"]
        for e in envs.tolist():
            for b, link in lay.body_link.items():
                if b == 0 or (link == -1 and not lay.free):
                    continue  # the world / a fixed base: a mass would set it free
                new = max(lay.link_mass[link] + float(mass[e, b] - self.model.body_mass[b]), 1e-6)
                if new != self._link_mass[e].get(link, lay.link_mass[link]):
                    pb.changeDynamics(self._bodies[e], link, mass=new, localInertiaDiagonal=lay.link_inertia[link],
                                      physicsClientId=self._clients[e])
                    self._link_mass[e][link] = new

    # -- stepping ----------------------------------------------------------------------------------------
    def _joint_torques(self, ctrl: np.ndarray) -> np.ndarray:
        """Actuator forces (stored for the actuatorfrc sensor) and the joint torques [N, nj] they cause, plus
        passive damping and stiffness, from the current state."""
        m, lay = self.model, self.layout
        jnt = m.actuator_trnid[:, 0]
        gear = m.actuator_gear[:, 0]
        length = self._qpos_np[:, m.jnt_qposadr[jnt]] * gear
        velocity = self._qvel_np[:, m.jnt_dofadr[jnt]] * gear
        gain, bias = self._fields["actuator_gainprm"][:, :, 0], self._fields["actuator_biasprm"]
        force = gain * ctrl + bias[:, :, 0] + bias[:, :, 1] * length + bias[:, :, 2] * velocity
        limited = m.actuator_forcelimited.astype(bool)
        if limited.any():
            fr = self._fields["actuator_forcerange"]
            force[:, limited] = np.clip(force[:, limited], fr[:, limited, 0], fr[:, limited, 1])
        self._act_force = force
        tau = np.zeros((self.num_envs, m.nv))
        np.add.at(tau, (slice(None), m.jnt_dofadr[jnt]), force * gear)
        q = self._qpos_np[:, lay.qpos_adr]
        dq = self._qvel_np[:, lay.dof_adr]
        joints = np.flatnonzero(m.jnt_type != _J.mjJNT_FREE)
        passive = -m.dof_damping[lay.dof_adr] * dq - m.jnt_stiffness[joints] * (q - m.qpos_spring[lay.qpos_adr])
        return tau[:, lay.dof_adr] + passive

    def _buffers(self, nsub: int) -> None:
        if nsub != self._nsub:
            self._sensor_out = np.zeros((self.num_envs, nsub, self.model.nsensordata))
            self._sensor_t = torch.from_numpy(self._sensor_out)
            self._nsub = nsub

    def step(self, ctrl: torch.Tensor) -> torch.Tensor:
        nsub = ctrl.shape[1]
        self._buffers(nsub)
        control = ctrl.detach().to(torch.float64).numpy()
        all_envs = np.arange(self.num_envs)
        joints = self.layout.pb_joints
        for k in range(nsub):
            self._ctrl = control[:, k]
            tau = self._joint_torques(self._ctrl)
            out = self._sensor_out[:, k]
            self._state_sensors(out)
            contacts = []
            for e, (c, b, plane) in enumerate(zip(self._clients, self._bodies, self._planes, strict=True)):
                pb.setJointMotorControlArray(b, joints, pb.TORQUE_CONTROL, forces=tau[e].tolist(), physicsClientId=c)
                pb.stepSimulation(physicsClientId=c)
                if self._touch_sensors and plane >= 0:
                    contacts.append(pb.getContactPoints(b, plane, physicsClientId=c))
            self._touch(out, contacts)
            self._read_state(all_envs)
        return self._sensor_t

    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Sensors at the current state; touch sensors read 0 (PyBullet solves contact forces only in a step)."""
        self._joint_torques(self._ctrl)
        out = np.zeros((self.num_envs, self.model.nsensordata))
        self._state_sensors(out)
        return torch.from_numpy(out if env_ids.dtype == torch.bool else out[env_ids.numpy()])

    # -- sensors -----------------------------------------------------------------------------------------
    def _frames(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """World position, quaternion, rotation matrix, linear and angular velocity of every sensor frame."""
        kin, slot = self._kin, self._frame_slot
        body_q = kin["q"][:, slot]
        pos = kin["x"][:, slot] + rotate(quat_mat(body_q), np.broadcast_to(self._frame_pos, body_q.shape[:-1] + (3,)))
        quat = quat_mul(body_q, np.broadcast_to(self._frame_quat, body_q.shape))
        w = kin["w"][:, slot]
        linvel = kin["v"][:, slot] + np.cross(w, pos - kin["com"][:, slot])
        return pos, quat, quat_mat(quat), linvel, w

    def _state_sensors(self, out: np.ndarray) -> None:
        """Kinematic and actuator sensors of the current state into `out` [N, nsensordata]; touch columns zeroed."""
        m, lay = self.model, self.layout
        out[:] = 0.0
        if self._frame_sensors or self._touch_sensors:
            self._frame_cache = self._frames()
        if self._frame_sensors:
            pos, quat, mat, linvel, angvel = self._frame_cache
            for s in self._frame_sensors:
                f, a = s.frame, s.adr
                if s.kind == _S.mjSENS_FRAMEPOS:
                    out[:, a:a + 3] = pos[:, f]
                elif s.kind == _S.mjSENS_FRAMEQUAT:
                    out[:, a:a + 4] = quat[:, f]
                elif s.kind in (_S.mjSENS_FRAMEXAXIS, _S.mjSENS_FRAMEYAXIS, _S.mjSENS_FRAMEZAXIS):
                    out[:, a:a + 3] = mat[:, f, :, s.kind - _S.mjSENS_FRAMEXAXIS]
                elif s.kind == _S.mjSENS_FRAMELINVEL:
                    out[:, a:a + 3] = linvel[:, f]
                elif s.kind == _S.mjSENS_FRAMEANGVEL:
                    out[:, a:a + 3] = angvel[:, f]
                elif s.kind == _S.mjSENS_GYRO:
                    out[:, a:a + 3] = rotate(mat[:, f].swapaxes(-1, -2), angvel[:, f])
                else:  # velocimeter
                    out[:, a:a + 3] = rotate(mat[:, f].swapaxes(-1, -2), linvel[:, f])
        for s in self._scalar_sensors:
            i, a = s.index, s.adr
            if s.kind == _S.mjSENS_JOINTPOS:
                out[:, a] = self._qpos_np[:, lay.qpos_adr[i]]
            elif s.kind == _S.mjSENS_JOINTVEL:
                out[:, a] = self._qvel_np[:, lay.dof_adr[i]]
            elif s.kind == _S.mjSENS_JOINTACTFRC:
                on_joint = np.flatnonzero(m.jnt_dofadr[m.actuator_trnid[:, 0]] == lay.dof_adr[i])
                out[:, a] = (self._act_force[:, on_joint] * m.actuator_gear[on_joint, 0]).sum(axis=1)
            elif s.kind == _S.mjSENS_ACTUATORFRC:
                out[:, a] = self._act_force[:, i]
            else:  # actuatorpos / actuatorvel
                jnt = m.actuator_trnid[i, 0]
                state = self._qpos_np[:, m.jnt_qposadr[jnt]] if s.kind == _S.mjSENS_ACTUATORPOS \
                    else self._qvel_np[:, m.jnt_dofadr[jnt]]
                out[:, a] = state * m.actuator_gear[i, 0]
        cutoff = m.sensor_cutoff
        for s in np.flatnonzero(cutoff > 0):
            a, d = m.sensor_adr[s], m.sensor_dim[s]
            if m.sensor_type[s] != _S.mjSENS_TOUCH:
                out[:, a:a + d] = np.clip(out[:, a:a + d], -cutoff[s], cutoff[s])

    def _touch(self, out: np.ndarray, contacts: list[tuple]) -> None:
        """Touch sensors from the floor contacts of the last physics step (sensor frames: pre-step, as MuJoCo)."""
        if not self._touch_sensors or not contacts:
            return
        rows = [(e, c[3], *c[5], *c[6], *c[7], c[9]) for e, env in enumerate(contacts) for c in env if c[9] > 0]
        if not rows:
            return
        arr = np.array(rows)
        env, link = arr[:, 0].astype(int), arr[:, 1].astype(int)
        point = 0.5 * (arr[:, 2:5] + arr[:, 5:8])  # MuJoCo's contact position: midway between the surfaces
        ray = -arr[:, 8:11]  # Bullet's normal points from the floor to the robot; MuJoCo's ray points away
        force = arr[:, 11]
        body = np.array([self.layout.link_body[int(x)] for x in link])
        pos, _, mat, _, _ = self._frame_cache
        m = self.model
        for t, frame in zip(self._touch_sensors, self._touch_frames, strict=True):
            hit = np.flatnonzero(body == t.body)
            if not len(hit):
                continue
            site_pos, site_mat = pos[env[hit], frame], mat[env[hit], frame]
            local = rotate(site_mat.swapaxes(-1, -2), point[hit] - site_pos)
            size, kind = m.site_size[t.site], int(m.site_type[t.site])
            counted = _inside_site(local, kind, size)
            for i in np.flatnonzero(~counted):  # outside the zone: MuJoCo's ray test
                counted[i] = mujoco.mju_rayGeom(site_pos[i], site_mat[i].reshape(9), size, point[hit[i]],
                                                ray[hit[i]], kind) >= 0
            np.add.at(out[:, t.adr], env[hit[counted]], force[hit[counted]])
        if m.sensor_cutoff.any():
            for t in self._touch_sensors:
                s = int(np.flatnonzero(m.sensor_adr == t.adr)[0])
                if m.sensor_cutoff[s] > 0:
                    out[:, t.adr] = np.minimum(out[:, t.adr], m.sensor_cutoff[s])

    def close(self) -> None:
        for client in self._clients:
            try:
                pb.disconnect(physicsClientId=client)
            except Exception:  # the client is already gone
                pass
        self._clients = []
