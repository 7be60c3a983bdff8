"""Load a library: find the files, parse them with positions, write fitted values in, validate, cross-check."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel

from simulator.model.checks import check_library
from simulator.model.fitted import apply_fitted, calibration_dir, load_declarations, load_fitted
from simulator.model.library import (
    RULES_FILES,
    Library,
    data_sha256,
    default_modules_dir,
    default_rules_dir,
    module_files,
)
from simulator.model.parsing import LoadError, Located, Problem, load, parse_yaml, validate
from simulator.model.schema import BackgroundShare, DiseaseModule, Mortality
from simulator.model.targets import load_targets


def _display(path: Path) -> str:
    """A short, stable name for messages: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _InputNames:
    """The manifest's names of input files: relative to the library's roots, whatever the working
    directory: `rules/...` under the rules directory, `modules/...` under the modules directory (for a
    list of module files, their closest common directory); any other file by its display name."""

    modules_dir: Path
    rules_dir: Path

    def __call__(self, path: Path) -> str:
        resolved = path.resolve()
        for prefix, root in (("rules", self.rules_dir), ("modules", self.modules_dir)):
            if resolved.is_relative_to(root):
                return f"{prefix}/{resolved.relative_to(root).as_posix()}"
        return _display(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_library(
    modules: Path | list[Path] | None = None, rules_dir: Path | None = None, checked: list[Path] | None = None
) -> Library:
    """Load, validate and cross-check every file; raise LoadError listing all problems found.

    `modules` is a directory of module files or a list of files (default: the shipped modules);
    the rules directory's own module files (vital signs, wellness) are always included. `checked` are
    module files that take the place of the modules of the same `name` (or join them), so that a file is
    checked with the names the other modules define (`ehrsim check FILE`). Fitted calibration values
    (rules/targets/calibration/*.fitted.yaml) are written into their modules before validation, and the
    calibration declarations of the loaded modules are checked.
    """

    rules_dir = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    checked = [Path(p) for p in checked or []]
    if isinstance(modules, list):
        files = [Path(p) for p in modules]
        missing = [p for p in files if not p.is_file()]
        directory = Path(os.path.commonpath([p.resolve().parent for p in files])) if files else default_modules_dir()
    else:
        directory = Path(modules) if modules is not None else default_modules_dir()
        files = module_files(directory) if directory.is_dir() else []
        missing = [] if directory.is_dir() else [directory]
    missing += [p for p in checked if not p.is_file()]
    if not rules_dir.is_dir():
        missing.append(rules_dir)
    if missing:
        raise LoadError([Problem(_display(p), 1, 1, "", "no such file or directory") for p in missing])
    input_name = _InputNames(directory.resolve(), rules_dir.resolve())

    problems: list[Problem] = []
    hashes: dict[str, str] = {}
    data_hashes: dict[str, str] = {}
    sourced: dict[str, dict[str, list[float]]] = {}
    documents: dict[str, Located] = {}
    try:
        fitted = load_fitted(rules_dir, _display)
    except LoadError as exc:
        problems.extend(exc.problems)
        fitted = {}
    for _, _, fitted_path in fitted.values():
        hashes[input_name(fitted_path)] = _sha256(fitted_path)
    modules: list[DiseaseModule] = []
    rules: dict[str, object] = {}
    named = {p.resolve() for p in checked}
    paths = [(p, DiseaseModule) for p in module_files(rules_dir) + files if p.resolve() not in named]
    paths += [(p, DiseaseModule) for p in checked]
    paths += [(rules_dir / name, model) for name, model in RULES_FILES.items()]
    parsed: list[tuple[Path, type[BaseModel], Located]] = []
    for path, model in paths:
        try:
            parsed.append((path, model, parse_yaml(path, _display(path))))
        except LoadError as exc:
            problems.extend(exc.problems)
    replaced = {_name(document) for path, _, document in parsed if path in checked}
    for path, model, document in parsed:
        name = _name(document)
        if model is DiseaseModule and path not in checked and name is not None and name in replaced:
            continue  # a checked file takes its place
        try:
            hashes[input_name(path)] = _sha256(path)
            if model is DiseaseModule:
                data_hashes[str(name)] = data_sha256(document.data)  # before the fitted values change it
                if name in fitted:
                    values, fitted_doc, _ = fitted[name]
                    if found := apply_fitted(document, values, fitted_doc, sourced.setdefault(str(name), {})):
                        raise LoadError(found)
            loaded = validate(document, model)
        except LoadError as exc:
            problems.extend(exc.problems)
            continue
        if isinstance(loaded, DiseaseModule):
            if loaded.name in documents:
                where = documents[loaded.name].file
                problems.append(document.problem(("name",), f"module name '{loaded.name}' is also used by {where}"))
                continue
            modules.append(loaded)
            documents[loaded.name] = document
        else:
            rules[path.name] = loaded
            documents[path.name] = document
    background_share = None
    mortality = rules.get("mortality.yaml")
    if isinstance(mortality, Mortality) and mortality.background_share is not None:
        path = rules_dir / mortality.background_share
        if path.is_file():  # absent until `ehrsim calibrate mortality` writes it: the full life table applies
            try:
                background_share = load(path, BackgroundShare, _display(path))
                hashes[input_name(path)] = _sha256(path)
            except LoadError as exc:
                problems.extend(exc.problems)
    if problems:
        raise LoadError(problems)
    library = Library(
        modules=tuple(modules),
        **{name.removesuffix(".yaml"): rules[name] for name in RULES_FILES},  # type: ignore[arg-type]
        rules_dir=rules_dir,
        documents=documents,
        file_sha256=hashes,
        data_sha256=data_hashes,
        sourced_numbers=sourced,
        background_share=background_share,
    )
    check_library(library)
    _hash_tables(library, input_name)
    return _with_calibration(library)


def _name(document: Located) -> str | None:
    """A module file's `name`, where it is text (validation reports any other value)."""
    name = document.data.get("name")
    return name if isinstance(name, str) else None


IN_LIBRARY = "(in the library, not in the files checked)"


def check_in_library(files: list[Path], modules: Path | None = None, rules_dir: Path | None = None) -> Library:
    """Load the library (`modules`, default the shipped modules) with `files` in place of its modules of the
    same name, or beside them, so that the names other modules define resolve; raise LoadError with every
    problem, those of the library's other files marked as such (a checked file may cause them: a
    condition it no longer declares, which another module uses)."""
    try:
        return load_library(modules, rules_dir, checked=files)
    except LoadError as exc:
        checked = {_display(p) for p in files}
        marked = [p if p.file in checked else replace(p, message=f"{p.message} {IN_LIBRARY}") for p in exc.problems]
        raise LoadError(marked) from None


def _with_calibration(library: Library) -> Library:
    """The library with the checked calibration declarations of its modules (when the rules have targets)."""
    directory = library.rules_dir / "targets"
    if not calibration_dir(library.rules_dir).is_dir():
        return library
    targets = load_targets(directory, _display(directory))
    return replace(library, calibration=load_declarations(library, targets, _display))


def _hash_tables(library: Library, input_name: _InputNames) -> None:
    """Add the CSV tables the rules point to, so the manifest covers every input byte."""
    for name in (
        library.demographics.population_csv,
        library.mortality.male_csv,
        library.mortality.female_csv,
        library.mortality.total_csv,
    ):
        path = library.rules_dir / name
        library.file_sha256[input_name(path)] = _sha256(path)
