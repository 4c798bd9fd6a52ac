#!/usr/bin/env bash
# Install Riverbed with its test dependencies into .venv and run the whole test suite.
set -euo pipefail
RIVERBED_EXTRAS=test
source "$(dirname "$0")/_venv.sh"
# Two workers, a test file each at a time (--dist loadfile: a file's session fixtures, such as
# its PostgreSQL server, stay in one worker): most tests wait on PostgreSQL, a subprocess or
# the disk, so two workers finish in about half the time on two cores.
# RIVERBED_TEST_WORKERS=0 runs them in this process.
workers=${RIVERBED_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
