"""The hidden attributes of a scenario's patients over time (truth/attributes): the latent values modules set
(blood-pressure excess, GFR, HbA1c, severity) that the record shows only through observations.

The kernel keeps attributes in its scratch and records no event when one is set, so the kept histories are
lived again by the reference twin (simulator/engine/reference.py), which follows the kernel draw for draw
(tests/test_reference.py), with each `set` logged. The replay's events are checked against the kernel's,
so the table is the attributes of the very histories the record was made from. The replay is slow (about
0.5 s a patient of 60 on the busy 2-core development machine, 2026-12-07): a scenario asks for it with
`hidden_attributes: true`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.days import to_datetime
from simulator.engine.reference import Conditioning, PatientRun, Person, Track
from simulator.engine.reference import simulate as reference_simulate
from simulator.model.library import Library
from simulator.model.schema import State

COLUMNS = ("patient", "time", "module", "state", "attribute", "value", "per_year")


class _Logged(PatientRun):
    """A reference run that logs each attribute's initial value at birth and every value a state sets."""

    def __init__(
        self,
        library: Library,
        seed: int,
        person: Person,
        conditioning: Conditioning | None = None,
        windows: list[tuple[float, float]] | None = None,
    ) -> None:
        super().__init__(library, seed, person, conditioning, windows)
        declared = {n: m.name for m in library.modules for n in m.attributes}
        self.settings = [(person.birth_t, declared[n], "", n, a.level, 0.0) for n, a in self.attributes.items()]

    def run_actions(self, track: Track, name: str, state: State, t: float) -> None:
        super().run_actions(track, name, state, t)
        for setter in state.set:
            attribute = self.attributes[setter.attribute]
            self.settings.append(
                (t, track.module.name, name, setter.attribute, attribute.at(t), attribute.slope_per_year)
            )


def attribute_table(
    library: Library,
    seed: int,
    people: object,
    stream: np.ndarray,
    t_end: np.ndarray,
    conditioning: Conditioning,
    windows: np.ndarray | None,
    kernel_times: list[np.ndarray],
) -> pd.DataFrame:
    """truth/attributes of patients `people` (index: the patient numbers) who lived event streams `stream`:
    one row per value set (patient, time, module and state that set it, attribute, value, per_year: the
    drift from then on, in units a year), the initial values at birth first (state empty). `kernel_times`:
    each patient's event times as the kernel made them (RuntimeError if the replay differs)."""
    runs: list[_Logged] = []

    def logged(*args: object) -> _Logged:
        runs.append(_Logged(*args))  # type: ignore[arg-type]
        return runs[-1]

    replayed = people._replace(index=stream)  # type: ignore[attr-defined]
    events = reference_simulate(library, seed, replayed, t_end, logged, conditioning, windows)  # type: ignore[arg-type]
    logs: list[pd.DataFrame] = []
    for k, (run, times) in enumerate(zip(runs, kernel_times, strict=True)):
        mine = np.sort(events.loc[events["patient"] == stream[k], "t"].to_numpy())
        if len(mine) != len(times) or not np.allclose(mine, np.sort(times), rtol=0.0, atol=1e-6):
            raise RuntimeError(f"patient {people.index[k]}: the reference replay differs from the kernel's history")  # type: ignore[attr-defined]
        frame = pd.DataFrame(run.settings, columns=list(COLUMNS[1:]))
        logs.append(frame.assign(patient=int(people.index[k]))[list(COLUMNS)])  # type: ignore[attr-defined]
    if not logs:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, DTYPES, strict=True)})
    table = pd.concat(logs, ignore_index=True)
    table["time"] = to_datetime(table["time"].to_numpy(float))
    return table


DTYPES = ("int64", "datetime64[ms, UTC]", "object", "object", "object", "float64", "float64")
