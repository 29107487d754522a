"""`robolearn[deploy]` on its own, as a robot computer installs it: a fresh virtual environment (no system site
packages) with only the base dependencies and the deploy extra has no torch, MuJoCo, pybullet or matplotlib, and
its `robolearn deploy` drives the Go2 twin over DDS.

The twin is the DDS robot server (`robolearn.ros.dds_sim_server`, MuJoCo) run by this interpreter (the full
install) in another process on the loopback interface; it starts lying down and prints its true base position
with the wall-clock time. The deploy CLI logs its mode changes with the wall-clock time, so the robot's track can
be cut at them: lying when Stand began, up when Run began, walking forward once the command applied (1 s after Run
in `--auto`), not before.

The venv is built from a copy of the source tree (pip writes build files next to the sources) and downloads its
packages through pip's configured index and cache (about 20-30 s with the wheels at hand); without a reachable
package index the tests are skipped.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from dds_domain import new_domain

ROOT = Path(__file__).resolve().parent.parent
# What `pip install <tree>` needs: the project files and the declaration folders setup.py installs as data.
SOURCES = ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "package.xml", "resource", "robolearn", "launch",
           "sim", "hardware", "policies")
HEAVY = ("torch", "mujoco", "example_robot_data", "pybullet", "matplotlib", "tensorboard", "jax", "warp")
pytestmark = pytest.mark.slow  # ~20-30 s to build the venv
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?:INFO|WARNING|ERROR) robolearn\.deploy: (.*)$")

# The DDS robot server, printing `pos <time.time()> <simulated time> x y z` every 25 physics steps (50 ms).
TRACKED_SERVER = """
import signal, sys, threading, time
from robolearn.ros.dds_sim_server import DdsSimServer

class Tracked(DdsSimServer):
    def step(self):
        super().step()
        if self.steps % 25 == 0:
            x, y, z = self.sim.base_pos
            print(f"pos {time.time():.4f} {self.steps * self.dt:.4f} {x:.4f} {y:.4f} {z:.4f}", flush=True)

stop = threading.Event()
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: stop.set())
server = Tracked("go2", "unitree", 500.0, domain_id=int(sys.argv[1]), network_interface="lo", start="lying")
try:
    server.run(stop, on_ready=lambda: print("ready", flush=True))
finally:
    server.close()
"""


def _index_unreachable() -> str | None:
    """Why pip cannot download packages here, or None. Probes the index pip uses (PIP_INDEX_URL, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return None
    except OSError as exc:
        return f"package index unreachable ({url}: {exc})"


def _env() -> dict[str, str]:
    """This environment without anything that would let the venv see the main install."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding `pip install "<copy of the tree>[deploy]"`."""
    reason = _index_unreachable()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("deploy-venv")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    venv = base / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env(), timeout=120)
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{src}[deploy]"],
                         capture_output=True, text=True, env=_env(), cwd=base, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"deploy venv built in {time.monotonic() - t0:.1f} s")
    return venv / "bin"


def run_in(bin_dir: Path, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, env=_env(),
                          cwd=cwd or bin_dir.parent, timeout=timeout)


def test_the_deploy_extra_has_no_torch_mujoco_pybullet_or_matplotlib(deploy_venv):
    find = run_in(deploy_venv, "python", "-c", f"import importlib.util as u; "
                                               f"print([m for m in {HEAVY!r} if u.find_spec(m)])")
    assert find.returncode == 0 and find.stdout.strip() == "[]", find.stdout + find.stderr
    for module in ("torch", "mujoco"):
        out = run_in(deploy_venv, "python", "-c", f"import {module}")
        assert out.returncode == 1 and f"No module named '{module}'" in out.stderr, out.stderr
    # what it has: the runtime's and the DDS transport's libraries
    out = run_in(deploy_venv, "python", "-c", "import onnxruntime, cyclonedds, robolearn.deploy.runtime, "
                                              "robolearn.ros.dds; print('ok')")
    assert out.stdout.strip() == "ok", out.stderr
    out = run_in(deploy_venv, "robolearn", "deploy", "--help")
    assert out.returncode == 0 and "--transport" in out.stdout, out.stderr
    # training needs the train extra: one line that says which, no traceback
    out = run_in(deploy_venv, "robolearn", "train", "go2-flat")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == ("error: robolearn train: torch is not installed (it comes with the train extra): "
                                  "pip install torch==2.13.0 && pip install 'robolearn[train]' (from a checkout: "
                                  "pip install -e '.[train]')"), out.stderr
    # the MuJoCo twin is not there either: the sim transport says what to install
    out = run_in(deploy_venv, "robolearn", "deploy", "--robot", "go2", "--policy", "go2-flat", "--auto",
                 "--duration", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "transport 'sim'" in out.stderr and "robolearn[train]" in out.stderr, out.stderr


def _log_times(stderr: str) -> dict[str, float]:
    """Wall-clock time (s since the epoch) of the deploy CLI's first log line starting with each message."""
    times: dict[str, float] = {}
    for line in stderr.splitlines():
        m = LOG_TIME.match(line)
        if m:
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            times.setdefault(m.group(2).split(":")[0], stamp)
    return times


def _base_at(track: np.ndarray, t: float) -> np.ndarray:
    """(simulated time, x, y, z) last reported at or before wall-clock time t."""
    i = int(np.searchsorted(track[:, 0], t, side="right")) - 1
    assert i >= 0 and t - track[i, 0] < 0.25, f"no base position near t={t}"
    return track[i, 1:]


def test_the_deploy_venv_walks_the_go2_twin_over_dds(deploy_venv, tmp_path):
    domain = new_domain()
    server = subprocess.Popen([sys.executable, "-c", TRACKED_SERVER, str(domain)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            line = server.stdout.readline()
            if line.strip() == "ready":
                break
            if not line and server.poll() is not None:
                pytest.fail(f"robot server did not start: {server.stderr.read()[-2000:]}")
        report = tmp_path / "deploy.json"
        # Robot process, runtime and DDS threads share the cores (2 here): state and policy timeouts as in
        # test_deploy_dds.py. --auto: stand 0.5 s after the first state, run once up, the command 1 s later,
        # stop 1 s before the end.
        out = run_in(deploy_venv, "robolearn", "deploy", "--robot", "go2", "--policy", "go2-flat", "--transport",
                     "dds", "--interface", "lo", "--set", f"dds.domain_id={domain}", "--set", "stand.duration_s=1.0",
                     "--set", "safety.state_timeout_ms=250", "--set", "safety.policy_timeout_ms=250", "--auto",
                     "--duration", "7", "--cmd", "0.5,0,0", "--report", str(report), timeout=90, cwd=tmp_path)
    finally:
        server.terminate()
        try:
            track_out, _ = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            track_out, _ = server.communicate()
    assert report.is_file(), out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(report.read_text())
    track = np.array([[float(v) for v in line.split()[1:]] for line in track_out.splitlines()
                      if line.startswith("pos ")])
    logged = _log_times(out.stderr)
    assert {"stand", "run", "stop requested in run"} <= set(logged), out.stderr
    t_stand, t_run, t_stop = logged["stand"], logged["run"], logged["stop requested in run"]
    t_cmd = t_run + 1.0  # --auto: the command applies 1 s after Run starts
    # Ground truth from the robot process: lying when told to stand, up when told to run.
    assert _base_at(track, t_stand)[3] < 0.15, _base_at(track, t_stand)
    assert _base_at(track, t_run)[3] > 0.2, _base_at(track, t_run)
    start, cmd, end = _base_at(track, t_run), _base_at(track, t_cmd), _base_at(track, t_stop - 0.05)
    loop_speed = result["timing"].get("rate_hz", 0.0) / 500.0  # 1.0: the runtime kept its 500 Hz
    robot_speed = (end[0] - cmd[0]) / (t_stop - 0.05 - t_cmd)  # 1.0: the robot process stepped in real time
    if min(loop_speed, robot_speed) < 0.8:  # see test_deploy_dds.py: walking needs the cores
        pytest.skip(f"machine too busy to judge walking: runtime loop at {loop_speed:.0%} of real time, robot "
                    f"process at {robot_speed:.0%} (lying -> standing over DDS from the deploy venv was checked)")
    assert out.returncode == 0 and result["exit_code"] == 0 and result["trips"] == [], (out.stderr, result["trips"])
    assert [(e["from"], e["to"]) for e in result["timeline"]] == [("passive", "stand"), ("stand", "run"),
                                                                   ("run", "damp")], result["timeline"]
    assert result["command"] == [0.5, 0.0, 0.0]
    idle = float(np.linalg.norm((cmd - start)[1:3]))  # m, in the second of Run with a zero command
    walked = (end - cmd)[1:3]
    speed = walked / (end[0] - cmd[0])
    print(f"walked {walked[0]:.2f} m forward at {speed[0]:.2f} m/s (lateral {speed[1]:+.2f} m/s), {idle:.3f} m before "
          f"the command; loop at {loop_speed:.0%}, robot at {robot_speed:.0%} of real time")
    # Commanded 0.5 m/s forward (+x): 0.3-0.5 m/s on idle cores; ask for a quarter of it, forward, straight-ish,
    # and clearly more than in the second before the command.
    assert walked[0] > 0.2 and speed[0] > 0.12 and abs(speed[1]) < 0.5 * speed[0], (speed, walked, idle)
    assert idle < 0.5 * walked[0], (speed, walked, idle)
    assert end[3] > 0.2, end  # still up while walking
