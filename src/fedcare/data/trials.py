"""A real multi-site randomised trial for treatment effects: the International CGD Cooperative
Study Group's trial of gamma interferon in chronic granulomatous disease (N Engl J Med
1991;324:509-16), as the R package survival ships it (`cgd`, one row per patient) through SurvSet.

128 patients at 13 hospitals (`center`), randomised 1:1 to rIFN-g or placebo. The outcome is
`infection`: whether the patient had a serious infection during follow-up (the published figure:
14 of 63 on gamma interferon, 30 of 65 on placebo). The follow-up time is dropped: it is measured
after randomisation, so it is no covariate.
"""

from __future__ import annotations

import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.builtin import survset_frame

CGD_NEEDS = "the CGD trial needs the survset package: pip install 'fedcare[datasets]'"
CGD_SOURCE = ("SurvSet (Drysdale 2022), dataset cgd from the R package survival (Therneau), data of the "
              "International CGD Cooperative Study Group, N Engl J Med 1991;324:509-16")
CGD_PUBLISHED = {"rIFN-g": (14, 63), "placebo": (30, 65)}  # serious infections / patients per arm


def cgd_frame() -> pd.DataFrame:
    """The trial as a table: infection (0/1), center, treat, and the baseline covariates."""
    raw = survset_frame("cgd", CGD_NEEDS)
    frame = raw.rename(columns=lambda c: c.removeprefix("fac_").removeprefix("num_")).rename(
        columns={"event": "infection"})
    for column in ("infection", "center", "treat", "time"):
        if column not in frame.columns:
            raise DataError(f"survset's cgd lacks column '{column}'; this survset version is not supported")
    return frame.drop(columns=["pid", "time"])


def published_risk_difference() -> float:
    """rIFN-g against placebo, from the published counts."""
    (a, n), (b, m) = CGD_PUBLISHED["rIFN-g"], CGD_PUBLISHED["placebo"]
    return a / n - b / m
