"""The command notifier: run a shell command with the event as JSON on stdin.

The command gets RIVERBED_EVENT (the event kind) and, for alarms, RIVERBED_ALARM and
RIVERBED_STATE in its environment, so a one-line script need not parse JSON. It runs in its
own process group: on timeout the whole group is killed, or a child the shell started could
hold the pipes open and hang the notifier thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

from riverbed.config.alarms import NotifierConfig
from riverbed.observe.notify import NotifyError

TIMEOUT_SECONDS = 30.0


class CommandNotifier:
    """Runs ``config.command`` through the shell once per event."""

    def __init__(self, name: str, config: NotifierConfig, timeout: float = TIMEOUT_SECONDS):
        assert config.command is not None  # NotifierConfig requires it for type command
        self.name = name
        self.timeout = timeout
        self._command = config.command

    def notify(self, event: dict[str, Any]) -> None:
        """Run the command; raises NotifyError on a non-zero exit or a timeout. The message
        names the notifier, not the command line, which may embed a token."""
        env = dict(os.environ, RIVERBED_EVENT=str(event.get("kind", "")))
        for key, variable in (("alarm", "RIVERBED_ALARM"), ("state", "RIVERBED_STATE")):
            if event.get(key) is not None:
                env[variable] = str(event[key])
        payload = json.dumps(event, default=str).encode()
        try:
            process = subprocess.Popen(
                self._command,
                shell=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise NotifyError(
                f"command notifier {self.name}: cannot start the shell ({exc.strerror})"
            ) from None
        with process:
            try:
                _, stderr = process.communicate(payload, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.communicate()
                raise NotifyError(
                    f"command notifier {self.name}: still running after {self.timeout:g} s, "
                    f"killed (notifiers.{self.name}.command must finish sooner)"
                ) from None
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            said = f": {lines[0]}" if lines else ""
            raise NotifyError(
                f"command notifier {self.name} exited with status {process.returncode}{said}"
            )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if hasattr(os, "killpg"):
        try:
            os.killpg(process.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
    process.kill()  # no process groups (Windows): the shell at least
