"""Writing result files all-or-nothing: a full disk or an unwritable directory never leaves one half-written."""

from __future__ import annotations

import contextlib
from pathlib import Path


def write_all(texts: dict[Path, str]) -> list[Path]:
    """Write every text to its path, or none: each goes to a hidden partial file beside its target first, and
    the targets are replaced only once all partials are complete (an OSError removes the partials and is
    raised with the target's name). The replacements are renames within one directory, which do not fail
    for lack of space."""
    partials = {path: path.with_name(f".{path.name}.partial") for path in texts}
    for path, text in texts.items():
        try:
            partials[path].write_text(text, encoding="utf-8")
        except OSError as exc:
            for partial in partials.values():
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            exc.filename = str(path)
            raise
    for path, partial in partials.items():
        partial.replace(path)
    return list(texts)
