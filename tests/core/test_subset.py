"""Patient-level training fractions: whole patients, seeded, nested, at least one patient."""

from __future__ import annotations

import pandas as pd
import pytest

from echoseg.core.data.subset import patient_fraction, subset_record
from echoseg.core.errors import UserError


def _frame(patients: int = 20, rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"patient": [f"p{p:02d}" for p in range(patients) for _ in range(rows)],
                         "image": [f"img{i}" for i in range(patients * rows)]})


def test_fraction_keeps_whole_patients_is_seeded_and_nested():
    df = _frame()
    small, large = patient_fraction(df, 0.1, seed=3), patient_fraction(df, 0.5, seed=3)
    assert small["patient"].nunique() == 2 and len(small) == 6 and large["patient"].nunique() == 10
    assert set(small["patient"]) <= set(large["patient"])
    assert small.equals(patient_fraction(df, 0.1, seed=3))
    assert patient_fraction(df, 0.001, seed=0)["patient"].nunique() == 1
    assert patient_fraction(df, 1.0) is df
    rec = subset_record(df, small, 0.1, 3)
    assert rec == {"fraction": 0.1, "seed": 3, "patients": 2, "of_patients": 20, "rows": 6, "of_rows": 60}


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_fraction_out_of_range(bad):
    with pytest.raises(UserError, match="--train-fraction must be in"):
        patient_fraction(_frame(), bad)
