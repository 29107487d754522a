"""The repository is also a ROS 2 package and lint-clean."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "robolearn"
    assert root.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "robolearn").is_file()


def test_setup_cfg_installs_scripts_where_ros2_run_finds_them():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/robolearn"
    assert cfg["install"]["install_scripts"] == "$base/lib/robolearn"


def test_declarations_are_installed_as_data_files():
    out = subprocess.run([sys.executable, "-c", "import runpy, setuptools; setuptools.setup = lambda **kw: "
                          "print(kw['data_files']); runpy.run_path('setup.py')"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    for expected in ("share/robolearn/sim/robots", "share/robolearn/sim/tasks", "share/robolearn/policies/ppo",
                     "resource/robolearn", "package.xml"):
        assert expected in out.stdout


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is part of the test extra"
    out = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
