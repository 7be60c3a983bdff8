"""Generate a small cohort and print one patient's timeline as a readable case.

One script serves every module: it picks the first patient whom the module diagnosed (or, for
modules that diagnose nothing, such as immunizations, the first patient the module touched).

python examples/patient_timeline.py                                  # a type 2 diabetes case
python examples/patient_timeline.py --module hypertension --patients 3000 --seed 7
python examples/patient_timeline.py --list                           # the modules to choose from
"""

from __future__ import annotations

import argparse

import pandas as pd

import simulator

CLINICAL_KINDS = ("condition_diagnosis", "condition_onset", "medication_start", "procedure", "immunization")


def timeline(events: pd.DataFrame, patient: int, include_vitals: bool = False) -> pd.DataFrame:
    """The patient's events as a table a person can read. Unless asked for, the routine vital signs
    of wellness visits, encounter ends and the visits where nothing else happened are left out."""
    rows = events[events["patient"] == patient]
    if not include_vitals:
        routine = (rows["category"] == "vital-signs") & (rows["module"] == "wellness")
        rows = rows[~routine & (rows["kind"] != "encounter_end")]
        is_start = rows["kind"] == "encounter_start"
        eventful = set(rows.loc[~is_start & (rows["encounter"] >= 0), "encounter"])
        rows = rows[~is_start | (rows["encounter_class"] != "wellness") | rows["encounter"].isin(eventful)]
    unit = rows["unit"].astype(object).fillna("")
    out = rows.assign(
        date=rows["time"].dt.strftime("%Y-%m-%d %H:%M"),
        what=rows["kind"].astype(str).str.replace("_", " "),
        value=[f"{v:g} {u}".strip() if pd.notna(v) else "" for v, u in zip(rows["value"], unit, strict=True)],
    )
    return out[["date", "what", "display", "value", "module"]]


def case_for_module(events: pd.DataFrame, module: str) -> int | None:
    """The first patient with a clinical event of `module`, diagnoses first; None if nobody has one."""
    own = events[events["module"] == module]
    for kind in CLINICAL_KINDS:
        hits = own[own["kind"] == kind]
        if not hits.empty:
            return int(hits["patient"].iloc[0])
    return int(own["patient"].iloc[0]) if not own.empty else None


def describe(population: simulator.Population, patient: int) -> str:
    """A one-line introduction of the patient, then the timeline."""
    person = population.patients[population.patients["index"] == patient].iloc[0]
    born = person["birth_time"].strftime("%Y-%m-%d")
    header = (
        f"{person['given_name']} {person['family_name']} ({person['sex']}, born {born}), "
        f"{person['address']}, {person['city']} {person['state']}; patient id {person['id']}"
    )
    with pd.option_context("display.max_rows", 300, "display.width", 160, "display.max_colwidth", 60):
        return header + "\n" + timeline(population.events, patient).to_string(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--module", default="type2_diabetes")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args()

    names = [m.name for m in simulator.load_library().modules]
    if args.list or args.module not in names:
        if not args.list:
            print(f"no module named {args.module!r}; choose one of:")
        print("\n".join(names))
        raise SystemExit(0 if args.list else 2)
    population = simulator.generate(patients=args.patients, seed=args.seed)
    patient = case_for_module(population.events, args.module)
    if patient is None:
        raise SystemExit(f"nobody among {args.patients} patients has an event of {args.module}; try more patients")
    print(describe(population, patient))


if __name__ == "__main__":
    main()
