"""Single-key control of the deploy runtime in a terminal (`robolearn deploy` without --auto)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["KeyControl"]


class KeyControl:
    """Single-key control of the runtime in a terminal (cbreak mode, no X)."""

    HELP = "s stand | r run | space damp | e e-stop | x reset | i/k vx +-0.1 | j/l wz +-0.2 | u/o vy +-0.1 | q quit"

    def __init__(self, rt: Any, stop: Any) -> None:
        import termios
        import threading
        import tty

        self.rt, self.stop = rt, stop
        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        import numpy as np

        steps = {"i": (0, 0.1), "k": (0, -0.1), "u": (1, 0.1), "o": (1, -0.1), "j": (2, 0.2), "l": (2, -0.2)}
        while not self.stop.is_set():
            key = sys.stdin.read(1)
            rt = self.rt
            if key == "s":
                rt.stand()
            elif key == "r":
                rt.run()
            elif key == " ":
                rt.stop()
            elif key == "e":
                rt.estop()
            elif key == "x":
                rt.reset()
            elif key in steps:
                axis, delta = steps[key]
                command = np.array(rt.command)
                command[axis] += delta
                rt.set_command(command)
            elif key == "q":
                rt.stop()
                self.stop.set()

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
