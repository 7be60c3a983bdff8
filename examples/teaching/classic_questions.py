"""Three classic questions of a course on clinical data, answered from a run's CSV tables with pandas.

    ehrsim generate --patients 5000 --seed 1 --out out/ --format csv
    python examples/teaching/classic_questions.py out/csv

1. Prevalence by age: hypertension and type 2 diabetes at the reference date, by age band, as they truly
   are (the condition has begun and not resolved, known or not) and as the record shows them (diagnosed).
2. From onset to diagnosis: for each condition, how long after its true onset it was diagnosed (median and
   interquartile range), and the share of the episodes present at the reference date never diagnosed.
3. Treatment cascade: of the adults with hypertension at the reference date, how many were diagnosed, are
   treated and are controlled (latest blood pressure below 130/80 mmHg while treated, the definition of
   NCHS Data Brief 511), beside the NHANES 2021-2023 figures of rules/targets/targets.csv.

Every column is described in csv/data_dictionary.csv (and docs/data-dictionary.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
HYPERTENSION, TYPE2_DIABETES = "38341003", "44054006"  # SNOMED CT codes of the conditions (modules/*.yaml)
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"  # LOINC codes of the blood pressure readings
CONTROLLED_BELOW = (130, 80)  # mmHg: NCHS Data Brief 511 (Fryar et al., 2024), as in rules/targets/definitions.yaml
AGE_BANDS = [0, 18, 40, 60, 80, 200]
AGE_LABELS = ["0-17", "18-39", "40-59", "60-79", "80+"]
TEXT = {"code": str, "system": str, "id": str, "patient_id": str, "encounter_id": str}


def read(folder: Path, table: str) -> pd.DataFrame:
    """A table, with codes and ids as text and every *_time column as UTC timestamps."""
    frame = pd.read_csv(folder / f"{table}.csv", dtype=TEXT)
    for column in [c for c in frame.columns if c == "time" or c.endswith("_time")]:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def reference_time(folder: Path, encounters: pd.DataFrame) -> pd.Timestamp:
    """The run's reference date (its manifest), or else the last encounter."""
    manifest = folder.parent / "manifest.json"
    if manifest.is_file():
        return pd.Timestamp(json.loads(manifest.read_text())["config"]["reference_date"], tz="UTC")
    return encounters["start_time"].max()


def present_at(conditions: pd.DataFrame, code: str, at: pd.Timestamp) -> pd.DataFrame:
    """Episodes of `code` begun by `at` and not resolved by then (the truth), with `diagnosed` by then."""
    c = conditions[(conditions["code"] == code) & (conditions["onset_time"] <= at)]
    c = c[~(c["resolution_time"] <= at)]
    return c.assign(diagnosed=c["diagnosis_time"] <= at)


def prevalence_by_age(living: pd.DataFrame, conditions: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Per cent of the living in each age band with each condition, true and diagnosed."""
    band = pd.cut(living["age"], AGE_BANDS, right=False, labels=AGE_LABELS)
    columns = {"people": living.groupby(band, observed=False).size()}
    for name, code in (("hypertension", HYPERTENSION), ("type 2 diabetes", TYPE2_DIABETES)):
        episodes = present_at(conditions, code, at)
        has = living["index"].isin(episodes["patient"])
        known = living["index"].isin(episodes.loc[episodes["diagnosed"], "patient"])
        columns[f"{name} %"] = (100 * has.groupby(band, observed=False).mean()).round(1)
        columns[f"{name} diagnosed %"] = (100 * known.groupby(band, observed=False).mean()).round(1)
    return pd.DataFrame(columns)


def onset_to_diagnosis(conditions: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Years from true onset to diagnosis by condition, and the share never diagnosed of the episodes present at
    `at`, for the conditions someone has then."""
    diagnosed = conditions[conditions["diagnosis_time"].notna()]
    years = (diagnosed["diagnosis_time"] - diagnosed["onset_time"]).dt.total_seconds() / 86_400 / 365.25
    delay = years.groupby(diagnosed["display"]).describe()[["count", "25%", "50%", "75%"]]
    present = conditions[(conditions["onset_time"] <= at) & ~(conditions["resolution_time"] <= at)]
    undiagnosed = present["diagnosis_time"].isna().groupby(present["display"]).mean() * 100
    table = delay.rename(columns={"count": "diagnosed episodes", "50%": "median years"})
    table["never diagnosed % (present now)"] = undiagnosed.reindex(table.index)
    lasting = table.dropna(subset=["never diagnosed % (present now)"])  # conditions someone has at the reference date
    return lasting.sort_values("median years", ascending=False).round(2)


def hypertension_cascade(
    living: pd.DataFrame,
    conditions: pd.DataFrame,
    medications: pd.DataFrame,
    observations: pd.DataFrame,
    at: pd.Timestamp,
) -> pd.Series:
    """Of the living adults with hypertension at `at`: diagnosed, treated, controlled (per cent)."""
    adults = living.loc[living["age"] >= 18, "index"]
    episodes = present_at(conditions, HYPERTENSION, at)
    episodes = episodes[episodes["patient"].isin(adults)]
    people = pd.Index(episodes["patient"].unique())
    diagnosed = set(episodes.loc[episodes["diagnosed"], "patient"])
    taking = medications[(medications["module"] == "hypertension") & (medications["start_time"] <= at)]
    treated = set(taking.loc[~(taking["stop_time"] <= at), "patient"])
    readings = observations[observations["code"].isin([SYSTOLIC, DIASTOLIC]) & (observations["time"] <= at)]
    latest = readings.sort_values("time").groupby(["patient", "code"])["value"].last().unstack()
    below = latest[(latest[SYSTOLIC] < CONTROLLED_BELOW[0]) & (latest[DIASTOLIC] < CONTROLLED_BELOW[1])].index
    controlled = treated & set(below)
    return pd.Series(
        {
            "adults with hypertension": len(people),
            "diagnosed %": 100 * len(diagnosed & set(people)) / max(len(people), 1),
            "treated %": 100 * len(treated & set(people)) / max(len(people), 1),
            "controlled %": 100 * len(controlled & set(people)) / max(len(people), 1),
        }
    ).round(1)


def nhanes_cascade() -> pd.Series:
    """The NHANES 2021-2023 hypertension cascade of adults (rules/targets/targets.csv, with its source)."""
    targets = pd.read_csv(REPO / "rules" / "targets" / "targets.csv")
    wanted = {
        "hypertension_aware": "diagnosed %",
        "hypertension_treated": "treated %",
        "hypertension_controlled": "controlled %",
    }
    rows = targets[targets["id"].isin([f"{name}/18-120/all/2021" for name in wanted])]
    return pd.Series(dict(zip(rows["measure"].map(wanted), rows["value"], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("out/csv"), help="the csv/ folder of a run")
    folder = parser.parse_args().folder
    patients, conditions = read(folder, "patients"), read(folder, "conditions")
    encounters, medications = read(folder, "encounters"), read(folder, "medications")
    observations = read(folder, "observations")
    at = reference_time(folder, encounters)
    living = patients[~(patients["death_time"] <= at)].copy()
    living["age"] = (at - living["birth_time"]).dt.days / 365.25
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 60):
        print(f"Prevalence by age at {at.date()} ({len(living)} people alive)\n")
        print(prevalence_by_age(living, conditions, at).to_string(), "\n")
        print("From onset to diagnosis (years; the onset is the ground truth, not in the FHIR record)\n")
        print(onset_to_diagnosis(conditions, at).to_string(), "\n")
        print("Treatment cascade of hypertension (adults), beside NHANES 2021-2023\n")
        cascade = pd.DataFrame({"this run": hypertension_cascade(living, conditions, medications, observations, at)})
        cascade["NHANES"] = nhanes_cascade()
        print(cascade.to_string())


if __name__ == "__main__":
    main()
