"""pipeline/exitcodes.py: the codes a scheduler reads are the ones README's "Exit codes" table documents, each with
its meaning, and agree with the conventions they borrow (128 + signal number, sysexits.h's EX_IOERR and
EX_TEMPFAIL)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from pipeline.exitcodes import ExitCode

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_table() -> dict[int, str]:
    """README's exit-code table as {code: meaning}; a row "130 / 143 | a / b" gives both codes their half."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s*\| code \| meaning \|", line))
    table = {}
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0]:
            break
        codes, meanings = cells[0].split(" / "), cells[1].split(" / ")
        for k, code in enumerate(codes):
            table[int(code)] = meanings[k] if len(meanings) == len(codes) else cells[1]
    return table


def test_the_codes_are_exactly_the_ones_in_readmes_table():
    assert sorted(readme_table()) == sorted(int(c) for c in ExitCode)


@pytest.mark.parametrize(
    ("code", "value", "words"),
    [
        (ExitCode.OK, 0, "ok"),
        (ExitCode.NOTHING, 1, "nothing to report"),
        (ExitCode.BAD_INPUT, 2, "bad input"),
        (ExitCode.TRIALS_FAILED, 3, "trials of this run failed"),
        (ExitCode.STORE_ERROR, 74, "could not be written"),
        (ExitCode.LOCKED, 75, "lock held"),
        (ExitCode.INTERRUPTED, 130, "Ctrl-C"),
        (ExitCode.TERMINATED, 143, "SIGTERM"),
    ],
)
def test_each_code_has_its_documented_value_and_meaning(code, value, words):
    assert int(code) == value
    assert words in readme_table()[value]


def test_the_codes_follow_the_conventions_they_borrow():
    assert ExitCode.INTERRUPTED == 128 + signal.SIGINT
    assert ExitCode.TERMINATED == 128 + signal.SIGTERM
    assert ExitCode.STORE_ERROR == os.EX_IOERR
    assert ExitCode.LOCKED == os.EX_TEMPFAIL


def test_no_two_names_share_a_code():
    assert len({int(c) for c in ExitCode}) == len(ExitCode.__members__)
