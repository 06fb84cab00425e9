"""Ctrl-C during a run: the running trial stops at its next epoch and is stored as FAIL (``interrupted``).

Python's default turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be, which may be the
middle of a storage write (a journal lock released twice, a run created but never linked) and which Optuna logs
with a long traceback. Here the first Ctrl-C only sets a flag: the training loop's per-epoch hook reads it, the
trial ends FAIL with reason ``interrupted`` in both stores, the study stops, and the CLI exits 130. A second Ctrl-C
raises KeyboardInterrupt at once for someone who really wants out; the next run repairs what that leaves
(:mod:`pipeline.tuning.repair`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading

from pipeline.core.names import FAIL_INTERRUPTED

REASON = FAIL_INTERRUPTED


class TrialInterrupted(Exception):
    """Raised by the objective after it stored its trial as interrupted; the run then stops."""


class Interrupt:
    """The flag the first Ctrl-C sets. Call it to ask whether a stop was requested."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: stopping after this epoch; the running trial is stored as FAIL (interrupted). "
            "Ctrl-C again to abort at once.",
            file=sys.stderr,
            flush=True,
        )


INTERRUPT = Interrupt()


@contextlib.contextmanager
def catching_sigint(flag: Interrupt = INTERRUPT):
    """Within the block, SIGINT sets ``flag`` instead of raising (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, flag._on_sigint)
    try:
        with _quiet_optuna_about_interrupts():
            yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _InterruptFilter(logging.Filter):
    """Drops Optuna's "Trial N failed ... because of the following error: TrialInterrupted" warning, its traceback
    and its "failed with value None" follow-up: an interrupt is not an error, and the CLI says what happened."""

    _NUMBER = re.compile(r"^Trial (\d+) failed")

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = self._NUMBER.match(message)
        if match is None:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TrialInterrupted | KeyboardInterrupt) or "TrialInterrupted" in message:
            self.numbers.add(match.group(1))
            return False
        return match.group(1) not in self.numbers


@contextlib.contextmanager
def _quiet_optuna_about_interrupts():
    handlers = logging.getLogger("optuna").handlers
    flt = _InterruptFilter()
    for handler in handlers:
        handler.addFilter(flt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(flt)
