#!/usr/bin/env bash
# Usage: beside.sh COMMAND...
# The cold path of `make test`: runs COMMAND (the tool cache's build, CPU-bound Go compiles)
# while `make images` builds, beside it, the images that need nothing from the tool cache
# (EARLY_IMAGES, default the Python images operator, kvnode and python-agent, then the Go base
# from the Python base: debootstrap, package downloads and pip, mostly waiting on the network
# and the disk: debootstrap used 23% of a core, 40 s of CPU in 2 min 51 s). The later `make images` then finds them built (layer cache) and builds the rest from
# the tool cache (collector, Java agent, local Jaeger and Prometheus). Where no engine works,
# or with EARLY_IMAGES empty, it only runs COMMAND.
# The early build's output is printed after COMMAND's, prefixed, so the two never interleave;
# its failure is reported but not fatal (the later `make images` builds those images again and
# fails there). Exits with COMMAND's status.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
early=${EARLY_IMAGES-operator kvnode python-agent}
pid=""
# `make -n test` runs this script too (its recipe line names $(MAKE)): build nothing then.
make_flags=${MAKEFLAGS:-}
[[ $make_flags != -* && ${make_flags%% *} == *n* ]] && early=""
if [[ -n $early ]] && engine=$("$here/engine.sh" 2>/dev/null); then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  started=$SECONDS
  { make --no-print-directory -C "$here/../.." images CONTAINER_ENGINE="$engine" IMAGES="$early" \
      && "$here/base.sh" "$engine" golang; } >"$log" 2>&1 &
  pid=$!
fi
"$@"
status=$?
if [[ -n $pid ]]; then
  wait "$pid"
  early_status=$?
  sed 's/^/[images beside tools] /' "$log"
  if ((early_status == 0)); then
    echo "[images beside tools] $early and the Go base built in $((SECONDS - started))s, beside the tools"
  else
    echo "[images beside tools] FAILED ($early_status): \`make images\` builds them again next"
  fi
fi
exit "$status"
