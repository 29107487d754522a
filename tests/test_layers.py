"""The package's layers, checked: which robolearn package may import which (every import in every module, also
those inside functions), which heavy libraries the deploy runtime must not pull in, and no cycles.

The rules (DESIGN.md): sim and data are the bottom (config, errors), with planning (numpy grid planning, which
the training scenes and the robot both use); learn builds on sim and data; export turns a
learned policy into the deploy layer's bundle; the deploy runtime (`deploy`) runs on a robot computer without
torch, MuJoCo, pybullet or matplotlib (`robolearn[deploy]`); the twin (`twin`: the MuJoCo robot behind the deploy
interfaces) joins deploy and sim; ros and teleop adapt the runtime to transports and people; cli and bench sit on
top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "robolearn"
BASE = {"config", "errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "planning": BASE,
    "sim": BASE | {"planning"},
    "data": BASE,
    "learn": BASE | {"sim", "data"},
    "export": BASE | {"learn", "sim", "deploy"},
    "deploy": BASE | {"planning"},
    "twin": BASE | {"planning", "deploy", "sim"},
    "ros": BASE | {"planning", "deploy", "teleop", "twin"},
    "teleop": BASE | {"deploy", "data", "sim", "twin"},
    "bench": BASE | {"sim"},
    "cli": BASE | {"sim", "data", "learn", "export", "deploy", "twin", "ros", "teleop", "bench"},
}
# Libraries a robot computer should not need for the deploy runtime (robolearn[deploy] is to be torch-free).
HEAVY = {"torch", "mujoco", "example_robot_data", "pybullet", "matplotlib", "tensorboard", "jax", "warp"}
FORBIDDEN_EXTERNAL = {"deploy": HEAVY,
                      "sim": {"rclpy", "cyclonedds"}, "learn": {"rclpy", "cyclonedds"}}
# Edges that break the rules today, each with the work that removes it. The test fails when one disappears
# (take it off this list) or a new one appears.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
# What `robolearn deploy --transport dds` loads (the CLI shell, the runtime, the DDS transport): none of HEAVY.
DEPLOY_PATH = ["robolearn.cli", "robolearn.deploy.bundle", "robolearn.deploy.controllers", "robolearn.deploy.diffusion",
               "robolearn.deploy.keys",
               "robolearn.deploy.kinematics", "robolearn.deploy.runtime", "robolearn.deploy.safety",
               "robolearn.deploy.navigation", "robolearn.deploy.session", "robolearn.deploy.transports",
               "robolearn.ros.dds", "robolearn.ros.navigation"]


def _imports() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """(robolearn package -> robolearn packages it imports, package -> external top-level modules, edge -> the
    modules where it occurs)."""
    internal: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        package = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "robolearn" and len(parts) > 1:
                    if parts[1] != package:
                        internal[package].add(parts[1])
                        where[(package, parts[1])].append(str(rel))
                elif parts[0] != "robolearn":
                    external[package].add(parts[0])
    return internal, external, where


def _layers_edges(internal: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(src, dst) for src, dsts in internal.items() for dst in dsts}


def test_every_package_is_in_the_rules():
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages == set(ALLOWED), "a new package needs its line in ALLOWED"


def test_imports_follow_the_layers():
    internal, _, where = _imports()
    bad = {e for e in _layers_edges(internal) if e[1] not in ALLOWED[e[0]]}
    new = {e: where[e] for e in bad - set(KNOWN_VIOLATIONS)}
    assert not new, f"imports against the layers (package -> package: modules): {new}"
    fixed = set(KNOWN_VIOLATIONS) - bad
    assert not fixed, f"fixed, take them off KNOWN_VIOLATIONS: {fixed}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN_EXTERNAL))
def test_heavy_dependencies_stay_out_of_the_layers_that_must_not_need_them(package):
    _, external, _ = _imports()
    assert not external[package] & FORBIDDEN_EXTERNAL[package], external[package] & FORBIDDEN_EXTERNAL[package]


def test_the_deploy_path_loads_no_heavy_library():
    """Imports at run time too (the AST check above sees only the deploy package): the CLI with every command
    registered, the runtime and the DDS transport, in a fresh interpreter."""
    code = (f"import sys; import {', '.join(DEPLOY_PATH)}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_no_cycles_between_packages():
    internal, _, _ = _imports()
    edges = _layers_edges(internal) - set(KNOWN_VIOLATIONS)
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_a_planted_back_edge_is_caught(tmp_path, monkeypatch):
    """The checker itself: a module of `sim` that imports `learn` is reported."""
    import shutil

    copy = tmp_path / "robolearn"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "sim" / "planted.py").write_text("from robolearn.learn.ppo import PPO\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", copy)
    with pytest.raises(AssertionError, match=r"\('sim', 'learn'\): \['sim/planted.py'\]"):
        test_imports_follow_the_layers()
