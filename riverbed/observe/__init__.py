"""Observing the pipeline: metrics, status, logs and alarms."""
