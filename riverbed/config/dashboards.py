"""riverbed.yaml's optional ``dashboards:`` section: the choices the dashboards' measures leave
to the user (riverbed.serve.semantic reads them).

``seller_buckets`` puts each seller in a high, medium or low tier by one of its rates
(``return_rate``: returned items / items sold, the default; or ``refund_rate``). With
``method: thresholds`` (the default) ``high`` and ``medium`` are rates: a seller at or above
``high`` is high, at or above ``medium`` medium, else low. The defaults, 0.15 and 0.05, sit
between the demo shop's three seller tiers (returns of about 2%, 8% and 24% of items sold).
With ``method: quantiles`` they are quantiles of the sellers' rates in the period shown
(``high: 0.8``: the top fifth of sellers by that rate), so the tiers follow the data whatever
its level. ``spending_buckets`` are the upper edges of the spending distribution's buckets,
in the warehouse's currency, ascending (the last bucket is open: 1000 and more).
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from riverbed.config.fields import Model


class SellerBucketsConfig(Model):
    measure: Literal["return_rate", "refund_rate"] = "return_rate"
    method: Literal["thresholds", "quantiles"] = "thresholds"
    high: float = 0.15
    medium: float = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> SellerBucketsConfig:
        for name in ("high", "medium"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} = {value}: must be between 0 and 1 (a rate or quantile)")
        if self.medium > self.high:
            raise ValueError(
                f"medium ({self.medium}) must not be above high ({self.high}): "
                "a seller at or above high is high, at or above medium medium"
            )
        return self


class DashboardsConfig(Model):
    seller_buckets: SellerBucketsConfig = SellerBucketsConfig()
    spending_buckets: list[float] = [50, 100, 250, 500, 1000]

    @field_validator("spending_buckets")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one edge, e.g. [50, 100, 250]")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)) or value[0] <= 0:
            raise ValueError(f"{value}: edges must be positive and strictly ascending")
        return value
