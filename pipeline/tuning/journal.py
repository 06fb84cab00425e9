"""Optuna's journal file, made safe against crashes: a lock that names its holder, and torn records repaired.

**The lock.** Optuna serialises appends with a lock file beside the journal (``<journal>.lock``, a symbolic link
created atomically). A process killed while holding it leaves it behind, and Optuna's own lock then waits out a
30 s grace period without a word. :class:`HolderLock` keeps Optuna's protocol (same file, same atomic symlink, so
optuna-dashboard and plain Optuna still exclude each other with it) but writes the holder (host, pid, start time)
into the link itself, in the same system call that takes the lock. A waiter that finds the holder dead on this
machine clears the lock at once and says so; a lock without a holder (taken by another tool) keeps Optuna's grace
period, with a message.

**Torn records.** A crash or a full disk can cut the last append in half; the next append would then glue a whole
record to the torn one, and from then on Optuna cannot read the journal at all (``JSONDecodeError`` for every
study in it). :func:`repair` moves a torn tail, and any line that is not a whole record, to a side file
``<journal>.torn-<time>`` and keeps every complete record.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import sys
import time
import uuid

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock

from pipeline.tuning import owner

LOCK_SUFFIX = ".lock"
_HOLDER = "#holder="
GRACE_PERIOD = 30.0  # Optuna's, for a lock that does not name its holder


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class HolderLock(BaseJournalFileLock):
    """Optuna's symlink lock with the holder written into the link: a dead holder's lock is cleared at once."""

    def __init__(self, journal: str, *, grace_period: float = GRACE_PERIOD, say=_say):
        self.journal = journal
        self.lock_file = journal + LOCK_SUFFIX
        self.grace_period = grace_period
        self._say = say

    def _target(self) -> str:
        return f"{self.journal}{_HOLDER}{owner.me()}"

    def holder(self) -> str | None:
        """The holder written in the lock (``host:pid:start``); None when there is no lock or it names nobody."""
        try:
            target = os.readlink(self.lock_file)
        except OSError:
            return None
        return target.split(_HOLDER, 1)[1] if _HOLDER in target else None

    def clear_if_dead(self) -> bool:
        """Remove the lock when its holder is a dead process of this machine; True when it was removed.

        Two processes may find the same dead lock: a guard (an OS lock, which dies with its holder) makes the
        look and the removal one step, so a fresh lock taken meanwhile is never removed.
        """
        if not os.path.lexists(self.lock_file):
            return False
        with open(self.lock_file + ".guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            holder = self.holder()
            if holder is None or owner.is_alive(holder) is not False:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_file)
        self._say(
            f"cleared the journal lock {self.lock_file}: its holder ({holder}) is no longer running "
            "(killed while writing); nothing was lost"
        )
        return True

    def acquire(self) -> bool:
        sleep = 0.001
        waited_since = None
        seen_mtime, mtime_since = None, time.monotonic()
        told = False
        while True:
            try:
                os.symlink(self._target(), self.lock_file)
                return True
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise
            # Held. A dead holder on this machine: clear it now. Another holder: wait, taking over a lock that names
            # nobody after Optuna's grace period (the holder's mtime does not change while it writes).
            if self.clear_if_dead():
                continue
            now = time.monotonic()
            waited_since = waited_since or now
            if self.holder() is None:
                try:
                    mtime = os.lstat(self.lock_file).st_mtime
                except OSError:
                    continue
                if mtime != seen_mtime:
                    seen_mtime, mtime_since = mtime, now
                if now - mtime_since > self.grace_period:
                    self._say(
                        f"took over the journal lock {self.lock_file}: unreleased for {self.grace_period:g} s"
                    )
                    with contextlib.suppress(FileNotFoundError):
                        self._remove()
                    continue
            if not told and now - waited_since > 3:
                who = self.holder() or "a process that did not name itself"
                self._say(f"waiting for the journal lock {self.lock_file}, held by {who}")
                told = True
            time.sleep(sleep)
            sleep = min(sleep * 2, 0.05)

    def _remove(self) -> None:
        moved = f"{self.lock_file}{uuid.uuid4()}.rename"
        os.rename(self.lock_file, moved)
        os.unlink(moved)

    def release(self) -> None:
        try:
            self._remove()
        except OSError:
            raise RuntimeError(f"the journal lock {self.lock_file} was not held") from None


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "op_code" in record


def _side_file(journal: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{journal}.torn-{stamp}"


def repair(journal: str, *, full: bool = False, say=_say) -> int:
    """Move torn records out of ``journal`` into a side file; return how many bytes were moved.

    Cheap by default: only the tail after the last newline is looked at (what a crash leaves). ``full`` also checks
    every line (what a later append after a torn record leaves: a torn record glued to a whole one, which is split
    and the whole one kept). Holds the journal lock, so no other process appends meanwhile. The side file is written
    and synced before the journal is touched: if it cannot be written (a full disk), nothing changes.
    """
    if not os.path.isfile(journal) or os.path.getsize(journal) == 0:
        return 0
    lock = HolderLock(journal, say=say)
    lock.acquire()
    try:
        return _full_repair(journal, say) if full else _tail_repair(journal, say)
    finally:
        lock.release()


def _tail_repair(journal: str, say) -> int:
    size = os.path.getsize(journal)
    with open(journal, "rb") as handle:
        block = 1 << 16
        end = size
        tail = b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                tail = chunk[cut + 1 :] + tail
                end = start + cut + 1
                break
            tail = chunk + tail
            end = start
        else:
            end = 0
    if not tail:
        return 0
    _save_side(journal, tail, say)
    os.truncate(journal, end)
    say(
        f"repaired the Optuna journal {journal}: its last record was torn (a crash or a full disk cut a write); "
        f"the {len(tail)} torn byte(s) went to {journal}.torn-*; every complete record is kept"
    )
    return len(tail)


def _full_repair(journal: str, say) -> int:
    kept: list[bytes] = []
    torn: list[bytes] = []
    with open(journal, "rb") as handle:
        for line in handle:
            if _is_record(line):
                kept.append(line)
                continue
            # A torn record with a whole one appended after it: keep the whole one.
            at = line.rfind(b'{"op_code"')
            if at > 0 and _is_record(line[at:]):
                torn.append(line[:at] + b"\n")
                kept.append(line[at:])
            else:
                torn.append(line if line.endswith(b"\n") else line + b"\n")
    if not torn:
        return 0
    moved = sum(len(t) for t in torn)
    _save_side(journal, b"".join(torn), say)
    fresh = f"{journal}.repairing-{os.getpid()}"
    with open(fresh, "wb") as handle:
        handle.writelines(kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(fresh, journal)
    say(
        f"repaired the Optuna journal {journal}: {len(torn)} torn record(s) ({moved} bytes) moved to "
        f"{journal}.torn-*; every complete record is kept"
    )
    return moved


def _save_side(journal: str, data: bytes, say) -> None:
    path = _side_file(journal)
    try:
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot save the torn end of the Optuna journal {journal} to {path} ({exc.strerror})"
        ) from exc


def backend(journal: str) -> JournalFileBackend:
    """Optuna's journal file backend with the holder lock, after a dead holder's lock is cleared and a torn tail
    repaired."""
    lock = HolderLock(journal)
    lock.clear_if_dead()
    repair(journal)
    return JournalFileBackend(journal, lock_obj=lock)
