"""Stop requests: Ctrl-C (SIGINT), ``kill`` / ``timeout`` (SIGTERM) and a closed terminal (SIGHUP).

One class, :class:`StopSignals`, used by training (:mod:`vaelayer_np.run.runs`) and by
``vaelayer reproduce``. Inside its ``with`` block the first of these signals only sets a flag
(``requested``, and ``signal_name``): the code polls it between two steps, saves its state and
stops. What a second signal does is chosen by the user of the class: ``second="raise"`` raises
``KeyboardInterrupt`` at once (training: the user insists), ``second="count"`` only counts
(reproduce: it terminates its children itself). Outside the main thread no handler can be
installed and the signals keep their usual effect.
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Literal

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""The signals that ask a run to save and stop."""


def exit_code(signum: int) -> int:
    """The shell's exit code for a process stopped by ``signum``: 128 + the signal's number (130 for Ctrl-C)."""
    return 128 + int(signum)


class StopSignals:
    """A stop flag set by SIGINT, SIGTERM or SIGHUP while the ``with`` block runs.

    Attributes
    ----------
    requested : bool, a stop signal arrived
    count : int, how many arrived
    signum : int or None, the first one's number; ``signal_name`` its name ("SIGTERM")

    Calling the object returns ``requested`` (a ``should_stop`` callable). The previous
    handlers are restored on leaving the block.
    """

    def __init__(self, second: str = "raise") -> None:
        if second not in ("raise", "count"):
            raise ValueError(f"second: expected 'raise' or 'count', got {second!r}")
        self.second = second
        self.requested = False
        self.count = 0
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the first signal's number (130 for Ctrl-C); 130 when no signal arrived."""
        return exit_code(self.signum if self.signum is not None else signal.SIGINT)

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not in the main thread: the signals behave as usual
                break
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.requested and self.second == "raise":
            raise KeyboardInterrupt
        if not self.requested:
            self.signum = signum
        self.requested = True

    def __exit__(self, *exc: object) -> Literal[False]:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._previous = {}
        return False

    def __call__(self) -> bool:
        return self.requested
