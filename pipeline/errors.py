"""Errors raised at the boundary: bad study files, bad data, bad arguments.

Every message names where the bad value came from (file, key path) and the value itself, in one shape:
``studies/x.yaml: 'search.lr.low' must be a float > 0. Got 0 instead.``
"""

from __future__ import annotations

_MISSING = object()


class PipelineError(Exception):
    """Base class for errors a user can fix; the CLI prints them and exits with code 2."""


class ConfigError(PipelineError, ValueError):
    """A study file or command-line argument is invalid."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None, value=_MISSING):
        self.file, self.key, self.value = file, key, value
        where = ": ".join(p for p in (file, f"'{key}'" if key else None) if p)
        text = f"{where}: {message}" if where else message
        if value is not _MISSING:
            text = f"{text} Got {value!r} instead."
        super().__init__(text)


class DataError(PipelineError, ValueError):
    """A dataset cannot be loaded or is unusable (missing file/column, non-numeric, NaN, empty...)."""


class NoCompleteTrial(PipelineError):
    """The study has no complete trial yet (exit 1, not 2: nothing is wrong with the input)."""
