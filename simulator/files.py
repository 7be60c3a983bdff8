"""Atomic writing: every result file and output directory is written under a hidden partial name beside
its target (`.<name>.partial`) and renamed into place only when complete, so a full disk, an unwritable
directory or an interrupted run never leaves something half-written that looks finished. A finished
directory goes in beside what its target already holds, never over a file there."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path


def partial_path(path: Path) -> Path:
    """The hidden name a file or directory is written under until it is complete."""
    return path.with_name(f".{path.name}.partial")


def write_all(contents: Mapping[Path, str | bytes]) -> list[Path]:
    """Write every text (as UTF-8) or bytes to its path, or none: each goes to its partial file first, and
    the targets are replaced only once all partials are complete (an OSError removes the partials and is
    raised with the target's name). The replacements are renames within one directory, which do not fail
    for lack of space."""
    partials = {path: partial_path(path) for path in contents}
    for path, content in contents.items():
        try:
            partials[path].write_bytes(content.encode() if isinstance(content, str) else content)
        except OSError as exc:
            for partial in partials.values():
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            exc.filename = str(path)
            raise
    for path, partial in partials.items():
        partial.replace(path)
    return list(contents)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write one file all-or-nothing (`write_all` of one file)."""
    write_all({path: content})


def start_directory(final: Path) -> Path:
    """A new, empty partial directory to write `final`'s files in (a leftover of an interrupted run is
    removed first)."""
    partial = partial_path(final)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def incoming(final: Path) -> list[Path]:
    """Where the files of `final`'s completed partial directory go."""
    return [final / entry.name for entry in sorted(partial_path(final).iterdir())]


def ensure_free(paths: Iterable[Path]) -> None:
    """FileExistsError naming the first of these paths that exists: a finished file never replaces one."""
    for path in paths:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists and is not this run's to replace", str(path))


def finish_directory(final: Path) -> None:
    """Put the files of the completed partial directory in `final`: one rename when `final` does not exist,
    else file by file beside the files already there (the caller removed those it may replace). An existing
    file is never replaced: a name that is taken raises FileExistsError before anything moves."""
    partial = partial_path(final)
    if not os.path.lexists(final):
        os.replace(partial, final)
        return
    ensure_free(incoming(final))
    for entry in sorted(partial.iterdir()):
        os.replace(entry, final / entry.name)
    partial.rmdir()


def remove_files(root: Path, names: Iterable[str]) -> None:
    """Remove these files (paths relative to `root`; missing ones are skipped), then each folder under
    `root` that they leave empty. Nothing else is touched."""
    folders: set[Path] = set()
    for name in names:
        path = root / name
        path.unlink(missing_ok=True)
        folders.update(parent for parent in path.relative_to(root).parents if parent != Path("."))
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):  # still holds other files (or is gone): kept as it is
            (root / folder).rmdir()


def abort_directory(final: Path) -> None:
    """Remove the partial directory of `final` and everything written in it."""
    shutil.rmtree(partial_path(final), ignore_errors=True)
