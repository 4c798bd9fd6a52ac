"""Orchestration: the state machine that runs the stages, retries, schedules and notifies.

``machine`` (the default state machine and what its states mean), ``executor`` (Step Functions
semantics), ``tasks`` (the resources its Task states run), ``runner`` (`riverbed run`: one run, a
redrive, or a schedule), ``history`` (run ids, the run history through the state store's ``runs``, and the run lock), ``schedule`` (every N
seconds or cron). The one stage that imports the others.
"""
