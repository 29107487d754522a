"""Run a legged policy bundle (deploy.yaml version 2) in PyBullet, written only from docs/bundle.md and deploy.yaml.

No robolearn import: this is what a user porting a bundle to another simulator writes. It reads the bundle's
contract, finds the robot's URDF from `robot_model.urdf`, builds the training collision shapes, runs the PD law
at `control.rate_hz` with targets held between policy steps and the trained latency, rebuilds the observation
terms from PyBullet's state, commands a forward velocity and reports whether the robot walks: survival (no fall:
body tilt under 60 deg and base above 0.15 m), mean forward speed against the command, yaw drift, base height.

    python benchmarks/bundle_in_pybullet.py BUNDLE [--vx 0.5] [--seconds 15] [--json OUT]

A version 1 bundle lacks the contract; make a version 2 copy first (docs/bundle.md, "Version 1").
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pybullet as pb
import yaml


# -- the bundle -------------------------------------------------------------------------------------------------
def load_manifest(folder: Path) -> dict:
    m = yaml.safe_load((folder / "deploy.yaml").read_text())
    if m.get("format") != "robolearn-bundle" or m.get("version") != 2:
        sys.exit(f"{folder}: needs a robolearn-bundle deploy.yaml version 2 (got version {m.get('version')})")
    if m["kind"] != "legged" or not m["robot_model"]["floating_base"]:
        sys.exit("this script runs legged (floating-base) bundles")
    return m


def acting_graph(m: dict) -> dict:
    return next(g for g in m["graphs"] if g["role"] in ("policy", "low_level"))


def find_urdf(urdf: dict) -> Path:
    """docs/bundle.md, "Finding the robot model": a pip package's robots folder, or a path."""
    if urdf["package"] == "example-robot-data":
        dist = importlib.metadata.distribution("example-robot-data")
        if urdf["version"] and dist.version != urdf["version"]:
            print(f"note: example-robot-data {dist.version} installed, the bundle was trained with {urdf['version']}")
        path = Path(str(dist.locate_file("cmeel.prefix/share/example-robot-data/robots"))) / urdf["path"]
    elif urdf["package"] is None:
        path = Path(urdf["path"])
    else:
        sys.exit(f"unknown robot package {urdf['package']!r}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != urdf["sha256"]:
        print(f"warning: {path} sha256 {digest[:12]}... differs from the trained model's {urdf['sha256'][:12]}...")
    return path


def quat_to_rpy(q: list[float]) -> tuple[float, float, float]:
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def rpy_matrix(rpy: list[float]) -> np.ndarray:
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def training_urdf(path: Path, m: dict) -> str:
    """The URDF as trained: package:// paths resolved, visuals dropped, the collision meshes replaced by the
    bundle's collision shapes, joint armature added to each child link's inertia about the joint axis."""
    root = ET.parse(path).getroot()
    links = {link.get("name"): link for link in root.findall("link")}
    for link in links.values():
        for tag in ("visual", "collision"):
            for element in link.findall(tag):
                link.remove(element)
    for g in m["robot_model"]["collision"]:
        col = ET.SubElement(links[g["link"]], "collision")
        rpy = quat_to_rpy(g["quat"])
        ET.SubElement(col, "origin", xyz=" ".join(map(str, g["pos"])), rpy=" ".join(map(str, rpy)))
        geometry = ET.SubElement(col, "geometry")
        s = g["size"]
        if g["shape"] == "sphere":
            ET.SubElement(geometry, "sphere", radius=str(s[0]))
        elif g["shape"] == "capsule":
            ET.SubElement(geometry, "capsule", radius=str(s[0]), length=str(2 * s[1]))
        elif g["shape"] == "cylinder":
            ET.SubElement(geometry, "cylinder", radius=str(s[0]), length=str(2 * s[1]))
        elif g["shape"] == "box":
            ET.SubElement(geometry, "box", size=" ".join(str(2 * v) for v in s))
        else:
            sys.exit(f"collision shape {g['shape']} is not handled here")
    joints = m["joints"]
    armature = dict(zip(joints["names"], joints["armature"], strict=True))
    for joint in root.findall("joint"):
        name = joint.get("name")
        if name not in armature or armature[name] == 0:
            continue
        axis = np.array([float(v) for v in joint.find("axis").get("xyz").split()])
        inertial = links[joint.find("child").get("link")].find("inertial")
        origin = inertial.find("origin")
        rot = rpy_matrix([float(v) for v in origin.get("rpy", "0 0 0").split()]) if origin is not None else np.eye(3)
        a = rot.T @ (axis / np.linalg.norm(axis))  # the axis in the inertial frame
        inertia = inertial.find("inertia")
        keys = [["ixx", "ixy", "ixz"], ["ixy", "iyy", "iyz"], ["ixz", "iyz", "izz"]]
        tensor = np.array([[float(inertia.get(k)) for k in row] for row in keys]) + armature[name] * np.outer(a, a)
        # A rigid body's moments obey low + mid >= high; Bullet zeroes a tensor that does not. The armature can
        # break it (a light link, a large rotor): raise the two moments across the axis just enough (a thin disc).
        for _ in range(20):
            low, mid, high = np.linalg.eigvalsh(tensor)
            if low + mid >= high * (1 + 1e-3):
                break
            tensor += (0.5 * (high - low - mid) + 1e-3 * high) * (np.eye(3) - np.outer(a, a))
        for i, row in enumerate(keys):
            for j, k in enumerate(row):
                inertia.set(k, repr(float(tensor[i, j])))
    return ET.tostring(root, encoding="unicode")


# -- observations (docs/bundle.md, "Observation terms") -----------------------------------------------------------
def rotation(quat_xyzw) -> np.ndarray:
    return np.array(pb.getMatrixFromQuaternion(quat_xyzw)).reshape(3, 3)  # body -> world


def measure(term: str, st: dict, m: dict) -> np.ndarray:
    r = st["R"]
    if term == "base_ang_vel":
        return r.T @ st["ang_vel_world"]
    if term == "projected_gravity":
        return r.T @ np.array([0.0, 0.0, -1.0])
    if term == "velocity_command":
        return st["command"]
    if term == "joint_pos":
        return st["q"] - np.asarray(m["joints"]["default_pos"])
    if term == "joint_vel":
        return st["dq"]
    if term == "last_action":
        return st["last_action"]
    sys.exit(f"observation term {term!r} is not measured by this script")


def build_frame(st: dict, m: dict) -> np.ndarray:
    parts = []
    for t in m["observation"]:
        value = measure(t["name"], st, m) * np.asarray(t["scale"])
        if t["clip"] is not None:
            value = np.clip(value, -t["clip"], t["clip"])
        parts.append(value)
    return np.concatenate(parts)


# -- the run ------------------------------------------------------------------------------------------------------
def run(folder: Path, vx: float, seconds: float, settle: float, latency: float | None) -> dict:
    m = load_manifest(folder)
    graph = acting_graph(m)
    if graph.get("chunk") is not None:
        sys.exit("chunked policies are not handled here")
    session = ort.InferenceSession(str(folder / graph["file"]), providers=["CPUExecutionProvider"])
    in_name, out_name = graph["inputs"][0]["name"], graph["outputs"][0]["name"]
    joints, action, control = m["joints"], m["action"], m["control"]
    sim = m["domain"]["simulator"]
    n = len(joints["names"])
    kp, kd = np.asarray(joints["kp"]), np.asarray(joints["kd"])
    tau_max, default = np.asarray(joints["torque_limits"]), np.asarray(joints["default_pos"])
    lo, hi = np.asarray(joints["pos_limits"]).T

    dt = 1.0 / control["rate_hz"]  # physics step = PD rate, as trained
    decimation = int(round(control["rate_hz"] / graph["rate_hz"]))
    lat_lo, lat_hi = control["latency_s"]
    delay = int(round(((lat_lo + lat_hi) / 2 if latency is None else latency) / dt))  # physics steps
    hold = control["between_steps"] == "hold"

    pb.connect(pb.DIRECT)
    pb.setTimeStep(dt)
    pb.setGravity(*sim["gravity"])
    plane_col = pb.createCollisionShape(pb.GEOM_PLANE)
    plane = pb.createMultiBody(0, plane_col)
    urdf = find_urdf(m["robot_model"]["urdf"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "robot.urdf"
        path.write_text(training_urdf(urdf, m))
        init = m["initial_state"]
        robot = pb.loadURDF(str(path), init["base_pos"], [0, 0, 0, 1], flags=pb.URDF_USE_INERTIA_FROM_FILE)
    index = {pb.getJointInfo(robot, j)[1].decode(): j for j in range(pb.getNumJoints(robot))}
    ids = [index[name] for name in joints["names"]]
    # Contact friction: the pair's coefficient is the trained nominal one (Bullet multiplies the two bodies').
    mu = sim["contact"].get("nominal_friction", [1.0])[0]
    pb.changeDynamics(plane, -1, lateralFriction=1.0)
    for link in range(-1, pb.getNumJoints(robot)):
        pb.changeDynamics(robot, link, lateralFriction=mu, linearDamping=0.0, angularDamping=0.0,
                          maxJointVelocity=1000.0)
    for j, q0 in zip(ids, init["joint_pos"], strict=True):
        pb.resetJointState(robot, j, q0, 0.0)
    # Friction loss: a zero-velocity motor limited to the friction torque; the PD torque is added on top.
    pb.setJointMotorControlArray(robot, ids, pb.VELOCITY_CONTROL, targetVelocities=[0.0] * n,
                                 forces=joints["friction_loss"])

    def read() -> dict:
        pos, quat = pb.getBasePositionAndOrientation(robot)
        lin, ang = pb.getBaseVelocity(robot)
        states = pb.getJointStates(robot, ids)
        return {"pos": np.array(pos), "R": rotation(quat), "lin_vel_world": np.array(lin),
                "ang_vel_world": np.array(ang), "q": np.array([s[0] for s in states]),
                "dq": np.array([s[1] for s in states])}

    target = default.copy()  # the PD target now
    start, goal, k = target.copy(), target.copy(), 0  # the target moves from start to goal (hold: jumps to goal)
    pending: list[tuple[int, np.ndarray]] = []  # (physics step from which it applies, new target)
    last_action = np.zeros(n)
    steps_total = int(round((settle + seconds) / dt))
    log = []
    fell = None
    start_wall = time.perf_counter()
    for step in range(steps_total):
        t = step * dt
        st = read()
        if step % decimation == 0:  # a policy step: observe, act, schedule the new target
            command = np.array([vx if t >= settle else 0.0, 0.0, 0.0])
            st.update(command=command, last_action=last_action)
            obs = build_frame(st, m).astype(np.float32)[None]
            raw = session.run([out_name], {in_name: obs})[0][0].astype(np.float64)
            last_action = np.clip(raw, -action["clip"], action["clip"])
            new = default + action["scale"] * last_action
            if action["target_clip"] == "joint_range":
                new = np.clip(new, lo, hi)
            pending.append((step + delay, new))
        while pending and pending[0][0] <= step:  # the new target takes effect (after the latency)
            start, goal, k = target.copy(), pending.pop(0)[1], 0
        k += 1
        target = goal if hold else start + (goal - start) * min(1.0, k / decimation)
        tau = np.clip(kp * (target - st["q"]) - kd * st["dq"], -tau_max, tau_max)
        pb.setJointMotorControlArray(robot, ids, pb.TORQUE_CONTROL, forces=tau.tolist())
        pb.stepSimulation()
        if step % decimation == 0:
            up = st["R"][:, 2]
            heading = np.array([st["R"][0, 0], st["R"][1, 0], 0.0])
            heading /= max(np.linalg.norm(heading), 1e-9)
            log.append({"t": t, "x": st["pos"][0], "y": st["pos"][1], "z": st["pos"][2],
                        "v_fwd": float(st["lin_vel_world"] @ heading), "tilt_deg": math.degrees(math.acos(
                            max(-1.0, min(1.0, up[2])))), "yaw": math.atan2(st["R"][1, 0], st["R"][0, 0])})
            if fell is None and (log[-1]["tilt_deg"] > 60.0 or st["pos"][2] < 0.15):
                fell = t
    wall = time.perf_counter() - start_wall
    pb.disconnect()

    walk = [r for r in log if r["t"] >= settle + 2.0]  # 2 s to accelerate, as a settling time
    mean_v = float(np.mean([r["v_fwd"] for r in walk])) if walk else float("nan")
    walked = [r for r in log if r["t"] >= settle]
    dist = float(math.hypot(walked[-1]["x"] - walked[0]["x"], walked[-1]["y"] - walked[0]["y"])) if walked else 0.0
    return {
        "bundle": str(folder), "task": m["task"], "command_vx_m_s": vx, "seconds_commanded": seconds,
        "settle_s": settle, "physics_dt_s": dt, "decimation": decimation, "latency_steps": delay,
        "targets_between_steps": control["between_steps"], "survived": fell is None, "fell_at_s": fell,
        "mean_forward_speed_m_s": round(mean_v, 3), "speed_ratio": round(mean_v / vx, 3) if vx else None,
        "distance_m": round(dist, 3),
        "yaw_drift_rad": round(walked[-1]["yaw"] - walked[0]["yaw"], 3) if walked else None,
        "mean_base_height_m": round(float(np.mean([r["z"] for r in walk])), 3) if walk else None,
        "max_tilt_deg": round(max(r["tilt_deg"] for r in log), 1), "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--vx", type=float, default=0.5, help="forward velocity command, m/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the command is held")
    parser.add_argument("--settle", type=float, default=1.0, help="standing (zero command) before it, s")
    parser.add_argument("--latency", type=float, default=None, help="action latency, s (default: trained mean)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    result = run(args.bundle, args.vx, args.seconds, args.settle, args.latency)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
