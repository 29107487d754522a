"""Keyboard teleop in a plain terminal: no X server, no root, no keyboard library.

The terminal (default: stdin; `fd` or `path` for another tty) goes into cbreak mode (no line buffering, no echo;
ISIG stays on, so Ctrl-C still raises SIGINT) and the keys are read on a background thread. pynput/keyboard need
an X server or root (they read /dev/input/event*); a tty works over SSH and inside tmux.

Terminals send no key-up: a key press drives its axis for `hold` seconds and the terminal's auto-repeat keeps it
going while the key is held. The first repeat comes after the repeat delay (often 250-600 ms), so a held key
stutters once at the start; `xset r rate 200 30` (X) or `kbdrate -d 250` (console) shortens it. Only the last
held key repeats, so a terminal drives one axis at a time.

Keys (case-insensitive, so Caps Lock does not change anything):

    w/s +-x   a/d +-y   r/f +-z   j/l +-roll (wx)   i/k +-pitch (wy)   q/e +-yaw (wz)    (robot base frame)
    space  toggle the gripper (open <-> closed)
    Enter  save      Backspace/Delete  discard      n  rerecord      t  takeover (toggle)      Esc/x  quit
    Ctrl-C stops the program (SIGINT)

Rerecord is `n`, not Shift-R: with Caps Lock on, `r` (+z) would otherwise rerecord the episode. Escape sequences
(arrow and function keys, Alt+key) are consumed whole and ignored; a lone Esc is an Esc only when no byte follows
it within `esc_timeout` (0.1 s). The terminal settings are restored on close(), at interpreter exit (atexit: Ctrl-C,
sys.exit) and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import termios
import threading
import time
from typing import Any

import numpy as np

from robolearn.errors import DeviceError
from robolearn.teleop.devices import StreamDevice, TeleopCommand

__all__ = ["KeyboardDevice", "KEY_AXES", "KEY_EVENTS"]

# key -> (twist index, sign)
KEY_AXES: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "j": (3, 1.0), "l": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "q": (5, 1.0), "e": (5, -1.0),
}
# key -> event; Enter arrives as \n (ICRNL) or \r, Backspace as DEL (\x7f) or BS (\x08)
KEY_EVENTS: dict[str, str] = {
    "\n": "save", "\r": "save", "\x7f": "discard", "\x08": "discard", "n": "rerecord", "t": "takeover",
    "x": "quit", "\x1b": "quit",
}
ESC = 0x1B


class KeyboardDevice(StreamDevice):
    """Keys in a terminal -> TeleopCommand. `fd`: an open tty (default stdin); `path`: a tty to open instead."""

    name = "keyboard"
    esc_timeout = 0.1  # s: an Esc with nothing after it for this long is the Esc key, not a sequence
    HELP = ("keys: w/s x | a/d y | r/f z | j/l roll | i/k pitch | q/e yaw | space gripper | Enter save | "
            "Backspace discard | n rerecord | t takeover | Esc/x quit | Ctrl-C stop")

    def __init__(self, fd: int | None = None, *, path: str | None = None, hold: float = 0.2) -> None:
        if hold <= 0:
            raise DeviceError(f"keyboard: hold must be > 0 s, got {hold}")
        owns = False
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            except OSError as e:
                raise DeviceError(f"keyboard: cannot open the terminal {path}: {e.strerror}") from None
            owns = True
        elif fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError):
                fd = -1
        if fd < 0 or not os.isatty(fd):
            if owns:
                os.close(fd)
            raise DeviceError("keyboard teleop reads keys from a terminal, but stdin is not a tty (piped or run "
                              "from a service); run it in a terminal, or use --device gamepad/spacemouse")
        self.hold = float(hold)
        self._saved = termios.tcgetattr(fd)
        self._fd_tty = fd
        self._restored = False
        self._restore_lock = threading.Lock()
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: byte at a time, no echo; ISIG stays (Ctrl-C)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        atexit.register(self._restore_terminal)
        self._old_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) is signal.SIG_DFL:
                    self._old_handlers[sig] = signal.signal(sig, self._on_signal)

        self._axes = [(0.0, 0.0)] * 6  # per twist component: (sign, deadline in time.monotonic())
        self._gripper = 0.0
        self._gripper_changed = False
        self._esc = ""  # the escape sequence being read: "", "esc", "csi", "csi[" or "ss3"
        self._esc_at = 0.0
        self._start(fd, owns_fd=owns, chunk=256)

    # -- reader thread -----------------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        with self.lock:
            for b in data:
                self._byte(b)

    def _on_idle(self) -> None:
        with self.lock:
            if self._esc == "esc" and time.monotonic() - self._esc_at >= self.esc_timeout:
                self._key("\x1b")  # nothing followed the Esc: the key itself
                self._esc = ""
            # an unfinished CSI/SS3 sequence stays open: its final byte may still come (it swallows one key at worst)

    def _byte(self, b: int) -> None:
        state = self._esc
        if state == "":
            if b == ESC:
                self._esc, self._esc_at = "esc", time.monotonic()
            elif b < 0x80:  # multi-byte UTF-8 (non-ASCII keys) is ignored
                self._key(chr(b))
        elif state == "esc":
            if b == ord("["):
                self._esc = "csi"
            elif b == ord("O"):
                self._esc = "ss3"
            elif b == ESC:  # Esc Esc: the first was a lone Esc
                self._key("\x1b")
                self._esc_at = time.monotonic()
            else:  # Alt+key: ignored
                self._esc = ""
        elif state == "csi":
            if b == ord("["):  # Linux console F1-F5: ESC [ [ A..E
                self._esc = "csi["
            elif 0x40 <= b <= 0x7E:  # final byte (arrows: A-D, F-keys: ~)
                self._esc = ""
            elif not 0x20 <= b <= 0x3F:  # not a parameter/intermediate: a broken sequence, dropped
                self._esc = ""
        else:  # "ss3" (ESC O A) or "csi[" (ESC [ [ A): one final byte
            self._esc = ""

    def _key(self, key: str) -> None:
        key = key.lower()
        if key in KEY_AXES:
            index, sign = KEY_AXES[key]
            self._axes[index] = (sign, time.monotonic() + self.hold)
        elif key == " ":
            self._gripper = 1.0 - self._gripper
            self._gripper_changed = True
        elif key in KEY_EVENTS:
            self._emit(KEY_EVENTS[key])

    # -- TeleopDevice ------------------------------------------------------------------------------------
    def read(self) -> TeleopCommand:
        self._check()
        now = time.monotonic()
        with self.lock:
            twist = np.array([sign if now < deadline else 0.0 for sign, deadline in self._axes])
            changed, self._gripper_changed = self._gripper_changed, False
            return TeleopCommand(twist=twist, gripper=self._gripper, active=bool(np.any(twist)) or changed,
                                 events=self._take_events())

    def close(self) -> None:
        self._restore_terminal()  # before the fd closes (path=...); the reader notices the stop within idle_s
        super().close()
        atexit.unregister(self._restore_terminal)
        for sig, old in self._old_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)
        self._old_handlers = {}

    # -- terminal ----------------------------------------------------------------------------------------
    def _restore_terminal(self) -> None:
        with self._restore_lock:
            if self._restored:
                return
            self._restored = True
            try:
                termios.tcsetattr(self._fd_tty, termios.TCSADRAIN, self._saved)
            except (termios.error, OSError):
                pass  # the terminal is gone (closed pty, hung-up SSH session)

    def _on_signal(self, signum: int, frame: object) -> None:
        """SIGTERM/SIGHUP: restore the terminal, then die of the signal as if we never caught it."""
        self._restore_terminal()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
