"""A store that cannot be written (a full disk, a quota, a file-size limit, an I/O error) stops the run at once.

Caught per trial, such an error would fail every following trial the same way (hundreds of messages, Optuna's own
bookkeeping failing with ``AssertionError: Should not reach.``). Instead the first one ends the run with one message
naming the store, and the next run repairs what it left (a torn journal tail, a trial or run left RUNNING).
"""

from __future__ import annotations

import errno

from optuna.trial import TrialState

from pipeline.secrets import mask_url

_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
_TEXTS = (
    "no space left",
    "disk is full",
    "disk full",
    "disk i/o error",
    "file too large",
    "quota exceeded",
    "read-only file system",
)


class StoreWriteError(BaseException):
    """A store could not be written. A BaseException, so that Optuna's per-trial ``catch`` lets it through and the
    run stops at once instead of failing every later trial the same way."""


def write_error(exc: BaseException | None) -> BaseException | None:
    """The write error at the root of ``exc`` (following causes and contexts), or None when it is not one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StoreWriteError):
            return exc
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return exc
        text = str(exc).lower()
        if any(t in text for t in _TEXTS):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe(exc: BaseException) -> str:
    """One line: what failed to be written, and what to do."""
    if isinstance(exc, StoreWriteError):
        return str(exc)
    if isinstance(exc, OSError):
        what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_url(
        f"a store could not be written ({what[:300]}); the run stopped. Free some space (or fix the store) and run "
        "again: finished trials are kept, and the next run repairs what this one left."
    )


def guard(objective):
    """``objective`` with write errors turned into :class:`StoreWriteError` (stops the study at once)."""

    def guarded(trial):
        try:
            return objective(trial)
        except Exception as exc:
            found = write_error(exc)
            if found is not None:
                try:  # best effort: the disk may refuse this too; then the next run's repair marks it FAIL
                    trial.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                except Exception:
                    pass
                raise StoreWriteError(describe(found)) from exc
            raise

    return guarded
