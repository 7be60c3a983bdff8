"""Result files are written all-or-nothing: a full disk leaves the previous files and no partial ones."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.files import write_all


def test_a_failed_write_keeps_every_previous_file_and_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.md"
    first.write_text("old a")
    second.write_text("old b")
    original = Path.write_bytes
    written: list[str] = []

    def fills_up(self: Path, data: bytes) -> int:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self.name)
        return original(self, data)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_bytes", fills_up)
        with pytest.raises(OSError, match="No space left") as caught:
            write_all({first: "new a", second: "new b"})
    assert written == [".a.json.partial"]  # the first was written, beside its target, before the disk filled
    assert caught.value.filename == str(second)
    assert (first.read_text(), second.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md"]

    assert write_all({first: "new a", second: "new b"}) == [first, second]
    assert (first.read_text(), second.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md"]


def test_an_unwritable_report_directory_is_reported_without_a_traceback(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    out = not_a_directory / "validation"
    result = CliRunner().invoke(app, ["validate", "--patients", "40", "--lifetime-patients", "0", "-o", str(out)])
    assert result.exit_code == 1
    assert f"error: {out}: Not a directory (the run stopped; nothing was left half-written)" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
