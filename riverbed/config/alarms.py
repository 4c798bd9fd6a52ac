"""riverbed.yaml's ``notifiers:`` and ``alarms:`` sections: who is told (a log line, a webhook,
a command) and when (an alarm on a recorded metric, CloudWatch's shape: a statistic over
periods compared with a threshold). Which metrics exist and which notifiers an alarm or a failed
run may name is checked across sections by ``models.cross_reference_problems``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from riverbed.config.fields import Model, Secret


class NotifierConfig(Model):
    type: Literal["log", "webhook", "command"]
    url: str | None = None
    command: str | None = None
    headers: dict[str, Secret] = {}

    @model_validator(mode="after")
    def _target(self) -> NotifierConfig:
        if self.type == "webhook" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError("a webhook notifier needs url: http(s)://...")
        if self.type == "command" and not self.command:
            raise ValueError("a command notifier needs command: '...'")
        return self


class AlarmConfig(Model):
    metric: str
    statistic: Literal["average", "sum", "minimum", "maximum", "sample_count"] = "maximum"
    period_seconds: int = Field(60, gt=0)
    threshold: float
    comparison: Literal[">", ">=", "<", "<="] = ">"
    evaluation_periods: int = Field(1, ge=1)
    datapoints_to_alarm: int | None = Field(None, ge=1)
    treat_missing_data: Literal["missing", "ignore", "breaching", "not_breaching"] = "missing"
    notify: list[str] = []

    @model_validator(mode="after")
    def _datapoints(self) -> AlarmConfig:
        if (
            self.datapoints_to_alarm is not None
            and self.datapoints_to_alarm > self.evaluation_periods
        ):
            raise ValueError("datapoints_to_alarm cannot exceed evaluation_periods")
        return self
