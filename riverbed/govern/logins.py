"""The demo's logins: passwords (and tokens) that Riverbed makes itself, on first use, for the
principals whose secret is a file in the project's own ``.riverbed/logins`` folder.

The demo config gives ``admin`` and ``eu_analyst`` ``password: {file:
.riverbed/logins/<name>.password}``. A fresh project has no such file, and a login the web app
cannot read would stop `riverbed serve` (and the demo's closing lines could not tell anyone how
to log in). So ``ensure_logins`` writes each missing one: a random password of 80 bits as
four groups of four base32 characters (``k3vq-7xna-p2dm-w4hf``: easy to read aloud and type),
in a file 0600 in a folder 0700 (riverbed.private).

Only there: a ``{file:}`` secret anywhere else is the user's own (a mounted secret, a vault's
file) and a missing one stays an error that names it, never a password made up in its place.
An existing file is never touched, so a password chosen by hand stays. The command line calls
``ensure_logins`` when it opens a project, before logging starts, so the logs' redaction
(riverbed.observe.logs.redact) already knows the new values; the web app calls it too, for a
library user.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from riverbed.config import Project
from riverbed.config.fields import SecretRef
from riverbed.private import create_private, private_folders

LOGINS = "logins"  # under the project's .riverbed


def logins_folder(project: Project) -> Path:
    return project.home / LOGINS


def new_password() -> str:
    """80 random bits, as 'abcd-efgh-ijkl-mnop' (base32, lower case)."""
    text = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def _generated(project: Project, ref: SecretRef | None) -> Path | None:
    """``ref``'s file if it is one Riverbed makes (under the project's logins folder)."""
    if ref is None or ref.file is None:
        return None
    path = project.path(ref.file)
    folder = logins_folder(project).resolve()
    return path if path.parent == folder else None


def ensure_logins(project: Project) -> list[Path]:
    """Write each missing login file of the project's logins folder; the files written."""
    written = []
    for principal in project.config.governance.principals.values():
        for ref in (principal.password, principal.token):
            path = _generated(project, ref)
            if path is None or path.exists():
                continue
            private_folders(path.parent)
            try:
                descriptor = create_private(path)
            except FileExistsError:  # another command made it first: theirs stands
                continue
            with os.fdopen(descriptor, "w") as out:
                out.write(new_password() + "\n")
            written.append(path)
    return written


def demo_logins(project: Project) -> dict[str, str]:
    """Each principal with a generated password (in the logins folder) and that password,
    for the demo's closing lines; principals whose file cannot be read are left out."""
    found = {}
    for name, principal in project.config.governance.principals.items():
        if _generated(project, principal.password) is None:
            continue
        try:
            found[name] = principal.password.reveal() if principal.password else ""
        except ValueError:
            continue
    return {name: value for name, value in found.items() if value}
