"""Generate a small cohort and print one patient's timeline as a readable case.

python examples/patient_timeline.py                      # a patient with diagnosed type 2 diabetes
python examples/patient_timeline.py --condition hypertension --patients 3000 --seed 7
"""

from __future__ import annotations

import argparse

import pandas as pd

import simulator

CONDITIONS = {
    "type2_diabetes": "Diabetes mellitus type 2 (disorder)",
    "hypertension": "Hypertensive disorder, systemic arterial (disorder)",
}


def timeline(events: pd.DataFrame, patient: int, include_vitals: bool = False) -> pd.DataFrame:
    """The patient's events as a table a person can read (vital signs left out unless asked)."""
    rows = events[events["patient"] == patient]
    if not include_vitals:
        rows = rows[(rows["category"] != "vital-signs") & (rows["kind"] != "encounter_end")]
    unit = rows["unit"].astype(object).fillna("")
    out = rows.assign(
        date=rows["time"].dt.strftime("%Y-%m-%d %H:%M"),
        what=rows["kind"].astype(str).str.replace("_", " "),
        value=[f"{v:g} {u}".strip() if pd.notna(v) else "" for v, u in zip(rows["value"], unit, strict=True)],
    )
    return out[["date", "what", "display", "value", "module"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--condition", choices=sorted(CONDITIONS), default="type2_diabetes")
    args = parser.parse_args()

    population = simulator.generate(patients=args.patients, seed=args.seed)
    events, patients = population.events, population.patients
    diagnosed = events[(events["kind"] == "condition_diagnosis") & (events["display"] == CONDITIONS[args.condition])]
    if diagnosed.empty:
        raise SystemExit(f"nobody was diagnosed with {args.condition} among {args.patients} patients; try more")
    patient = int(diagnosed["patient"].iloc[0])
    person = patients[patients["index"] == patient].iloc[0]
    born = person["birth_time"].strftime("%Y-%m-%d")
    print(
        f"{person['given_name']} {person['family_name']} ({person['sex']}, born {born}), "
        f"{person['address']}, {person['city']} {person['state']}; patient id {person['id']}"
    )
    with pd.option_context("display.max_rows", 200, "display.width", 160, "display.max_colwidth", 60):
        print(timeline(events, patient).to_string(index=False))


if __name__ == "__main__":
    main()
