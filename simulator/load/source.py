"""What a written run holds for a FHIR server, read from its files (never from the engine): the resources of
`RUN/fhir/*.ndjson` (Bulk Data, preferred) or `RUN/bundles/*.json`, as the shared resources (those that
name no Patient: organizations, locations, practitioners) and then one group per patient, each resource
with its type, id and JSON text, references literal (`Type/id`).

Both are streamed, a patient at a time, so memory does not grow with the run: ehrsim writes every ndjson
file in the order of `Patient.ndjson`, so a patient's resources are the next lines of each file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import orjson

from simulator.export.bundles import SHARED_BUNDLE
from simulator.export.ids import patient_of

ANY_REFERENCE = re.compile(rb'"reference":"([A-Za-z]+)/')
URN_REFERENCE = re.compile(rb'"reference":"(urn:uuid:[^"]+)"')
TYPE_ORDER_SAMPLE = 1_000  # resources of each type whose references order the types


class RunReadError(ValueError):
    """A run that cannot be loaded as it is: what and where (file:line)."""


@dataclass(frozen=True)
class Resource:
    resource_type: str
    id: str
    json: bytes  # the resource, references literal

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class PatientResources:
    """A patient's resources, the Patient first; `ordinal`: the patient's place in the run (0, 1, ...)."""

    ordinal: int
    patient_id: str
    resources: list[Resource]


Skip = Callable[[int], bool]  # whether the patient of this ordinal is left out (already loaded)


def _resource(line: bytes, where: str) -> Resource:
    try:
        value = orjson.loads(line)
        return Resource(value["resourceType"], value["id"], line)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunReadError(f"{where}: not a FHIR resource with a resourceType and an id ({exc})") from None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each non-empty line."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip(b"\r\n")
            if line:
                yield number, line


def _identity(*paths: Path) -> str:
    """SHA-256 of the first of these files that exists: what a checkpoint belongs to."""
    for path in paths:
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return ""


def type_order(references: dict[str, set[str]]) -> list[str]:
    """The types in an order where a type comes after those it references, Patient first; types that
    reference each other (Encounter and Condition) stay together, by name."""
    graph = nx.DiGraph()
    graph.add_nodes_from(references)
    graph.add_edges_from((target, source) for source, targets in references.items() for target in targets)
    graph.remove_edges_from(nx.selfloop_edges(graph))
    graph.remove_nodes_from([t for t in list(graph) if t not in references])
    groups = nx.condensation(graph)
    order = []
    for group in nx.lexicographical_topological_sort(groups, key=lambda g: min(groups.nodes[g]["members"])):
        order.extend(sorted(groups.nodes[group]["members"]))
    return sorted(order, key=lambda t: t != "Patient")


class _Cursor:
    """The lines of one ndjson file, one look ahead: the patient of the next line."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = _lines(path)
        self.number, self.line, self.patient = 0, b"", None
        self.advance()

    def advance(self) -> None:
        self.number, self.line = next(self.lines, (0, b""))
        self.patient = None
        if self.line:
            self.patient = patient_of(self.line)
            if self.patient is None:
                raise RunReadError(f"{self.where}: names no Patient, unlike the other resources of its file")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


class NdjsonRun:
    """`RUN/fhir/<Type>.ndjson`: the Bulk Data output, counts from its manifest."""

    kind = "ndjson"

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "fhir"
        self.files = {path.stem: path for path in sorted(self.folder.glob("*.ndjson"))}
        if "Patient" not in self.files and any(self.folder.glob("Patient.[0-9]*.ndjson")):
            raise RunReadError(
                f"{self.folder}: written in parts (--dask); the loader reads one file per type: concatenate each "
                "type's parts in order first (cat Patient.*.ndjson > Patient.ndjson, and so on)"
            )
        if "Patient" not in self.files:
            raise RunReadError(f"{self.folder}: no Patient.ndjson")
        self.identity = _identity(run_dir / "manifest.json", self.folder / "manifest.json")
        self.shared_types = [t for t, path in self.files.items() if t != "Patient" and not self._names_patients(path)]
        self.patient_types = type_order(
            {t: self._referenced(path) for t, path in self.files.items() if t not in self.shared_types}
        )
        self.expected = self._counts()
        self.n_skipped = 0  # resources of the patients `patients` left out

    @staticmethod
    def _names_patients(path: Path) -> bool:
        first = next(_lines(path), (0, b""))[1]
        return patient_of(first) is not None

    @staticmethod
    def _referenced(path: Path) -> set[str]:
        found: set[str] = set()
        for count, (_, line) in enumerate(_lines(path)):
            if count == TYPE_ORDER_SAMPLE:
                break
            found.update(match.decode() for match in ANY_REFERENCE.findall(line))
        return found

    def _counts(self) -> dict[str, int]:
        """Resources by type: from the Bulk manifest, else the lines of each file. A type may have more than
        one file (`Observation.ndjson` and the streams' `Observation.streams.ndjson`): their counts add up."""
        types = {name.partition(".")[0] for name in self.files}
        counts: dict[str, int] = {}
        try:
            manifest = orjson.loads((self.folder / "manifest.json").read_bytes())
            for item in manifest["output"]:
                counts[item["type"]] = counts.get(item["type"], 0) + int(item["count"])
            if set(counts) == types:
                return dict(sorted(counts.items()))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        counts = {}
        for name, path in self.files.items():
            resource_type = name.partition(".")[0]
            counts[resource_type] = counts.get(resource_type, 0) + sum(1 for _ in _lines(path))
        return dict(sorted(counts.items()))

    def shared(self) -> list[Resource]:
        order = type_order({t: self._referenced(self.files[t]) for t in self.shared_types})
        return [_resource(line, f"{self.files[t]}:{number}") for t in order for number, line in _lines(self.files[t])]

    def patients(self, skip: Skip) -> Iterator[PatientResources]:
        cursors = [_Cursor(self.files[t]) for t in self.patient_types[1:]]
        path = self.files["Patient"]
        for ordinal, (number, line) in enumerate(_lines(path)):
            patient = _resource(line, f"{path}:{number}")
            keep = not skip(ordinal)
            group = [patient]
            for cursor in cursors:
                while cursor.patient == patient.id:
                    if keep:
                        group.append(_resource(cursor.line, cursor.where))
                    else:
                        self.n_skipped += 1
                    cursor.advance()
            if keep:
                yield PatientResources(ordinal, patient.id, group)
            else:
                self.n_skipped += 1
        for cursor in cursors:
            if cursor.line:
                raise RunReadError(
                    f"{cursor.where}: a resource of Patient/{cursor.patient} after that patient's turn, or of a "
                    "patient not in Patient.ndjson: every file must list its resources in the order of "
                    "Patient.ndjson, as ehrsim writes them"
                )


class BundleRun:
    """`RUN/bundles/`: the shared resources' bundle, then one transaction per patient (in name order);
    `urn:uuid:` references become literal. Counts from the run manifest."""

    kind = "bundles"

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "bundles"
        self.shared_path = self.folder / SHARED_BUNDLE
        self.paths = [path for path in sorted(self.folder.glob("*.json")) if path != self.shared_path]
        if not self.paths:
            raise RunReadError(f"{self.folder}: no patient bundles")
        self.identity = _identity(run_dir / "manifest.json")
        try:
            self.manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            self.manifest = {}
        self.expected = self._counts()
        self.n_skipped = 0  # resources of the patients `patients` left out (as the run manifest counts them)

    def _counts(self) -> dict[str, int]:
        try:
            counts = dict(self.manifest["counts"]["resources_by_type"])
        except (KeyError, TypeError):
            return {}
        for resource in self.shared():
            counts[resource.resource_type] = counts.get(resource.resource_type, 0) + 1
        return dict(sorted(counts.items()))

    @staticmethod
    def _read(path: Path) -> list[Resource]:
        """The bundle's resources, with literal references."""
        try:
            entries = orjson.loads(path.read_bytes())["entry"]
            targets = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunReadError(f"{path}: not a bundle of resources with ids and fullUrls ({exc})") from None

        def literal(match: re.Match[bytes]) -> bytes:
            target = targets.get(match.group(1).decode())
            if target is None:
                raise RunReadError(f"{path}: {match.group(1).decode()} is no entry of the bundle")
            return b'"reference":"' + target.encode() + b'"'

        resources = []
        for entry in entries:
            resource = entry["resource"]
            text = URN_REFERENCE.sub(literal, orjson.dumps(resource))
            resources.append(Resource(resource["resourceType"], resource["id"], text))
        return resources

    def shared(self) -> list[Resource]:
        """The shared bundle's resources; without one (a run written before it existed), the resources of the
        first patient's bundle that name no Patient."""
        if self.shared_path.is_file():
            return self._read(self.shared_path)
        return [r for r in self._read(self.paths[0]) if r.resource_type != "Patient" and not patient_of(r.json)]

    def patients(self, skip: Skip) -> Iterator[PatientResources]:
        shared = {r.reference for r in self.shared()}
        for ordinal, path in enumerate(self.paths):
            if skip(ordinal):
                self.n_skipped += self.manifest.get("files", {}).get(f"bundles/{path.name}", {}).get("resources", 0)
                continue
            resources = [r for r in self._read(path) if r.reference not in shared]
            patients = [r for r in resources if r.resource_type == "Patient"]
            if len(patients) != 1:
                raise RunReadError(f"{path}: {len(patients)} Patient resources, not one")
            yield PatientResources(ordinal, patients[0].id, sorted(resources, key=lambda r: r is not patients[0]))


def open_run(run_dir: Path) -> NdjsonRun | BundleRun:
    """The run's ndjson if it has any, else its bundles."""
    if not run_dir.is_dir():
        raise RunReadError(f"{run_dir}: no such folder")
    if any((run_dir / "fhir").glob("*.ndjson")):
        return NdjsonRun(run_dir)
    if any((run_dir / "bundles").glob("*.json")):
        return BundleRun(run_dir)
    if any((run_dir / "fhir").glob("*.ndjson.*")):
        raise RunReadError(
            f"{run_dir / 'fhir'}: compressed ndjson (--compress); the loader reads plain .ndjson: decompress the "
            "files first (gunzip *.gz, zstd -d *.zst) or load the run's bundles"
        )
    raise RunReadError(f"{run_dir}: neither fhir/*.ndjson nor bundles/*.json (write them with --format ndjson,bundles)")
