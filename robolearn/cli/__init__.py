"""The `robolearn` command line, one module per job group: train (train, distill), evaluate (play, eval,
compare), info (list, bench), export, deploy, teleop (record, teleop), dataset. Each registers its commands on the
one app in `app.py`; the logic lives in the packages they call."""

# Importing a module registers its commands; `robolearn -h` lists them in this order.
from robolearn.cli import train, evaluate, export, deploy, teleop, dataset, info  # noqa: F401, I001
from robolearn.cli.app import app, main

__all__ = ["app", "main"]
