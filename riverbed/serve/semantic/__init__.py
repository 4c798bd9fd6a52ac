"""The semantic layer: the dashboards' measures and dimensions, defined once (measures.py),
the charts built from them (charts.py and one module per page), and the pipeline's health as
the state store records it (health.py).

Every number a page, the JSON API or an export shows comes from ``chart_data``, which runs
generated SQL through the governance gateway as the reader (riverbed.serve.queries.query_as):
row filters, masks, default deny and the audit trail apply to every chart. The measures count
the source's current truth: they read the facts' current-state views (one row per live source
key, latest values), date events by business time, and take dimension attributes as they are
now (``is_current_record``).
"""

from riverbed.serve.semantic.chart import ChartData, ChartError
from riverbed.serve.semantic.charts import CHARTS, chart_data
from riverbed.serve.semantic.filters import FilterError, Filters

__all__ = ["CHARTS", "ChartData", "ChartError", "FilterError", "Filters", "chart_data"]
