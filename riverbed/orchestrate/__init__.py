"""Orchestration: the state machine that runs the stages, retries, schedules and notifies."""
