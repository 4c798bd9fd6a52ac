"""`riverbed keys rotate`: re-wrap the lake's data keys under new master key versions
(riverbed.govern.keys), without rewriting a lake file."""

from __future__ import annotations

import typer

from riverbed.cli.common import (
    ConfigOption,
    app,
    open_project,
    plural,
    say_wrapped,
    start_logging,
)

keys_app = typer.Typer(
    help="The lake's encryption keys (lake.encryption).",
    epilog="Example: `riverbed keys rotate`",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate", short_help="Re-wrap the lake's data keys under new master keys.")
def keys_rotate(config: ConfigOption = None) -> None:
    """Make a new version of every master key in the keyring (lake.encryption.keyring),
    re-wrap every key-encryption key the lake's files refer to under it, and drop the old
    versions. No lake file is rewritten; a kill leaves the old keyring or the new one, and a
    rerun rotates again. Audited (action rotate).

    Example: `riverbed keys rotate`
    """
    from riverbed.govern.keys import rotate_keys
    from riverbed.state import open_state

    project = open_project(config)
    start_logging(project, quiet=False)
    store = open_state(project)
    try:
        done = rotate_keys(project, store)
    finally:
        store.close()
    versions = ", ".join(f"{name} v{version}" for name, version in sorted(done.versions.items()))
    say_wrapped(
        f"rotated the master keys of {done.keyring} (now {versions}); "
        f"{plural(done.rewrapped, 'key-encryption key')} re-wrapped, no lake file rewritten",
        highlight=False,
    )
