"""pipeline/secrets.py: a password in a URL (or a query string, or a libpq DSN) never shows. The expected texts are
written out by hand, including passwords holding '@' and ':' that were not percent-encoded."""

from __future__ import annotations

import io
import sys

import pytest

from pipeline.secrets import MASK, MaskingStream, mask_url, masked_streams, register


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:s3cr3t@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        # '@' and ':' inside the password: everything up to the LAST '@' before the host is the password
        ("postgresql://user:p@ss:w0rd@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("mysql+pymysql://root:a:b@c@db/x", "mysql+pymysql://root:***@db/x"),
        ("http://u:p%40ss@h/", "http://u:***@h/"),
        ("redis://:redispw@cache:6379/0", "redis://:***@cache:6379/0"),  # a password and no user
        # query strings: every credential parameter, any case, the other parameters kept
        ("sqlite:///x.db?password=abc&x=1", "sqlite:///x.db?password=***&x=1"),
        ("https://mlflow.internal/api?x=1&token=t0k3n&y=2", "https://mlflow.internal/api?x=1&token=***&y=2"),
        ("https://h/p?API_KEY=zz9&Secret=qq", "https://h/p?API_KEY=***&Secret=***"),
        # libpq key=value DSNs
        ("host=db user=x password=hunter2 dbname=optuna", "host=db user=x password=*** dbname=optuna"),
        ("host=db password='two words' port=5432", "host=db password=*** port=5432"),
        # two URLs in one line, each masked
        (
            "copy postgresql://a:one1@h1/x to postgresql://b:two2@h2/y",
            "copy postgresql://a:***@h1/x to postgresql://b:***@h2/y",
        ),
    ],
)
def test_passwords_are_masked(text, expected):
    assert mask_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "mysql+pymysql://root@db/x",  # a user, no password
        "http://127.0.0.1:5000/#/experiments/1",  # a port is not a password
        "studies/optuna.journal",
        "sqlite:////tmp/mlflow.db",
        "postgresql://user:@db/x",  # an empty password: nothing to hide
        "user@example.com wrote: see https://h/x?page=2",
    ],
)
def test_text_without_a_password_is_unchanged(text):
    assert mask_url(text) == text


def test_none_stays_none_and_other_values_become_text():
    assert mask_url(None) is None
    assert mask_url(42) == "42"
    assert MASK == "***"


def test_a_registered_password_is_masked_where_it_shows_without_its_url():
    register("postgresql://u:Zq7-registered@h/db")
    assert mask_url('FATAL: password authentication failed ("Zq7-registered")') == (
        'FATAL: password authentication failed ("***")'
    )


def test_a_registered_percent_encoded_password_is_masked_in_both_forms():
    register("postgresql://u:pq%40w%3Ax9@h/db")
    assert mask_url("echoed: pq@w:x9 and pq%40w%3Ax9") == "echoed: *** and ***"


def test_a_password_shorter_than_three_characters_is_not_registered():
    register("postgresql://u:q7@h/db")  # masking every "q7" in every output would hide more than it protects
    assert mask_url("q7 is a cell of the grid") == "q7 is a cell of the grid"
    register(None)
    register("")


def test_a_masking_stream_masks_a_url_split_across_writes():
    out = io.StringIO()
    stream = MaskingStream(out)
    assert stream.write("connecting to postgresql://u:sp") == len("connecting to postgresql://u:sp")
    assert out.getvalue() == ""  # held back until the line is complete
    stream.write("lit-pw@db/x\nnext ")
    assert out.getvalue() == "connecting to postgresql://u:***@db/x\n"
    stream.write("redis://:tail-pw@h")
    stream.flush()
    assert out.getvalue() == "connecting to postgresql://u:***@db/x\nnext redis://:***@h"


def test_masked_streams_wrap_stdout_and_stderr_for_the_block_only(capsys):
    before = sys.stdout, sys.stderr
    with masked_streams():
        assert isinstance(sys.stdout, MaskingStream) and isinstance(sys.stderr, MaskingStream)
        print("storage=postgresql://u:blockpw@db/x")
        print("tracking=http://u:other-pw@mlflow:5000", file=sys.stderr)
        with masked_streams():  # nested (the API inside the CLI): not wrapped twice
            assert not isinstance(sys.stdout._stream, MaskingStream)
    assert (sys.stdout, sys.stderr) == before
    captured = capsys.readouterr()
    assert captured.out == "storage=postgresql://u:***@db/x\n"
    assert captured.err == "tracking=http://u:***@mlflow:5000\n"
