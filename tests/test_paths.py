"""pipeline/paths.py: the last check before a write. ``inside`` refuses any path that resolves outside its base
(``..``, an absolute name, a symlink pointing out, a sibling folder sharing the base's prefix); ``writable_folder``
names the option when a folder lies under a file or cannot be created. Real files, folders and symlinks in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.paths import inside, writable_folder

# ----------------------------------------------------------------------------------------------- inside


def test_a_path_inside_the_base_comes_back_resolved(tmp_path):
    base = tmp_path / "reports"
    base.mkdir()
    assert inside(base, base / "study" / "." / "curves.png") == (base / "study" / "curves.png").resolve()
    assert inside(base, base) == base.resolve()  # the base itself is inside


@pytest.mark.parametrize(
    "name",
    ["../outside.png", "study/../../outside.png", "/etc/passwd", "/tmp"],
    ids=["dotdot", "nested-dotdot", "absolute", "absolute-dir"],
)
def test_names_that_leave_the_base_are_refused_with_the_key_and_value(tmp_path, name):
    base = tmp_path / "reports"
    base.mkdir()
    target = base / name  # an absolute name replaces the base when joined, as in a real path build
    with pytest.raises(ConfigError) as info:
        inside(base, target, key="name")
    text = str(info.value)
    assert text.startswith(f"'name': would write {target.resolve()}, outside {base.resolve()}; refusing.")
    assert text.endswith(f"Got {str(target)!r} instead.")
    assert not (tmp_path / "outside.png").exists()


def test_a_symlink_inside_the_base_that_points_out_is_refused(tmp_path):
    base, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    (base / "study").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"outside .*; refusing\."):
        inside(base, base / "study" / "curves.png")


def test_a_sibling_folder_sharing_the_bases_prefix_is_outside(tmp_path):
    base = tmp_path / "reports"
    base.mkdir()
    with pytest.raises(ConfigError, match="refusing"):
        inside(base, tmp_path / "reports-evil" / "x.png")


def test_a_symlinked_base_still_accepts_what_lies_inside_its_target(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert inside(tmp_path / "link", tmp_path / "link" / "a.png") == real.resolve() / "a.png"


# ----------------------------------------------------------------------------------------------- writable_folder


def test_a_new_folder_under_a_writable_one_is_accepted_and_not_created(tmp_path):
    folder = tmp_path / "a" / "b"
    assert writable_folder(folder, key="--out") == folder
    assert not (tmp_path / "a").exists()  # checking writes nothing


def test_an_existing_folder_is_accepted(tmp_path):
    assert writable_folder(tmp_path, key="--out") == tmp_path


def test_a_folder_under_a_file_names_the_option_and_the_file(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    with pytest.raises(ConfigError) as info:
        writable_folder(plain / "reports" / "x", key="--out")
    assert str(info.value) == (
        f"'--out': lies under {plain}, which is a file, not a folder. Got {str(plain / 'reports' / 'x')!r} instead."
    )


def test_a_file_given_as_the_folder_is_refused(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    with pytest.raises(ConfigError) as info:
        writable_folder(plain, key="--out")
    assert str(info.value) == f"'--out': is a file, not a folder. Got {str(plain)!r} instead."
    # with ``shown``: the message names the value the user gave and the file it resolved to
    with pytest.raises(ConfigError) as info:
        writable_folder(plain, key="--storage", shown="x.journal")
    assert (
        str(info.value)
        == f"'--storage': lies under {plain}, which is a file, not a folder. Got 'x.journal' instead."
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_folder_that_cannot_be_created_names_the_read_only_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ConfigError) as info:
            writable_folder(locked / "new" / "deeper", key="--out")
    finally:
        locked.chmod(0o755)
    assert str(info.value) == (
        f"'--out': cannot be created: {locked} is not writable. Got {str(locked / 'new' / 'deeper')!r} instead."
    )


def test_the_nearest_existing_parent_is_the_one_checked_for_writing(tmp_path, monkeypatch):
    # Runs as root too (root may write anywhere): the OS's answer for that one folder is replaced.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    asked = []

    def access(path, mode):
        asked.append(Path(path))
        return False if Path(path) == locked else real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ConfigError, match=rf"^'--out': cannot be created: {locked} is not writable\."):
        writable_folder(locked / "new" / "deeper", key="--out")
    assert asked == [locked]  # the missing folders are not asked about, nor the parents above
