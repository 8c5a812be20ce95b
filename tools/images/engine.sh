#!/usr/bin/env bash
# Prints the path of a container engine that works here: docker when its daemon answers,
# else podman. Exits 1, saying why on stderr, when neither does (a docker CLI without a
# daemon is not an engine). CONTAINER_ENGINE=/path/to/engine is checked instead when set.
# Used by `make images` (tools/images/build.sh) and the containers test tier.
set -uo pipefail
candidates=()
if [[ -n ${CONTAINER_ENGINE:-} ]]; then
  candidates=("$CONTAINER_ENGINE")
else
  candidates=(docker podman)
fi
why=()
for name in "${candidates[@]}"; do
  path=$(command -v "$name" 2>/dev/null) || { why+=("$name: not installed"); continue; }
  if out=$(timeout 60 "$path" info 2>&1 >/dev/null); then
    echo "$path"
    exit 0
  fi
  why+=("$path: '$(basename "$name") info' failed: $(echo "$out" | tail -1)")
done
printf 'no working container engine (docker or podman): %s\n' "$(IFS=';'; echo "${why[*]}")" >&2
exit 1
