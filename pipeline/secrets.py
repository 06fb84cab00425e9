"""Passwords never leave the process: URLs are shown with ``***`` in place of a password, in every print, log line,
error message, Optuna attribute and MLflow param, tag or artifact.

Credentials belong outside URLs (PGPASSWORD or ~/.pgpass for PostgreSQL, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD for an MLflow server); a password given in a URL anyway is masked wherever it would show.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from urllib.parse import unquote

MASK = "***"
# scheme://user:password@host -- the password is everything between the first ':' after the user and the last '@'
# before the host (passwords may contain '@' and ':' when percent-encoding was forgotten).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)(?P<secret>[^\s/]*)(?P<at>@)")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey)=)(?P<secret>[^&\s'\"]+)", re.I
)
_DSN = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|[^\s&'\"*][^\s&'\"]*)", re.I)

_known: set[str] = set()
_lock = threading.Lock()


def mask_url(text: str | None) -> str | None:
    """``text`` with the password of every URL in it replaced by ``***`` (and any registered secret)."""
    if text is None:
        return None
    text = str(text)
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['at']}" if m["secret"] else m[0], text)
    text = _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _DSN.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in _known:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def register(url: str | None) -> None:
    """Remember the password of ``url`` so that it is masked even where it appears without its URL (a driver's
    error message, a DSN echoed back)."""
    if not url:
        return
    for pattern in (_USERINFO, _QUERY):
        for match in pattern.finditer(str(url)):
            secret = match["secret"]
            if len(secret) >= 3:  # masking every "a" in the output would hide more than it protects
                with _lock:
                    _known.update({secret, unquote(secret)})


class MaskingStream(io.TextIOBase):
    """A text stream that masks passwords in what is written through it, line by line."""

    def __init__(self, stream):
        self._stream = stream
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer or "\r" in self._buffer:
            cut = max(self._buffer.rfind("\n"), self._buffer.rfind("\r")) + 1
            ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._stream.write(mask_url(ready))
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._stream.write(mask_url(self._buffer))
            self._buffer = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def masked_streams():
    """Within the block, sys.stdout and sys.stderr go through :class:`MaskingStream` (the CLI's whole run).

    Loggers created meanwhile (Optuna's, MLflow's) keep the masking stream they found; it writes to the real
    stream after the block too."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, MaskingStream):
        sys.stdout = MaskingStream(sys.stdout)
    if not isinstance(sys.stderr, MaskingStream):
        sys.stderr = MaskingStream(sys.stderr)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved
