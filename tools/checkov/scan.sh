#!/usr/bin/env bash
# `make scan`: Checkov (tools/checkov/config.yaml) over `helm template` of the chart and
# `kvtrace render -n kv-demo` of examples 01-03. Checkov runs from its own virtualenv in the
# tool cache (tools/checkov/requirements.txt), created on first use and reused after.
# Environment: HELM (default: the cached helm v4), KVTRACE (default: .venv/bin/kvtrace),
# PYTHON (for the virtualenv, default python3), KVTRACE_TOOLS_DIR (default ~/.cache/kvtrace/tools).
set -euo pipefail
# Offline: no Prisma Cloud guidelines download, no update check (only the registries are reachable).
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
start=$(date +%s)
version="$(sed -n 's/^checkov==//p' "$here/requirements.txt")"
venv="${KVTRACE_TOOLS_DIR:-$HOME/.cache/kvtrace/tools}/checkov-$version"
kvtrace="${KVTRACE:-$repo/.venv/bin/kvtrace}"
helm="${HELM:-}"
if [ -z "$helm" ]; then
  helm="$("$repo/.venv/bin/python" -c 'from kvtrace.devstack.tools import binary; print(binary("helm"))')" || {
    echo "scan: helm v4 is not built: run 'kvtrace dev tools' (or pass HELM=...)" >&2; exit 1; }
fi
if [ ! -x "$venv/bin/checkov" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  echo "[scan] installing checkov $version into $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
  echo "[scan] installed in $(( $(date +%s) - start ))s"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$helm" template kvtrace-operator charts/kvtrace-operator --namespace kvtrace-system \
  --kube-version 1.37.2 > "$work/chart.yaml"
for example in examples/01-* examples/02-* examples/03-*; do
  "$kvtrace" render -n kv-demo -f "$example" > "$work/$(basename "$example").yaml"
done
scanned=$(date +%s)
status=0
"$venv/bin/checkov" --config-file "$here/config.yaml" -d "$work" || status=$?
echo "[scan] checkov $version over the chart and examples 01-03: $(( $(date +%s) - scanned ))s" \
  "(whole scan $(( $(date +%s) - start ))s), exit status $status"
exit "$status"
