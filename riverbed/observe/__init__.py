"""Observing the pipeline: metrics, status, logs and alarms.

``metrics`` (named numbers the state store keeps: ``store.metrics``), ``prometheus`` (their /metrics exposition),
``alarms`` (CloudWatch-style alarms over them), ``notify`` (log, webhook and command notifiers),
``logs`` (JSON lines for machines, one line on stderr for people), ``status`` (what
`riverbed status` reports).
"""
