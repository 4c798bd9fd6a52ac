"""`python -m riverbed` and the `riverbed` command: a Ctrl-C while the command line's imports
load (a second or so) ends with one line and 130, as it does once a command runs."""

import sys


def main() -> None:
    try:
        from riverbed.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
