"""Audit a written run (or a cohort in memory): every rule of the run's library (rules/audit.yaml) checked
against every record, counted by rule with a few examples."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from simulator.audit.checks import CHECKS, Finding
from simulator.audit.tables import BLOCK_PATIENTS, COLUMNS, AuditTables, blocks, city_time_zones
from simulator.export.clinical_tables import build_tables
from simulator.export.context import ExportContext
from simulator.files import write_all
from simulator.model.audit import AuditRule, AuditRules
from simulator.model.checks import load_terminology
from simulator.model.library import Library
from simulator.model.schema import CODE_SYSTEMS
from simulator.teaching.record import RunRecord

EXAMPLES = 3  # examples kept per rule, by default


@dataclass
class RuleResult:
    """One rule's outcome: records `checked`, `violations` found, and up to N `examples` (each from another
    patient: patient_id, time, what, detail)."""

    id: str
    kind: str
    severity: str
    description: str
    checked: int = 0
    violations: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """Violations per record checked (None when nothing was checked)."""
        return self.violations / self.checked if self.checked else None


@dataclass
class AuditReport:
    """The audit of one run: its folder, its patients, the seconds the audit took and a result per rule."""

    run: str
    patients: int
    seconds: float
    rules: list[RuleResult]

    @property
    def violations(self) -> int:
        return sum(r.violations for r in self.rules)

    def table(self) -> pd.DataFrame:
        """One row per rule: rule, severity, checked, violations, rate."""
        return pd.DataFrame(
            [(r.id, r.severity, r.checked, r.violations, r.rate) for r in self.rules],
            columns=["rule", "severity", "checked", "violations", "rate"],
        )

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "patients": self.patients,
            "seconds": round(self.seconds, 3),
            "violations": self.violations,
            "rules": [{**asdict(r), "rate": r.rate} for r in self.rules],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write the report as JSON (written whole or not at all)."""
        path = Path(path)
        write_all({path: json.dumps(self.to_dict(), indent=2) + "\n"})
        return path


def audit_tables(tables: AuditTables, rules: AuditRules) -> dict[str, Finding]:
    """Every rule checked against one block of tables, by rule id."""
    return {rule_id: CHECKS[rule.kind](tables, rule) for rule_id, rule in rules.rules.items()}


def _readable(rules: AuditRules) -> None:
    """ValueError for a rule naming a column the audit does not read."""
    for rule_id, rule in rules.rules.items():
        for table, column in rule.named_columns():
            if column not in COLUMNS[table]:
                raise ValueError(
                    f"audit rule {rule_id}: {table} has no column {column} (known: {', '.join(COLUMNS[table])})"
                )


def _result(rule_id: str, rule: AuditRule) -> RuleResult:
    return RuleResult(rule_id, rule.kind, rule.severity, rule.description)  # type: ignore[attr-defined]


def _add(result: RuleResult, finding: Finding, patient_ids: pd.Series, examples: int) -> None:
    """Count a block's finding into the rule's result and keep examples from patients not yet shown."""
    result.checked += finding.checked
    result.violations += len(finding.violations)
    wanted = examples - len(result.examples)
    if wanted <= 0 or not len(finding.violations):
        return
    first = finding.violations.drop_duplicates("patient").head(wanted)
    for row in first.itertuples(index=False):
        when = pd.Timestamp(row.time)
        result.examples.append(
            {
                "patient_id": str(patient_ids.get(row.patient, row.patient)),
                "time": "" if pd.isna(when) else when.isoformat(),
                "what": str(row.what),
                "detail": str(row.detail),
            }
        )


def audit_blocks(name: str, blocks: Iterable[AuditTables], rules: AuditRules, examples: int = EXAMPLES) -> AuditReport:
    """Audit the patients of `blocks` (one report for all of them, named `name`) against `rules`. ValueError
    for a rule that cannot be checked."""
    started = time.perf_counter()
    _readable(rules)
    results = {rule_id: _result(rule_id, rule) for rule_id, rule in rules.rules.items()}
    patients = 0
    for block in blocks:
        ids = block["patients"].set_index("index")["id"]
        patients += len(ids)
        for rule_id, finding in audit_tables(block, rules).items():
            _add(results[rule_id], finding, ids, examples)
    return AuditReport(name, patients, time.perf_counter() - started, list(results.values()))


def audit_run(
    run_dir: str | Path,
    examples: int = EXAMPLES,
    rules: AuditRules | None = None,
    block_patients: int = BLOCK_PATIENTS,
) -> AuditReport:
    """Audit the run in `run_dir` (a folder of `ehrsim generate` with parquet or csv tables) against `rules`
    (default: the audit rules of the library the run was made with). FileNotFoundError for a folder that is
    not a run; ValueError for a rule that cannot be checked."""
    run = RunRecord.open(run_dir)
    library = run.library
    rules = rules if rules is not None else library.audit
    terminology = terminology_by_uri(library.rules_dir)
    zones = city_time_zones(library.names)
    return audit_blocks(
        str(run.path), blocks(run, library.calendar, zones, block_patients, terminology), rules, examples
    )


def terminology_by_uri(rules_dir: Path) -> dict[tuple[str, str], str] | None:
    """The library's terminology (rules/terminology.csv), display by (system URI, code) as the tables write
    them; None without one."""
    terminology = load_terminology(rules_dir)
    if terminology is None:
        return None
    return {(CODE_SYSTEMS[system], code): display for (system, code), display in terminology.items()}


def audit_cohort(
    library: Library, patients: pd.DataFrame, events: pd.DataFrame, seed: int, examples: int = EXAMPLES
) -> AuditReport:
    """Audit patients held in memory (a chunk's patient and event tables, as `simulator.tables.chunks` makes
    them), through the clinical tables the exporters would write: what the validation report shows without a
    written run."""
    context = ExportContext.from_library(library, seed, "POST", len(patients))
    tables = {"patients": patients, **build_tables(patients, events, context)}
    zones, terminology = city_time_zones(library.names), terminology_by_uri(library.rules_dir)
    block = AuditTables({name: tables[name] for name in COLUMNS}, library.calendar, zones, terminology)
    return audit_blocks("in memory", [block], library.audit, examples)
