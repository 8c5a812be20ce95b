#!/usr/bin/env bash
# Usage: base.sh ENGINE python|golang
# Prints the reference of a local Debian base image for the Dockerfiles' PYTHON_IMAGE or
# GOLANG_IMAGE, making it first when the engine does not have it (or has one made by an
# older recipe). For machines that cannot pull the upstream bases (python:*-slim-bookworm,
# golang:*-bookworm): the bases are made from Debian packages only.
#   python: debootstrap --variant=minbase bookworm + python3, python3-venv, python-is-python3,
#           ca-certificates (Debian's Python 3.11, like the upstream base's minor version)
#   golang: the python base's root filesystem (made first when missing: one debootstrap for
#           both) + the Go toolchain the collector Dockerfile pins (GOLANG_IMAGE
#           golang:X.Y.Z-bookworm): the host's GOROOT when it is that version, else that
#           toolchain fetched by `go` itself (GOTOOLCHAIN=goX.Y.Z).
# Needs root (debootstrap). The root filesystem is made once per run and discarded.
set -euo pipefail
engine=${1:?usage: base.sh ENGINE python|golang}
kind=${2:?usage: base.sh ENGINE python|golang}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# Bump when what the bases contain changes: an image made by another recipe is made again.
recipe=2
go_version=$(sed -n 's/^ARG GOLANG_IMAGE=golang:\([0-9.]*\)-.*/\1/p' "$repo/tools/otelcol/Dockerfile")

case $kind in
  python) ref="localhost/kvtrace-base/python:3.11-$suite" ;;
  golang) ref="localhost/kvtrace-base/golang:$go_version-$suite" ;;
  *) echo "base.sh: KIND must be python or golang, got '$kind'" >&2; exit 2 ;;
esac

current=$("$engine" image inspect --format '{{ index .Config.Labels "dev.kvtrace.base.recipe" }}' "$ref" \
  2>/dev/null || true)
if [[ $current == "$recipe" ]]; then
  echo "$ref"
  exit 0
fi

log() { echo "[images] $*" >&2; }

# What a slim image leaves out (package lists, caches, docs, man pages, locales), and what these
# bases never run: they build with pip and go and are never extended with apt, so apt and
# perl-base go (their files as dpkg lists them), and glibc's iconv modules (Python has its own
# codecs). Keeps the KV node image within its budget.
slim() {  # ROOTFS
  local root=$1 pkg file
  for pkg in apt perl-base; do
    while read -r file; do  # files only: never a directory, nor /lib -> usr/lib and the like
      if [[ ! -d $root$file ]] && [[ -f $root$file || -L $root$file ]]; then rm -f "$root$file"; fi
    done <"$root/var/lib/dpkg/info/$pkg.list"
  done
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/apt/* \
    "$root"/usr/lib/x86_64-linux-gnu/gconv
}
[[ $(id -u) -eq 0 ]] || { log "making $ref needs root (debootstrap)"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap is missing: make system-deps"; exit 1; }
started=$SECONDS
work=$(mktemp -d /var/tmp/kvtrace-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
if [[ $kind == golang ]]; then
  # The python base's files (the same debootstrap, slimmed), not a second debootstrap.
  python_ref=$(bash "$here/base.sh" "$engine" python)
  log "making $ref from $python_ref"
  mkdir -p "$rootfs"
  container=$("$engine" create "$python_ref")
  "$engine" export "$container" | tar -C "$rootfs" -x
  "$engine" rm "$container" >/dev/null
else
  log "making $ref: debootstrap --variant=minbase $suite (python3, python3-venv, ca-certificates)"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  slim "$rootfs"
fi
changes=(--change 'CMD ["/bin/bash"]' --change "LABEL dev.kvtrace.base.recipe=$recipe")
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [[ $kind == golang ]]; then
  goroot=""
  if command -v go >/dev/null && [[ $(go env GOVERSION) == "go$go_version" ]]; then
    goroot=$(go env GOROOT)
  elif command -v go >/dev/null; then
    goroot=$(GOTOOLCHAIN="go$go_version" go env GOROOT)
  fi
  [[ -n $goroot && -x $goroot/bin/go ]] || { log "no Go $go_version toolchain found for $ref"; exit 1; }
  log "adding Go $go_version from $goroot"
  cp -a "$goroot" "$rootfs/usr/local/go"
  rm -rf "$rootfs/usr/local/go/pkg/obj" "$rootfs/usr/local/go/test"
  path=/go/bin:/usr/local/go/bin:$path
  changes+=(--change "ENV GOPATH=/go" --change "ENV GOTOOLCHAIN=local")
fi
changes+=(--change "ENV PATH=$path")
tar -C "$rootfs" -c . | "$engine" import "${changes[@]}" - "$ref" >/dev/null
log "made $ref in $((SECONDS - started))s"
echo "$ref"
