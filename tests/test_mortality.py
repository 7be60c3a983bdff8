"""Background mortality net of module deaths: the share is applied as documented, and the fit
recovers a module's known death rate and keeps life expectancy that of the life tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.engine.people import background_share_by_age, life_table_hazard
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
