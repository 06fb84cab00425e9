"""pipeline/tuning/interrupt.py: the first Ctrl-C sets a flag and raises nothing, a second one raises
KeyboardInterrupt at once; the previous handler comes back after the block. Real SIGINTs to a real child process
(started from Python, so that SIGINT is not ignored as it is for a shell's background job)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from pipeline.tuning.interrupt import (
    INTERRUPT,
    Interrupt,
    TrialInterrupted,
    _InterruptFilter,
    catching_sigint,
)

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys, time
    from pipeline.tuning.interrupt import Interrupt, catching_sigint

    flag = Interrupt()
    with catching_sigint(flag):
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not flag() and time.monotonic() < deadline:
            time.sleep(0.01)  # a training loop between two epochs
        print("flag", flag(), flush=True)
        try:
            print("armed", flush=True)  # the test sends the second SIGINT once it reads this line
            while time.monotonic() < deadline:
                time.sleep(0.01)
            print("no second interrupt", flush=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(7)
    """
)


def test_a_first_sigint_sets_the_flag_and_a_second_raises_keyboard_interrupt():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "flag True"  # set, and the loop went on: nothing was raised
        assert child.stdout.readline().strip() == "armed"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.strip() == "KeyboardInterrupt"
    assert child.returncode == 7
    assert "Ctrl-C: stopping after this epoch; the running trial is stored as FAIL (interrupted)." in err
    assert err.count("Ctrl-C: stopping") == 1  # the second Ctrl-C says nothing more: it raises


def test_the_block_installs_its_handler_and_restores_the_previous_one():
    def previous(signum, frame):
        pass

    saved = signal.signal(signal.SIGINT, previous)
    try:
        flag = Interrupt()
        with catching_sigint(flag) as given:
            assert given is flag
            assert signal.getsignal(signal.SIGINT) == flag._on_sigint
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, saved)
    assert not flag() and INTERRUPT.requested is False


def test_outside_the_main_thread_the_block_changes_nothing():
    seen = {}

    def worker():
        before = signal.getsignal(signal.SIGINT)
        with catching_sigint(Interrupt()) as flag:
            seen["handler_unchanged"] = signal.getsignal(signal.SIGINT) is before
            seen["flag"] = flag()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"handler_unchanged": True, "flag": False}


def record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("optuna", logging.WARNING, __file__, 1, message, None, exc_info)


def test_optunas_failure_lines_for_an_interrupted_trial_are_dropped_and_others_kept():
    flt = _InterruptFilter()
    assert not flt.filter(record("Trial 3 failed with parameters: {} because of ...", TrialInterrupted()))
    assert not flt.filter(record("Trial 3 failed with value None."))  # its follow-up
    assert flt.filter(record("Trial 4 failed with parameters: {} because of ...", ValueError("a bug")))
    assert flt.filter(record("Trial 4 failed with value None."))
    assert flt.filter(record("Trial 5 finished with value: 0.1"))
