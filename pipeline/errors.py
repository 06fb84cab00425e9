"""Errors raised at the boundary: bad study files, bad data, bad arguments.

Every message names where the bad value came from (file, key path) and the value itself, in one shape:
``studies/x.yaml: 'search.lr.low' must be a float > 0. Got 0 instead.``
"""

from __future__ import annotations

import reprlib

_MISSING = object()
MAX_SHOWN = 200  # a value longer than this is cut in messages (a YAML alias bomb must not become gigabytes)

_repr = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_repr.maxlevel, _repr.maxtuple, _repr.maxlist, _repr.maxdict, _repr.maxset = 3, 6, 6, 6, 6
_repr.maxstring, _repr.maxother, _repr.maxlong = MAX_SHOWN, MAX_SHOWN, 60


def _small(value, budget: int = 200) -> bool:
    """Whether ``value`` has at most ``budget`` nested items (a YAML alias bomb has billions, all shared)."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return True


def shown(value) -> str:
    """``repr(value)`` for a message: bounded in size whatever the value, passwords in URLs masked."""
    from pipeline.secrets import mask_url

    if isinstance(value, str):
        masked = mask_url(value)
        if len(masked) <= MAX_SHOWN:
            return repr(masked)
        return f"{masked[:MAX_SHOWN]!r}... ({len(masked)} characters)"
    text = mask_url(repr(value) if _small(value) else _repr.repr(value))
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}... (cut)"
    return text


class PipelineError(Exception):
    """Base class for errors a user can fix; the CLI prints them and exits with code 2."""


class ConfigError(PipelineError, ValueError):
    """A study file or command-line argument is invalid."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None, value=_MISSING):
        self.file, self.key, self.value = file, key, value
        where = ": ".join(p for p in (file, f"'{key}'" if key else None) if p)
        text = f"{where}: {message}" if where else message
        if value is not _MISSING:
            text = f"{text} Got {shown(value)} instead."
        from pipeline.secrets import mask_url

        super().__init__(mask_url(text))


class DataError(PipelineError, ValueError):
    """A dataset cannot be loaded or is unusable (missing file/column, non-numeric, NaN, empty...)."""


class NoCompleteTrial(PipelineError):
    """The study has no complete trial yet (exit 1, not 2: nothing is wrong with the input)."""


class StudyLocked(PipelineError):
    """``tune --exclusive`` found the study's lock held by another run (exit 75, not 2: try again later)."""

    def __init__(self, study: str, holder: str):
        self.study, self.holder = study, holder
        super().__init__(f"study {study!r} is being tuned by {holder} (--exclusive)")
