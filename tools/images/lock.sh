#!/usr/bin/env bash
# Rewrites tools/images/constraints.txt: every Python distribution the images install
# (kvtrace[node] and kvtrace[operator]) pinned to the version pip resolves today, from a
# fresh virtualenv. The Dockerfiles install with `pip install -c constraints.txt`, so an
# image is rebuilt from the same versions until this is run again (the lean tracing path
# reads private attributes of one opentelemetry-sdk version: review the diff, run the tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "pip==26.3"
"$venv/bin/pip" install --quiet "$repo[node,operator]"
{
  echo "# Written by tools/images/lock.sh: the images' Python dependencies, pinned. Do not edit."
  "$venv/bin/pip" freeze --exclude kvtrace | LC_ALL=C sort -f
} >"$here/constraints.txt.tmp"
mv "$here/constraints.txt.tmp" "$here/constraints.txt"
echo "[images] $(grep -vc '^#' "$here/constraints.txt") pins in $here/constraints.txt"
