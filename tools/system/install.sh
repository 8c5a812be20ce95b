#!/usr/bin/env bash
# Installs the Debian packages listed in tools/system/packages.txt that are missing.
# Idempotent and quiet when everything is there; needs root (CI and the dev machines run as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$' || true)
[[ ${#wanted[@]} -eq 0 ]] && exit 0
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && { echo "[system] all ${#wanted[@]} Debian packages present"; exit 0; }
if [[ $(id -u) -ne 0 ]]; then
  echo "[system] missing Debian packages: ${missing[*]} (run 'sudo $0' or install them yourself)" >&2
  exit 1
fi
echo "[system] installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
