"""Care plans of chronic conditions -> US Core CarePlan, Goal and CareTeam resources (rules/care_plans.yaml).

Each diagnosed episode of a condition that has a plan in the rules gets a CarePlan (category assess-plan,
intent plan) from its diagnosis, or from the plan's minimum age if the patient is younger then, provided the
record reaches that time (the patient's last recorded time): `active` while the episode is, `completed` from
its resolution, `revoked` at the patient's death. The plan addresses the Condition, names its Goals and the
patient's CareTeam, and says all that in its narrative. Each Goal has the plan's start and status
(`active`, `completed`, `cancelled`), the targets of the rules (a bound, the older adults' bound from their
age, or a bound relative to the patient's latest measure before the plan) and a due date where the rules
give one. Each patient with a plan has one CareTeam: the patient and their primary care practitioner, on
behalf of the practitioner's clinic, which manages the team.

Plans are few next to the events (about two per patient at most), so their texts are put together per row.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from simulator.days import DAYS_PER_YEAR
from simulator.export import us_core
from simulator.export.clinical_tables import last_recorded
from simulator.export.context import ExportContext
from simulator.export.fhir_text import (
    UCUM,
    References,
    Resources,
    build,
    dumps,
    join,
    meta,
)
from simulator.export.ids import fhir_dates, fhir_datetime_text, resource_ids, utc_ms
from simulator.export.readable import without_semantic_tag
from simulator.model.care_plans import CarePlans, GoalTarget
from simulator.model.reference_data import ObservationReference
from simulator.model.schema import CODE_SYSTEMS, Code

CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
_GOAL_STATUS = {"active": "active", "completed": "completed", "revoked": "cancelled"}
_COMPARATOR_WORDS = {"<": "below", "<=": "at or below", ">=": "at or above", ">": "above"}
_GOALS_PER_PLAN = 16  # goal ids are keyed by the condition's row times this plus the goal's position


def _period(start: pd.Series, end: pd.Series) -> pa.Array:
    """Period JSON: the start and, where there is one, the end."""
    end_text = join(',"end":"', fhir_datetime_text(end), '"', skip_nulls=False)
    return join('{"start":"', fhir_datetime_text(start), '"', end_text, "}")


def _concept(code: Code) -> dict:
    return {"coding": [{"system": CODE_SYSTEMS[code.system], "code": code.code, "display": code.display}]}


def plan_rows(patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rules: CarePlans) -> pd.DataFrame:
    """One row per diagnosed episode with a plan: its Condition, the plan's name, start, end and status."""
    conditions = tables["conditions"]
    plan_of = rules.plan_of()
    chosen = conditions["diagnosis_time"].notna().to_numpy() & conditions["code"].astype(object).isin(plan_of)
    rows = conditions[chosen.to_numpy()]
    people = patients.set_index("index")
    plan = rows["code"].astype(object).map(plan_of).to_numpy(dtype=object)
    min_age = np.array([rules.plans[name].min_age for name in plan], np.float64)
    birth = utc_ms(people["birth_time"].reindex(rows["patient"]))
    adult = birth + (min_age * DAYS_PER_YEAR * 86_400_000).astype("timedelta64[ms]")
    start = np.maximum(utc_ms(rows["diagnosis_time"]), adult)
    resolved = utc_ms(rows["resolution_time"])
    died = utc_ms(people["death_time"].reindex(rows["patient"]))
    record_end = last_recorded(patients, tables).reindex(rows["patient"]).to_numpy().astype("datetime64[ms]")
    keep = (start <= record_end) & ~(start > resolved) & ~(start > died)
    status = np.where(~np.isnat(resolved), "completed", np.where(~np.isnat(died), "revoked", "active"))
    end = np.where(~np.isnat(resolved), resolved, died)
    out = pd.DataFrame(
        {
            "patient": rows["patient"].to_numpy(),
            "patient_id": rows["patient_id"].to_numpy(dtype=object),
            "row": rows["row"].to_numpy(),
            "condition_id": rows["id"].to_numpy(dtype=object),
            "condition": rows["display"].astype(object).to_numpy(),
            "plan": plan,
            "start_time": pd.to_datetime(start, utc=True),
            "end_time": pd.to_datetime(end, utc=True),
            "status": status.astype(object),
            "age_years": (start - birth).astype(np.float64) / (DAYS_PER_YEAR * 86_400_000),
        }
    )[keep]
    return out.reset_index(drop=True)


def _baselines(plans: pd.DataFrame, observations: pd.DataFrame, codes: set[str]) -> dict[str, list[tuple]]:
    """For each LOINC code of `codes`, each plan's patient's latest (value, unit) of it at or before the plan's
    start ((None, None) where there is none)."""
    out = {}
    left = pd.DataFrame({"at": utc_ms(plans["start_time"]), "patient": plans["patient"].to_numpy()})
    left["position"] = np.arange(len(plans))
    left = left.sort_values("at", kind="stable")
    for code in sorted(codes):
        rows = observations[(observations["code"] == code).to_numpy()]
        right = pd.DataFrame(
            {
                "at": utc_ms(rows["time"]),
                "patient": rows["patient"].to_numpy(),
                "value": rows["value"].to_numpy(),
                "unit": rows["unit"].astype(object).to_numpy(),
            }
        ).sort_values("at", kind="stable")
        matched = pd.merge_asof(left, right, on="at", by="patient", direction="backward").sort_values("position")
        values = matched["value"].astype(object).where(matched["value"].notna(), None).tolist()
        units = matched["unit"].where(matched["unit"].notna(), None).tolist()
        out[code] = list(zip(values, units, strict=True))
    return out


def _target(
    target: GoalTarget, age_years: float, start: np.datetime64, baseline: tuple, reference: ObservationReference
) -> tuple[dict, str]:
    """A Goal.target of a plan started at `start`, `age_years` old, and how the goal's text says it."""
    out: dict = {"measure": _concept(target.measure)}
    words = _COMPARATOR_WORDS.get(str(target.comparator), "")
    if target.concept is not None:
        out["detailCodeableConcept"] = _concept(target.concept)
        phrase = f"{target.label}: {target.concept.display}"
    elif target.value is None and baseline[0] is None:  # no measure before the plan to reduce
        phrase = f"{target.label} {words} {target.baseline_fraction:.0%} of the latest"
    else:
        if target.value is not None:
            value, unit = target.value, str(target.unit)
            if target.older_adults is not None and age_years >= target.older_adults.age:
                value = target.older_adults.value
        else:
            value, unit = round(baseline[0] * float(target.baseline_fraction), 1), baseline[1]
        code = reference.ucum(unit)
        out["detailQuantity"] = {"value": value, "comparator": target.comparator, "unit": code or unit}
        if code:
            out["detailQuantity"] |= {"system": UCUM, "code": code}
        phrase = f"{target.label} {words} {value:g}{'' if unit == '%' else ' '}{code or unit}"
    if target.due_months is not None:
        due = start + np.timedelta64(round(target.due_months * DAYS_PER_YEAR / 12 * 86_400_000), "ms")
        out["dueDate"] = str(due.astype("datetime64[D]"))
    return out, phrase


def goal_rows(
    plans: pd.DataFrame, observations: pd.DataFrame, rules: CarePlans, reference: ObservationReference, seed: int
) -> pd.DataFrame:
    """One row per goal of each plan: its id, text (description) and targets (JSON)."""
    codes = {
        t.measure.code
        for plan in rules.plans.values()
        for goal in plan.goals
        for t in goal.targets
        if t.baseline_fraction is not None
    }
    baselines = _baselines(plans, observations, codes)
    none = [(None, None)] * len(plans)
    records = []
    columns = zip(
        plans["plan"].tolist(),
        plans["age_years"].tolist(),
        utc_ms(plans["start_time"]),
        plans["patient"].tolist(),
        plans["patient_id"].tolist(),
        plans["row"].tolist(),
        strict=True,
    )
    for position, (name, age_years, start, patient, patient_id, row) in enumerate(columns):
        for number, goal in enumerate(rules.plans[name].goals):
            targets, phrases = zip(
                *(
                    _target(t, age_years, start, baselines.get(t.measure.code, none)[position], reference)
                    for t in goal.targets
                ),
                strict=True,
            )
            text = f"{goal.description} ({', '.join(phrases)})"
            records.append((position, patient, patient_id, row, row * _GOALS_PER_PLAN + number, text, dumps(targets)))
    goals = pd.DataFrame.from_records(
        records, columns=["plan_position", "patient", "patient_id", "row", "key", "text", "target"]
    )
    goals.insert(0, "id", pd.Series(resource_ids(seed, goals["patient"].to_numpy(), "Goal", goals["key"].to_numpy())))
    return goals


def goal_resources(goals: pd.DataFrame, plans: pd.DataFrame, refs: References) -> Resources:
    of_plan = plans.iloc[goals["plan_position"].to_numpy()]
    status = of_plan["status"].map(_GOAL_STATUS).to_numpy(dtype=object)
    return build(
        "Goal",
        goals,
        goals["row"].to_numpy(),
        [
            meta(us_core.GOAL),
            ',"lifecycleStatus":"',
            status,
            '","description":{"text":',
            np.array([dumps(text) for text in goals["text"].tolist()], dtype=object),
            '},"subject":',
            refs.to("Patient", goals["patient_id"].to_numpy(dtype=object)),
            ',"startDate":"',
            fhir_dates(of_plan["start_time"]).astype(object),
            '","target":',
            goals["target"].to_numpy(dtype=object),
            ',"addresses":[',
            refs.to("Condition", of_plan["condition_id"].to_numpy(dtype=object)),
            "]",
        ],
        refs.line_end,
    )


def care_team_rows(patients: pd.DataFrame, plans: pd.DataFrame, context: ExportContext) -> pd.DataFrame:
    """One row per patient with a plan: the team's id, its start (the first plan's) and the patient's death."""
    first = plans.groupby("patient", sort=True)["start_time"].min()
    people = patients.set_index("index").loc[first.index]
    providers = context.directory.patient_providers(people.reset_index())
    teams = pd.DataFrame(
        {
            "patient": first.index.to_numpy(),
            "patient_id": people["id"].to_numpy(dtype=object),
            "start_time": first.to_numpy(),
            "end_time": people["death_time"].to_numpy(),
            "practitioner_id": providers["general_practitioner_id"].to_numpy(dtype=object),
            "clinic_id": providers["clinic_id"].to_numpy(dtype=object),
        }
    )
    ids = resource_ids(context.seed, teams["patient"].to_numpy(), "CareTeam", np.zeros(len(teams), np.int64))
    teams.insert(0, "id", pd.Series(ids, dtype=object))
    return teams


def care_team_resources(teams: pd.DataFrame, rules: CarePlans, refs: References) -> Resources:
    patient_role = dumps([_concept(rules.care_team_roles["patient"])])
    pcp_role = dumps([_concept(rules.care_team_roles["primary_care_provider"])])
    dead = teams["end_time"].notna().to_numpy()
    subject = refs.to("Patient", teams["patient_id"].to_numpy(dtype=object))
    clinic = refs.to("Organization", teams["clinic_id"].to_numpy(dtype=object))
    return build(
        "CareTeam",
        teams,
        np.full(len(teams), -1, np.int64),
        [
            meta(us_core.CARE_TEAM),
            ',"status":',
            np.where(dead, '"inactive"', '"active"').astype(object),
            ',"name":"Primary care team","subject":',
            subject,
            ',"period":',
            _period(teams["start_time"], teams["end_time"]),
            f',"participant":[{{"role":{patient_role},"member":',
            subject,
            f'}},{{"role":{pcp_role},"member":',
            refs.to("Practitioner", teams["practitioner_id"].to_numpy(dtype=object)),
            ',"onBehalfOf":',
            clinic,
            '}],"managingOrganization":[',
            clinic,
            "]",
        ],
        refs.line_end,
    )


def _narrative(title: str, condition: str, status: str, goals: list[str]) -> str:
    """The plan in a sentence, as XHTML."""
    sentence = f"{title} for {without_semantic_tag(condition)} ({status}). Goals: {'; '.join(goals)}."
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(sentence)}</p></div>'


def care_plan_resources(
    plans: pd.DataFrame, goals: pd.DataFrame, teams: pd.DataFrame, rules: CarePlans, refs: References
) -> Resources:
    """CarePlans with their narrative, the Condition they address, their Goals and the patient's CareTeam."""
    goal_refs = refs.to("Goal", goals["id"].to_numpy(dtype=object)).to_pylist()
    texts: list[list[str]] = [[] for _ in range(len(plans))]
    references: list[list[str]] = [[] for _ in range(len(plans))]
    for position, text, reference in zip(
        goals["plan_position"].tolist(), goals["text"].tolist(), goal_refs, strict=True
    ):
        texts[position].append(text)
        references[position].append(reference)
    titles = [rules.plans[name].title for name in plans["plan"].tolist()]
    narrative = [
        dumps({"status": "generated", "div": _narrative(title, condition, status, goal_texts)})
        for title, condition, status, goal_texts in zip(
            titles, plans["condition"].tolist(), plans["status"].tolist(), texts, strict=True
        )
    ]
    team_of = pd.Series(teams["id"].to_numpy(dtype=object), index=teams["patient"].to_numpy())
    practitioner_of = pd.Series(teams["practitioner_id"].to_numpy(dtype=object), index=teams["patient"].to_numpy())
    category = dumps(
        [
            {
                "coding": [
                    {"system": CAREPLAN_CATEGORY, "code": "assess-plan", "display": "Assessment and Plan of Treatment"}
                ]
            }
        ]
    )
    return build(
        "CarePlan",
        plans,
        plans["row"].to_numpy(),
        [
            meta(us_core.CARE_PLAN),
            ',"text":',
            np.array(narrative, dtype=object),
            ',"status":"',
            plans["status"].to_numpy(dtype=object),
            f'","intent":"plan","category":{category},"title":',
            np.array([dumps(title) for title in titles], dtype=object),
            ',"subject":',
            refs.to("Patient", plans["patient_id"].to_numpy(dtype=object)),
            ',"period":',
            _period(plans["start_time"], plans["end_time"]),
            ',"author":',
            refs.to("Practitioner", practitioner_of.reindex(plans["patient"]).to_numpy(dtype=object)),
            ',"careTeam":[',
            refs.to("CareTeam", team_of.reindex(plans["patient"]).to_numpy(dtype=object)),
            '],"addresses":[',
            refs.to("Condition", plans["condition_id"].to_numpy(dtype=object)),
            '],"goal":[',
            np.array([",".join(r) for r in references], dtype=object),
            "]",
        ],
        refs.line_end,
    )


def care_resources(
    patients: pd.DataFrame, tables: Mapping[str, pd.DataFrame], context: ExportContext, refs: References
) -> dict[str, Resources]:
    """The chunk's CareTeams, Goals and CarePlans."""
    rules = context.library.care_plans
    plans = plan_rows(patients, tables, rules)
    plans.insert(
        0,
        "id",
        pd.Series(
            resource_ids(context.seed, plans["patient"].to_numpy(), "CarePlan", plans["row"].to_numpy()), dtype=object
        ),
    )
    goals = goal_rows(plans, tables["observations"], rules, context.observation_reference, context.seed)
    teams = care_team_rows(patients, plans, context)
    return {
        "CareTeam": care_team_resources(teams, rules, refs),
        "Goal": goal_resources(goals, plans, refs),
        "CarePlan": care_plan_resources(plans, goals, teams, rules, refs),
    }
