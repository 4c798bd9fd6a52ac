#!/usr/bin/env bash
# Install Riverbed into .venv and run the end-to-end demo on the embedded defaults.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/riverbed demo "$@"
