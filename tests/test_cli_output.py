"""What `compare` and `export` write (issue 20): the compare table fits the terminal without cutting a cell (and the
markdown file holds it whole); an --output that cannot be written is a one-line error naming the path, not a
traceback. Real subprocesses, real run folders, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from robolearn.learn.compare import comparison_rows, fitted_tables, summary_table

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": str(columns), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two (untrained) panda-reach run folders with short evaluation episodes."""
    from robolearn.learn.config import load_train_cfg
    from robolearn.learn.train import make_ppo_runner

    folders = []
    for i, name in enumerate(("teacher-with-a-long-name", "blind-ppo-baseline")):
        cfg = load_train_cfg("panda-reach", overrides={"num_envs": 4, "steps_per_env": 4, "seed": i,
                                                       "eval": {"task_overrides": {"episode_length_s": 0.5}}})
        folder = tmp_path_factory.mktemp("runs") / name
        runner = make_ppo_runner(cfg, folder)
        runner.save(folder / "checkpoints" / "model.pt")
        runner.close()
        folders.append(folder)
    return folders


def _reports() -> tuple[list[dict], list[str]]:
    reports, labels = [], []
    for rand in ("train", "wide"):
        for label, ret in (("teacher-with-a-long-name", 10.5), ("student", 9.0), ("blind-ppo-baseline", 4.0)):
            per = [{"episode_return": ret + d, "survived": d > -1} for d in (-1.5, 0.0, 1.5)]
            reports.append({"run": label, "randomization": rand, "policy": "ppo", "history": 1, "episodes": 3,
                            "summary": {"mean_return": ret, "mean_return_ci95": 3.7266, "survival": 2 / 3,
                                        "survival_ci95": 1.4342, "lin_vel_x_error": 0.1234}, "per_episode": per})
            labels.append(label)
    return reports, labels


@pytest.mark.parametrize("width", [60, 80, 120, 250])
def test_fitted_tables_keep_every_cell_whole_within_the_width(width):
    reports, labels = _reports()
    text = summary_table(comparison_rows(reports, labels, baseline="blind-ppo-baseline"))
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115 - closed by the GC
    tables = fitted_tables(text, "go2-rough: policies side by side (95% intervals)", width)
    for table in tables:
        console.print(table)
    out = console.export_text()
    assert max(len(line) for line in out.splitlines()) <= width
    assert "…" not in out
    lines = out.splitlines()
    for row in text:  # every row's cells appear whole, on one line, in each part of the split table
        for key, cell in row.items():
            if key not in ("policy", "randomization"):
                assert any(cell in line and row["policy"] in line and row["randomization"] in line
                           for line in lines), (key, cell)
    assert (len(tables) == 1) == (width >= 250)


def test_compare_fits_an_80_column_terminal_and_writes_the_whole_table(runs, tmp_path):
    out = cli("compare", *map(str, runs), "--baseline", "blind-ppo-baseline", "--episodes", "2", "--output",
              str(tmp_path), columns=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "policies side by side" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("wrote "))
    table_text = "\n".join(lines[start:end])  # (the summary lines and paths around it are soft-wrapped text)
    assert "…" not in table_text and max(len(line) for line in lines[start:end]) <= 80, out.stdout
    md = next(tmp_path.glob("compare_panda-reach_*.md")).read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert {"return", "survival", "return - baseline", "survival - baseline"} <= set(header)
    assert len(table) == 2 + len(runs), "one markdown table with every row"
    for line in table[2:]:
        for cell in (c.strip() for c in line.strip("|").split("|")):
            assert cell in table_text, (cell, out.stdout)


def test_unwritable_output_is_a_one_line_error_naming_the_path(runs, tmp_path):
    from cli_batch import run_cli_batch

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    outputs = (a_file / "bundle", Path("/proc/x/bundle"))  # a file as parent, a pseudo file system
    *exports, compare, missing = run_cli_batch(
        [*(("export", str(runs[0]), "--output", str(output)) for output in outputs),
         ("compare", *map(str, runs), "--output", str(a_file / "results")),
         # Checked before the evaluation; the folders it made are removed again when the command fails.
         ("compare", str(runs[0]), str(tmp_path / "no-such-run"), "--output", str(tmp_path / "new" / "results"))])
    for output, out in zip(outputs, exports, strict=True):
        line = one_line_error(out)
        assert line.startswith(f"error: --output {output}: cannot write there"), line
    assert a_file.read_text() == "not a folder"
    line = one_line_error(compare)
    assert line.startswith(f"error: --output {a_file / 'results'}: cannot write there"), line
    line = one_line_error(missing)
    assert "no-such-run" in line and not (tmp_path / "new").exists()


BAD_OUTPUTS_AND_DEVICES = [
    # before: a FileNotFoundError traceback (exit 1) once the episodes had run
    (("eval", "{run}", "--video", "/proc/robolearn/eval.mp4"), "error: --video folder /proc/robolearn: cannot write "
                                                               "there (/proc/robolearn: No such file or directory)"),
    (("play", "{run}", "--output", "/proc/robolearn/play.mp4"), "error: --output folder /proc/robolearn: cannot "
                                                                "write there"),
    # before: a CUDA device on a CPU engine or an unknown device was a torch traceback (exit 1)
    (("eval", "{run}", "--device", "cuda:7"), "error: backend 'mujoco' runs on the CPU; on device 'cuda:7' use a GPU "
                                              "backend"),
    (("play", "{run}", "--device", "tpu", "--no-video"), "error: device must be cpu, cuda or cuda:N, got 'tpu'"),
]


@pytest.fixture(scope="module")
def bad_output_results(runs) -> dict:
    """BAD_OUTPUTS_AND_DEVICES in one real subprocess (tests/cli_batch.py)."""
    from cli_batch import run_cli_batch

    lines = [tuple(a.format(run=runs[0]) for a in args) for args, _ in BAD_OUTPUTS_AND_DEVICES]
    return dict(zip((args for args, _ in BAD_OUTPUTS_AND_DEVICES), run_cli_batch(lines), strict=True))


@pytest.mark.parametrize(("args", "message"), BAD_OUTPUTS_AND_DEVICES)
def test_eval_and_play_refuse_bad_outputs_and_devices_in_one_line(bad_output_results, args, message):
    """From the bad-input tour (benchmarks/bad_inputs.py): checked before any episode runs."""
    line = one_line_error(bad_output_results[args])
    assert line.startswith(message), line
