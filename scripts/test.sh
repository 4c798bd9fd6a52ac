#!/usr/bin/env bash
# Install Riverbed with its test dependencies into .venv and run the whole test suite.
set -euo pipefail
RIVERBED_EXTRAS=test
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
