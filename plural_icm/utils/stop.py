"""Stopping that keeps its work: SIGTERM, SIGINT (Ctrl-C) and SIGUSR2 during ICM searches.

While searches run, :class:`StopRequest` turns these signals into a flag that
:func:`plural_icm.search.engine.run_searches` polls before every scoring batch; a signal that
arrives *during* a batch (a model call can take minutes on a loaded CPU or a 70B model) abandons
that batch at once (:class:`ScoringStopped`, raised inside :meth:`StopRequest.scoring` only): the
batch belongs to an unfinished iteration whose work is redone on resume anyway. Each running
search checkpoints its last iteration boundary, the search store releases its claims, and one line says
what was kept and how to resume (:func:`report_stop`). Then the signal is sent again with the
handler that was there before, so submitit's handler (requeue on USR2), the default action of
SIGTERM (the process ends, exit status 143) or Python's ``KeyboardInterrupt`` still happen.

``launch.py`` turns a ``KeyboardInterrupt`` into an exit status of 130 without a traceback,
printing its own line only when none was printed here (Ctrl-C while loading a model, say).
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger(__name__)

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGUSR2: "SIGUSR2"}
_reported = False


class ScoringStopped(BaseException):
    """Raised by the signal handler inside a scoring call (:meth:`StopRequest.scoring`). A
    ``BaseException``, like ``KeyboardInterrupt``, so a backend's ``except Exception`` (a retry,
    a fallback) never swallows it."""


class StopRequest:
    """Turns SIGTERM/SIGINT/SIGUSR2 into a flag (``stop()`` is True once one arrived).

    A second Ctrl-C while the first is being honoured stops at once (``KeyboardInterrupt``),
    for a user who will not wait for the batch. :meth:`reraise` restores the previous handler and
    sends the signal again.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._in_scoring = False

    def __enter__(self) -> "StopRequest":
        try:
            for sig in self.SIGNALS:
                # A signal ignored when we start stays ignored: a shell starts background jobs
                # (`cmd &`, nohup) with SIGINT ignored, and Python itself then installs no
                # KeyboardInterrupt; catching it here would turn a Ctrl-C meant for the terminal's
                # foreground job into a stop that ends with no handler to hand it back to.
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s received: the searches checkpoint their last iteration boundary now",
                    NAMES.get(signum, f"signal {signum}"))
        self.received = signum
        if self._in_scoring:
            self._in_scoring = False
            raise ScoringStopped()

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Around one scoring call: a stop arriving inside it abandons the call at once."""
        if self.received is not None:
            raise ScoringStopped()
        self._in_scoring = True
        try:
            yield
        finally:
            self._in_scoring = False

    def __call__(self) -> bool:
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    def reraise(self) -> None:
        """Send the received signal again to the handler that was there before."""
        if self.received is None:
            return
        import os

        sig = self.received
        prev = self._previous.get(sig, signal.SIG_DFL)
        prev = prev if prev is not None else signal.SIG_DFL
        signal.signal(sig, prev)
        if callable(prev):
            # A Python handler (Python's own, which raises KeyboardInterrupt, or submitit's):
            # call it here. A signal sent to ourselves may be delivered to another thread and run
            # by the interpreter only later, after the caller's next statement (seen: the
            # caller's SearchInterrupted escaped with a traceback instead of Ctrl-C's exit 130).
            prev(sig, None)
            return
        os.kill(os.getpid(), sig)


def report_stop(signum: int, kept: list[tuple[str, int | None]], finished: int = 0) -> str:
    """Print (stderr, once) and return the line saying what a stop kept and how to resume.

    ``kept``: (checkpoint path, iteration kept or None when nothing was) per search the stop
    found running or finished; ``finished`` of them had finished and were written whole."""
    global _reported
    saved = [(p, i) for p, i in kept if i is not None]
    where = ""
    if saved:
        first, it = saved[0]
        where = f" (e.g. iteration {it} in {first})" if len(saved) > 1 else \
            f" (iteration {it} in {first})"
    done = f", {finished} search(es) that had finished," if finished else ""
    line = (f"plural_icm: stopped by {NAMES.get(signum, f'signal {signum}')}: kept "
            f"{len(saved)} of {len(kept) - finished} running search checkpoint(s){where}{done} "
            f"and every finished search and cell; run the same command again to resume")
    print(line, file=sys.stderr, flush=True)
    _reported = True
    return line


def stop_was_reported() -> bool:
    """Whether :func:`report_stop` printed its line in this process."""
    return _reported


__all__ = ["StopRequest", "ScoringStopped", "report_stop", "stop_was_reported"]
