"""Every file the project writes resolves inside the folder it belongs to.

Study names are restricted (see the loader), but a path is also built from command-line folders and symlinks may
point anywhere: :func:`inside` is the last check before a write, and :func:`writable_folder` turns "a parent is a
file" or "not writable" into a message that names the option, instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ConfigError


def inside(base: str | Path, path: str | Path, *, key: str = "name") -> Path:
    """``path`` resolved, after checking that it lies inside ``base`` (also resolved)."""
    base_resolved = Path(base).resolve()
    resolved = Path(path).resolve()
    if resolved != base_resolved and base_resolved not in resolved.parents:
        raise ConfigError(
            f"would write {resolved}, outside {base_resolved}; refusing.", key=key, value=str(path)
        )
    return resolved


def writable_folder(folder: str | Path, *, key: str, shown: str | Path | None = None) -> Path:
    """``folder`` if it is (or can be made) a writable folder; ConfigError naming ``key`` (and the value
    ``shown``, default the folder) otherwise."""
    folder = Path(folder)
    value = str(shown if shown is not None else folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{'is' if shown is None else f'lies under {folder}, which is'} a file, not a folder.",
            key=key,
            value=value,
        )
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"lies under {parent}, which is a file, not a folder.", key=key, value=str(folder)
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"cannot be created: {parent} is not writable.", key=key, value=str(folder))
            break
    return folder
