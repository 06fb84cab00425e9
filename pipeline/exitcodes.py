"""The exit codes of ``python -m pipeline`` (and of ``make tune``, which passes them through unchanged).

A monitor or a scheduler reads these; they are documented in README's table and never reused for anything else.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # done; for `tune`, every trial of this run ended complete or pruned
    NOTHING = 1  # nothing to report or done: no complete trial (tune, best), no finished trial (report), `delete` answered no
    BAD_INPUT = 2  # bad study file, argument, data or storage; nothing was written
    TRIALS_FAILED = (
        3  # `tune`: some trials of this run raised an error (FAIL, not pruned); the rest are stored
    )
    STORE_ERROR = (
        74  # a store could not be written (full disk, I/O error) or free space fell below --min-free-mb
    )
    LOCKED = 75  # `tune --exclusive`: another run holds the study's lock (EX_TEMPFAIL: try again later)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM (128 + SIGTERM): the running trial finished first
