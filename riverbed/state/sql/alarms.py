"""Each alarm's current state and its history of state changes (riverbed.observe.alarms
decides them; this keeps them)."""

from __future__ import annotations

from riverbed.state.records import AlarmStatus, AlarmTransition
from riverbed.state.sql.database import Database

SCHEMA = """
create table if not exists alarm_state (
  alarm   text primary key,
  state   text not null,
  since   real not null,
  reason  text not null,
  value   real
);
create table if not exists alarm_history (
  alarm      text not null,
  ts         real not null,
  old_state  text not null,
  new_state  text not null,
  reason     text not null,
  value      real
);
create index if not exists alarm_history_by_alarm on alarm_history (alarm, ts);
"""


class SQLAlarmState:
    def __init__(self, db: Database):
        self._db = db

    def states(self) -> list[AlarmStatus]:
        """Every evaluated alarm's state, by name."""
        rows = self._db.rows(
            "select alarm, state, since, reason, value from alarm_state order by alarm"
        )
        return [
            AlarmStatus(alarm=r[0], state=r[1], since=r[2], reason=r[3], value=r[4]) for r in rows
        ]

    def save(self, status: AlarmStatus) -> None:
        """The alarm's state after an evaluation at ``status.since``: the reason and value
        refresh every time, ``since`` moves only when the state changes."""
        with self._db.write() as db:
            db.execute(
                "insert into alarm_state (alarm, state, since, reason, value)"
                " values (?, ?, ?, ?, ?) on conflict (alarm) do update"
                " set state = excluded.state, reason = excluded.reason, value = excluded.value,"
                " since = case when alarm_state.state = excluded.state then alarm_state.since"
                " else excluded.since end",
                (status.alarm, status.state, status.since, status.reason, status.value),
            )

    def add_transition(self, transition: AlarmTransition) -> None:
        t = transition
        with self._db.write() as db:
            db.execute(
                "insert into alarm_history (alarm, ts, old_state, new_state, reason, value)"
                " values (?, ?, ?, ?, ?, ?)",
                (t.alarm, t.ts, t.old_state, t.new_state, t.reason, t.value),
            )

    def history(self, alarm: str | None = None, limit: int = 50) -> list[AlarmTransition]:
        """State changes, newest first; of one alarm when ``alarm`` is given."""
        where, params = ("where alarm = ?", (alarm,)) if alarm is not None else ("", ())
        rows = self._db.rows(
            "select alarm, ts, old_state, new_state, reason, value from alarm_history"
            f" {where} order by ts desc, rowid desc limit ?",
            (*params, limit),
        )
        return [
            AlarmTransition(
                alarm=r[0], ts=r[1], old_state=r[2], new_state=r[3], reason=r[4], value=r[5]
            )
            for r in rows
        ]
