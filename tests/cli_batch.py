"""Many `robolearn` command lines that are expected to fail fast, run in ONE real subprocess.

Each command line goes through `robolearn.cli.main()` exactly as `python -m robolearn.cli ...` runs it (sys.argv
set, the exit code taken from its SystemExit, stdout and stderr captured), so what a test asserts is what a user
sees: exit code 2 and one `error:` line. Starting Python and importing torch costs ~2 s per process; 25 error
cases in one process take as long as one. An exception that escapes `main()` is reported as exit code 1 with its
traceback in stderr, so a test asserting "one line, no traceback" fails on it as it would on a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_DRIVER = r"""
import contextlib, importlib.util, io, json, sys, traceback
import robolearn.cli

entry = importlib.util.find_spec("robolearn.cli.__main__").origin  # argv[0] of `python -m robolearn.cli`

results = []
for args in json.loads(sys.stdin.read()):
    sys.argv = [entry, *args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            robolearn.cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            code = 1
            traceback.print_exc()
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def run_cli_batch(cases: Sequence[Sequence[str]], *, cwd: Path | None = None, timeout: float = 300
                  ) -> list[subprocess.CompletedProcess]:
    """One CompletedProcess-like result per command line in `cases`, in order."""
    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps([list(c) for c in cases]),
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [subprocess.CompletedProcess(list(args), r["returncode"], r["stdout"], r["stderr"])
            for args, r in zip(cases, json.loads(proc.stdout), strict=True)]
