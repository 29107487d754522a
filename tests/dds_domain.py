"""DDS domain ids for tests: each test talks on its own domain, so tests running at the same time (pytest-xdist
workers, or two test runs on one machine) do not hear each other."""

from __future__ import annotations

import os
import random

_used: set[int] = set()


def new_domain(low: int = 1, high: int = 200) -> int:
    """A domain id not used before in this process, drawn at random from this xdist worker's share of
    [low, high] (the whole range without xdist)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = (high - low + 1) // workers
    first = low + worker * share
    free = [d for d in range(first, first + share) if d not in _used]
    if not free:
        raise RuntimeError(f"no unused DDS domain left in {first}..{first + share - 1}")
    domain = random.choice(free)
    _used.add(domain)
    return domain
