"""pipeline/tuning/owner.py: who owns a trial or a lock, and whether that process still runs on this host. Real
processes: this one, a live child, a child killed and reaped, a zombie, and a live pid with another start time (a
reused pid). The start time is read here from /proc/PID/stat (proc(5): field 22, starttime)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.tuning import owner

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")


def starttime(pid: int) -> int:
    """Field 22 of /proc/PID/stat, counted after the command name's closing parenthesis (proc(5))."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    after_name = text[text.rindex(")") + 2 :].split()  # fields 3, 4, ...
    return int(after_name[22 - 3])


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()[0]


@pytest.fixture
def child():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_me_is_host_pid_and_start_time():
    assert owner.me() == f"{socket.gethostname()}:{os.getpid()}:{starttime(os.getpid())}"
    assert owner.start_ticks(os.getpid()) == starttime(os.getpid())
    assert owner.is_alive(owner.me()) is True


def test_a_live_child_is_alive_and_gone_once_killed_and_reaped(child):
    who = f"{socket.gethostname()}:{child.pid}:{starttime(child.pid)}"
    assert owner.is_alive(who) is True
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert owner.is_alive(who) is False
    assert owner.start_ticks(child.pid) is None


def test_a_killed_child_not_yet_reaped_is_gone(child):
    who = f"{socket.gethostname()}:{child.pid}:{starttime(child.pid)}"
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state(child.pid) == "Z"  # a zombie: the pid exists, but it holds nothing and writes nothing
    assert owner.is_alive(who) is False


def test_a_live_pid_with_another_start_time_is_a_reused_pid(child):
    ticks = starttime(child.pid)
    assert owner.is_alive(f"{socket.gethostname()}:{child.pid}:{ticks + 1}") is False
    # start 0: written where the start time was unknown; the pid alone decides
    assert owner.is_alive(f"{socket.gethostname()}:{child.pid}:0") is True


@pytest.mark.parametrize(
    "who",
    ["another-host.invalid:1:1", "", "nonsense", "host:pid:start", None],
    ids=["other-host", "empty", "no-fields", "not-numbers", "none"],
)
def test_an_owner_this_host_cannot_judge_is_unknown(who):
    assert owner.is_alive(who) is None


def test_parse_splits_at_the_last_two_colons():
    assert owner.parse("h:12:34") == ("h", 12, 34)
    assert owner.parse("fe80::1:12:34") == ("fe80::1", 12, 34)  # a host name with colons of its own
    assert owner.parse("h:12") is None


def test_start_ticks_reads_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    # the command name (field 2) of an executed script is its file name: here one with ") (" inside it
    script = tmp_path / "a) (b c"
    script.write_text(f"#!{sys.executable}\nimport time; time.sleep(60)\n")
    script.chmod(0o755)
    process = subprocess.Popen([str(script)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{process.pid}/comm") as handle:
                if handle.read().strip() == "a) (b c":
                    break
            time.sleep(0.01)
        assert owner.start_ticks(process.pid) == starttime(process.pid)
        assert owner.is_alive(f"{socket.gethostname()}:{process.pid}:{starttime(process.pid)}") is True
    finally:
        process.kill()
        process.wait()
