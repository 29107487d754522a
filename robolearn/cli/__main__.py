"""`python -m robolearn.cli` (torchrun launches workers this way)."""

from robolearn.cli.app import main

main()
