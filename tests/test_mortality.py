"""Background mortality net of module deaths: the share is applied as documented, and the fit
recovers a module's known death rate and keeps life expectancy that of the life tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.days import DAYS_PER_YEAR
from simulator.engine.codes import K_DEATH, K_DIAGNOSIS
from simulator.engine.people import background_hazard, background_share_by_age, cumulative_at, life_table_hazard
from simulator.engine.run import RunConfig, Simulator
from simulator.fit.mortality import fit_background_mortality, life_table_rates
from simulator.model.loading import load_library

KILLER = """
name: killer
title: A known extra death rate from age 70
sources: {assumed: "assumption: test fixture with a known rate"}
start: alive
states:
  alive:
    hazards:
      - to: dies
        rate_per_year: {ages: [70], male: [0.005], female: [0.005]}
        source: assumed
  dies:
    death: {cause: {system: SNOMED, code: "419620001", display: Death (event)}}
"""

MARKED = """
name: marked
title: Type 2 diabetes diagnosed at 50 for everyone (the background hazard ratio of rules/mortality.yaml)
sources: {assumed: "assumption: test fixture"}
conditions:
  t2d: {code: {system: SNOMED, code: "44054006", display: Diabetes mellitus type 2 (disorder)}}
start: young
states:
  young:
    after: {distribution: exact, value: 50, unit: years, source: assumed}
    next: diagnosed
  diagnosed:
    encounter:
      class: ambulatory
      code: {system: SNOMED, code: "390906007", display: Follow-up encounter (procedure)}
      duration: {distribution: exact, value: 20, unit: minutes, source: assumed}
    diagnose: [t2d]
    terminal: true
"""


def test_a_diagnosis_moves_the_background_death_by_its_hazard_ratio(tmp_path: Path) -> None:
    """After a diagnosis of a condition with a background hazard ratio r, the cumulative background hazard
    left before death is the one drawn at birth divided by r: the death comes sooner, and nothing is redrawn."""
    (tmp_path / "marked.yaml").write_text(MARKED)
    library = load_library(tmp_path)
    ratio = next(h.hazard_ratio for h in library.mortality.hazard_ratios if "t2d" in h.conditions)
    assert ratio > 1
    sim = Simulator.build(RunConfig(patients=2_000, seed=11, mode="lifetime"), library)
    run = sim.simulate(np.arange(2_000, dtype=np.int64))
    events = run.events
    diagnosed_at = dict(zip(run.patient[events.kind == K_DIAGNOSIS], events.t[events.kind == K_DIAGNOSIS], strict=True))
    died_at = dict(zip(run.patient[events.kind == K_DEATH], events.t[events.kind == K_DEATH], strict=True))
    cum_hazard, tail_rate = background_hazard(library)
    checked = 0
    for i, t_diagnosis in diagnosed_at.items():
        if i not in died_at:
            continue
        sex, birth = int(run.people.sex[i]), run.people.birth_t[i]
        hazard = [
            cumulative_at(cum_hazard[sex], tail_rate[sex], (t - birth) / DAYS_PER_YEAR)
            for t in (t_diagnosis, died_at[i], run.people.death_t[i])
        ]
        assert died_at[i] < run.people.death_t[i]
        assert ratio * (hazard[1] - hazard[0]) == pytest.approx(hazard[2] - hazard[0], rel=1e-6)
        checked += 1
    assert checked > 1_000


def test_share_scales_the_life_table_hazard_of_its_ages() -> None:
    shares = pd.DataFrame({"age": [0, 50], "male": [1.0, 0.5], "female": [1.0, 0.25]})
    share = background_share_by_age(shares, "female", 101)
    assert share[49] == 1.0 and share[50] == 0.25 and share[100] == 0.25
    qx = np.full(101, 0.01)
    full, tail_full = life_table_hazard(qx, 2.0)
    scaled, tail_scaled = life_table_hazard(qx, 2.0, share)
    assert np.allclose(np.diff(scaled)[:50], np.diff(full)[:50])
    assert np.allclose(np.diff(scaled)[50:], 0.25 * np.diff(full)[50:])
    assert tail_scaled == pytest.approx(0.25 * tail_full)


@pytest.mark.slow
def test_fit_recovers_a_known_module_death_rate(tmp_path: Path) -> None:
    (tmp_path / "killer.yaml").write_text(KILLER)
    library = load_library(tmp_path)
    fit = fit_background_mortality(library, patients=3_000, seed=3, passes=1)
    rates = life_table_rates(library)
    shares = fit.shares.set_index("age")
    assert (shares.loc[:65] == 1.0).all().all()  # no module deaths before 70
    for s, sex in enumerate(("male", "female")):
        expected = 1 - 0.005 / rates[s, 70:75].mean()
        assert shares.loc[70, sex] == pytest.approx(expected, abs=0.12)
    e0 = pd.read_csv(library.rules_dir / library.mortality.total_csv)["ex"].iloc[0]
    assert fit.before.life_expectancy["all"] < e0 - 0.3  # the extra deaths shorten life
    assert fit.after.life_expectancy["all"] == pytest.approx(e0, abs=0.8)


def test_fitted_share_applies_only_to_the_module_set_it_was_fitted_for(shipped_library) -> None:
    from conftest import NO_MODULES

    from simulator.engine.people import fitted_background_share

    shipped = shipped_library
    assert shipped.background_share is not None, "rules/life_tables/background_share.yaml is missing"
    assert sorted(shipped.background_share.modules) == sorted(m.name for m in shipped.modules)
    share = fitted_background_share(shipped)
    assert share is not None and (share[["male", "female"]] <= 1).all().all()
    assert fitted_background_share(load_library(NO_MODULES)) is None  # another module set: full life table
