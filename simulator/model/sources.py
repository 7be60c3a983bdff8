"""The sources of a rules file: the `sources` map it declares (key -> citation), and the check that every key
it cites is one of them. A validator reads `sources` from the fields validated before its own."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo

from simulator.model.schema import Name

Sources = dict[Name, Annotated[str, Field(min_length=5)]]


def uncited(info: ValidationInfo, *cited: str, where: str = "") -> list[str]:
    """A message for each cited key that is not a key of the file's sources (none while `sources` itself is
    invalid: that problem is reported on its own)."""
    sources = info.data.get("sources")
    if sources is None:
        return []
    return [f"{where}source '{source}' is not a key of sources" for source in cited if source not in sources]


def need_source(source: str, info: ValidationInfo, where: str = "") -> None:
    """Raise when `source` is not a key of the file's sources."""
    if problems := uncited(info, source, where=where):
        raise ValueError(problems[0])
