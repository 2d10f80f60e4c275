"""Interval statistics of a run: a running mean and variance, and a 95 % confidence
interval from Student's t.  Bounded state (count, mean, M2, min, max), so a run of
any length fits in the status and survives an operator restart.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(degrees_of_freedom: int) -> float:
    """t(0.975, df): the table up to 30, then the Cornish-Fisher expansion (error < 1e-3)."""
    if degrees_of_freedom < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if degrees_of_freedom <= len(_T975):
        return _T975[degrees_of_freedom - 1]
    z, v = _Z975, float(degrees_of_freedom)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


class SampleStats(BaseModel):
    """Running statistics of one figure over a run's intervals (Welford's algorithm)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    count: int = Field(0, ge=0)
    mean: float = 0.0
    m2: float = Field(0.0, ge=0)
    min: float = 0.0
    max: float = 0.0

    def add(self, value: float) -> SampleStats:
        count = self.count + 1
        delta = value - self.mean
        mean = self.mean + delta / count
        m2 = self.m2 + delta * (value - mean)
        return SampleStats(
            count=count,
            mean=mean,
            m2=max(0.0, m2),
            min=value if self.count == 0 else min(self.min, value),
            max=value if self.count == 0 else max(self.max, value),
        )

    @property
    def stdev(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    @property
    def ci95(self) -> float:
        """Half-width of the 95 % confidence interval of the mean; 0 below two samples."""
        if self.count < 2:
            return 0.0
        return t_quantile_975(self.count - 1) * self.stdev / math.sqrt(self.count)
