# Sourced by demo.sh and test.sh: make .venv with Python >= 3.11 and install Riverbed into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Riverbed needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
target="."
[ -n "${RIVERBED_EXTRAS:-}" ] && target=".[${RIVERBED_EXTRAS}]"
echo "installing Riverbed into .venv ..." >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
