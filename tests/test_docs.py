"""README.md and docs/ stay true to the code.

- Key tables: a table whose header starts `| key |` documents pydantic models, named in the comment
  `<!-- keys of: ModelA ModelB -->` right above it; its keys (the backticked names of its first column,
  aliases as written in files) must be exactly the keys those models accept. docs/module-format.md must
  cover every model a module or rules file can hold, docs/calibration.md every model of a calibration
  declaration or fitted file: a new, renamed or removed key fails here until the doc says so.
- Code blocks: every fenced block names its language; ```python compiles, its imports and the attributes
  and keyword arguments it uses of them exist, and it runs (in a temporary directory) unless marked
  `<!-- test_docs: compile only ... -->`; ```yaml parses, and a complete module, declaration or rules file
  validates (modules with simulator's own loader); a yaml block marked `<!-- test_docs: fails to load ...
  -->` fails with exactly the problems the next ```console block prints; ```json parses; each `ehrsim`
  command of a ```bash block (or a `$ ` line of a ```console block) parses with the real command-line
  interface, and each `python FILE` names a file of the repository.
- Links: every relative link and image points to a file of the repository (and a `#anchor` to a heading
  of a Markdown target); every image under docs/images is used and small.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from conftest import REPO
from pydantic import BaseModel
from ruamel.yaml import YAML

from simulator.cli import app
from simulator.model.fitted import Declaration, Fitted
from simulator.model.library import RULES_FILES
from simulator.model.loading import load_library
from simulator.model.parsing import LoadError
from simulator.model.schema import BackgroundShare, DiseaseModule

DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
LANGUAGES = ("python", "yaml", "json", "bash", "shell", "console", "text")
MARKER = re.compile(r"<!-- test_docs: (.+?) -->")
KEYS_OF = re.compile(r"<!-- keys of: ([A-Za-z ]+) -->")
IMAGE_BYTES = 200_000

# Everything a module or rules file can hold (BackgroundShare: the file mortality.yaml points to), and
# everything a calibration declaration or fitted file can hold; each doc must document all of it.
MODULE_FORMAT_ROOTS: tuple[type[BaseModel], ...] = (DiseaseModule, *RULES_FILES.values(), BackgroundShare)
CALIBRATION_ROOTS: tuple[type[BaseModel], ...] = (Declaration, Fitted)
COVERAGE = {"module-format.md": MODULE_FORMAT_ROOTS, "calibration.md": CALIBRATION_ROOTS}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- pydantic models ------------------------------------------------------------------------------------


def models_reachable(roots: tuple[type[BaseModel], ...]) -> dict[str, type[BaseModel]]:
    """Every model a file of these roots can hold, by class name, through unions, lists, dicts and
    Annotated (each visited once: guards are recursive, all/any/not hold guards)."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[object] = list(roots)
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                pending.extend(info.annotation for info in annotation.model_fields.values())
        else:
            pending.extend(typing.get_args(annotation))
    return found


def keys_of(model: type[BaseModel]) -> set[str]:
    """The keys a file may give this model: field names, or their aliases where they have one."""
    return {info.alias or name for name, info in model.model_fields.items()}


ALL_MODELS = models_reachable(MODULE_FORMAT_ROOTS + CALIBRATION_ROOTS)


# --- reading Markdown ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it starts, its language, its text and the test_docs marker above it."""

    path: Path
    line: int
    language: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        language = lines[i][3:].strip()
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = MARKER.fullmatch(previous.strip())
        end = lines.index("```", i + 1)
        blocks.append(Block(path, i + 1, language, "\n".join(lines[i + 1 : end]) + "\n", marker and marker.group(1)))
        i = end + 1
    return blocks


def prose(path: Path) -> str:
    """The text of a Markdown file with its fenced code blocks blanked out (line numbers kept)."""
    kept, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            kept.append("")
        else:
            kept.append("" if inside else line)
    return "\n".join(kept)


@dataclass(frozen=True)
class KeyTable:
    """A `| key |` table: its line, the models its comment names, the keys of its first column."""

    line: int
    models: tuple[str, ...]
    keys: tuple[str, ...]


def key_tables(path: Path) -> list[KeyTable]:
    """Every `| key |` table of a doc, each right below the `keys of` comment that names its models."""
    lines = prose(path).splitlines()
    tables: list[KeyTable] = []
    for i, line in enumerate(lines):
        named = KEYS_OF.fullmatch(line.strip())
        if line.startswith("| key |"):
            assert any(t.line == i + 1 for t in tables), f"{_rel(path)}:{i + 1}: no <!-- keys of: ... --> above"
        if not named:
            continue
        start = next(j for j in range(i + 1, len(lines)) if lines[j].strip())
        assert lines[start].startswith("| key |"), f"{_rel(path)}:{i + 1}: no | key | table below the comment"
        keys = []
        for row in lines[start + 2 :]:
            if not row.startswith("|"):
                break
            keys += re.findall(r"`([^`]+)`", row.split("|")[1])
        tables.append(KeyTable(start + 1, tuple(named.group(1).split()), tuple(keys)))
    return tables


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- key tables -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_key_tables_list_exactly_the_keys_of_their_models(path: Path) -> None:
    for table in key_tables(path):
        where = f"{_rel(path)}:{table.line}"
        unknown = [name for name in table.models if name not in ALL_MODELS]
        assert not unknown, f"{where}: no model of a module, rules or calibration file is named {unknown}"
        accepted = set().union(*(keys_of(ALL_MODELS[name]) for name in table.models))
        documented = set(table.keys)
        assert documented - accepted == set(), f"{where}: keys no model of {table.models} accepts"
        assert accepted - documented == set(), f"{where}: keys of {table.models} missing from the table"
        assert len(table.keys) == len(documented), f"{where}: a key is listed twice"


@pytest.mark.parametrize("name", sorted(COVERAGE))
def test_docs_cover_every_model_of_their_files(name: str) -> None:
    """With the test above: every key a file may hold is in a key table of its doc, as `key`."""
    path = REPO / "docs" / name
    covered = {model for table in key_tables(path) for model in table.models}
    missing = sorted(set(models_reachable(COVERAGE[name])) - covered)
    assert missing == [], f"docs/{name} has no key table of {missing}"


# --- code blocks --------------------------------------------------------------------------------------------

BLOCKS = [block for path in DOCS for block in code_blocks(path)]


def _blocks(*languages: str) -> list[Block]:
    return [b for b in BLOCKS if b.language in languages]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


MARKERS = {"python": "compile only", "yaml": "fails to load"}  # what a test_docs comment may say, by language


@pytest.mark.parametrize("block", BLOCKS, ids=_ids(BLOCKS))
def test_code_blocks_name_a_checked_language_and_a_known_marker(block: Block) -> None:
    assert block.language in LANGUAGES, f"{block.where}: fence language {block.language!r}, not one of {LANGUAGES}"
    if block.marker is not None:
        known = MARKERS.get(block.language)
        assert known and block.marker.startswith(known), f"{block.where}: unknown marker {block.marker!r}"


class _Names(ast.NodeVisitor):
    """Checks a Python block against the objects its imports bind: every attribute taken of a module or
    class exists, and every call of one binds its arguments (keyword names included)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.bound: dict[str, object] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            module = importlib.import_module(alias.name)
            if alias.asname:
                self.bound[alias.asname] = module
            else:  # `import a.b` binds `a`
                top = alias.name.split(".")[0]
                self.bound[top] = importlib.import_module(top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            if hasattr(module, alias.name):
                value = getattr(module, alias.name)
            else:
                value = importlib.import_module(f"{node.module}.{alias.name}")
            self.bound[alias.asname or alias.name] = value

    def resolve(self, node: ast.expr) -> object | None:
        """The imported object an expression names (None: not one we know statically)."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if isinstance(base, types.ModuleType | type):
                assert hasattr(base, node.attr), f"{self.where}: {ast.unparse(node)} does not exist"
                return getattr(base, node.attr)
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.resolve(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        target = self.resolve(node.func)
        if callable(target) and not any(isinstance(a, ast.Starred) for a in node.args):
            try:
                signature = inspect.signature(target)
            except ValueError:  # a builtin without a signature
                signature = None
            if signature is not None and all(k.arg for k in node.keywords):
                try:
                    signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})  # type: ignore[misc]
                except TypeError as exc:
                    pytest.fail(f"{self.where}: {ast.unparse(node)}: {exc}")
        self.generic_visit(node)


@pytest.mark.parametrize("block", _blocks("python"), ids=_ids(_blocks("python")))
def test_python_blocks_compile_and_use_names_that_exist(block: Block) -> None:
    tree = ast.parse(block.text, block.where)
    compile(tree, block.where, "exec")
    _Names(block.where).visit(tree)


RUNNABLE = [b for b in _blocks("python") if b.marker is None]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=_ids(RUNNABLE))
def test_python_blocks_run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block.text, block.where, "exec"), {"__name__": "__docs__"})


def _yaml(text: str) -> object:
    return YAML(typ="safe", pure=True).load(text)


def _document_model(data: object) -> type[BaseModel] | None:
    """The root model a parsed YAML document is a whole file of (all its required keys, no others)."""
    if not isinstance(data, dict):
        return None
    for model in MODULE_FORMAT_ROOTS + CALIBRATION_ROOTS:
        required = {info.alias or name for name, info in model.model_fields.items() if info.is_required()}
        if required <= set(data) <= keys_of(model):
            return model
    return None


@pytest.mark.parametrize("block", _blocks("yaml"), ids=_ids(_blocks("yaml")))
def test_yaml_blocks_parse_and_whole_files_validate(block: Block) -> None:
    """Every block parses; a whole declaration or rules file validates (modules: the test below)."""
    data = _yaml(block.text)
    model = _document_model(data)
    if block.marker is not None or model is DiseaseModule:
        return  # loaded by the module tests below
    if model is not None:
        model.model_validate(data)


MODULE_BLOCKS = [b for b in _blocks("yaml") if _document_model(_yaml(b.text)) is DiseaseModule]


@pytest.mark.parametrize("block", MODULE_BLOCKS, ids=_ids(MODULE_BLOCKS))
def test_module_blocks_load_or_fail_as_the_doc_says(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module block loads with the shipped rules; one marked to fail reports exactly the problems that
    the console block after it shows, for the file that block's `ehrsim check` names."""
    monkeypatch.chdir(tmp_path)
    if block.marker is None:
        name = _yaml(block.text)["name"]  # type: ignore[index]
        (tmp_path / "modules").mkdir()
        (tmp_path / "modules" / f"{name}.yaml").write_text(block.text)
        library = load_library(tmp_path / "modules")
        assert name in [m.name for m in library.modules]
        return
    console = next(b for b in code_blocks(block.path) if b.line > block.line and b.language == "console")
    command, *output = console.text.splitlines()
    args = shlex.split(command.removeprefix("$ "))
    assert args[:2] == ["ehrsim", "check"], f"{console.where}: expected `$ ehrsim check FILE`"
    file = tmp_path / args[2]
    file.parent.mkdir(parents=True)
    file.write_text(block.text)
    with pytest.raises(LoadError) as raised:
        load_library([Path(args[2])])
    problems = [str(problem) for problem in raised.value.problems]
    assert [*problems, f"{len(problems)} problems found"] == output, f"{console.where}: the output differs"


@pytest.mark.parametrize("block", _blocks("json"), ids=_ids(_blocks("json")))
def test_json_blocks_parse(block: Block) -> None:
    json.loads(block.text)


SHELL = _blocks("bash", "shell", "console")


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block (a console block: its `$ ` lines), split at `&&` and `|`, without
    comments and leading VAR=value assignments."""
    lines = block.text.replace("\\\n", " ").splitlines()
    if block.language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    commands: list[list[str]] = []
    for line in lines:
        current: list[str] = []
        for token in [*shlex.split(line, comments=True), "&&"]:
            if token in ("&&", "||", "|"):
                while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def check_ehrsim(args: list[str], where: str) -> None:
    """The command line parses with the real CLI: the subcommand exists, its options and arguments fit."""
    group = typer.main.get_command(app)
    if not args or args[0] == "--help":
        return
    assert args[0] in group.commands, f"{where}: no command `ehrsim {args[0]}` (there are {sorted(group.commands)})"
    if "--help" in args:
        return
    command = group.commands[args[0]]
    try:
        command.make_context(f"ehrsim {args[0]}", list(args[1:]))
    except Exception as exc:  # click's usage errors: unknown option, bad value, missing argument
        pytest.fail(f"{where}: `ehrsim {shlex.join(args)}`: {exc}")


@pytest.mark.parametrize("block", SHELL, ids=_ids(SHELL))
def test_shell_commands_exist(block: Block) -> None:
    commands = shell_commands(block)
    assert commands, f"{block.where}: no command"
    for command in commands:
        program, *args = command
        if program == "ehrsim":
            check_ehrsim(args, block.where)
        elif program in ("python", "python3") and args[:1] == ["-m"]:
            if args[1] == "simulator":
                check_ehrsim(args[2:], block.where)
            else:
                assert importlib.util.find_spec(args[1]) is not None, f"{block.where}: no module {args[1]}"
        elif program in ("python", "python3"):
            assert (REPO / args[0]).is_file(), f"{block.where}: no file {args[0]}"


def test_readme_shows_each_command_of_the_cli() -> None:
    shown = {c[1] for b in SHELL if b.path.name == "README.md" for c in shell_commands(b) if c[0] == "ehrsim"}
    assert shown == set(typer.main.get_command(app).commands), "README's Commands section lists every command"


# --- links and images ---------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _headings(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path).splitlines() if line.startswith("#")}


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_and_images_resolve(path: Path) -> None:
    for number, line in enumerate(prose(path).splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            where = f"{_rel(path)}:{number}: {target}"
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            assert resolved.is_relative_to(REPO), f"{where}: leaves the repository"
            assert resolved.exists(), f"{where}: no such file"
            if anchor and resolved.suffix == ".md":
                assert anchor in _headings(resolved), f"{where}: no heading with that anchor"


def test_images_are_small_and_used() -> None:
    images = sorted((REPO / "docs" / "images").iterdir())
    assert images, "docs/images holds the README's pictures"
    used = {(path.parent / t).resolve() for path in DOCS for t in LINK.findall(prose(path)) if ":" not in t}
    for image in images:
        assert image.stat().st_size < IMAGE_BYTES, f"{_rel(image)}: {image.stat().st_size} bytes"
        assert image.resolve() in used, f"{_rel(image)} is not shown by any doc"
