#!/usr/bin/env bash
# Builds the images kvtrace ships, and the local stack's Jaeger image, with docker or podman
# (tools/images/engine.sh). `make images` runs it; every name comes from its environment:
#   CONTAINER_ENGINE  the engine (default: what engine.sh finds)
#   OPERATOR_IMAGE KVNODE_IMAGE COLLECTOR_IMAGE  the tags (Makefile: render/images.py)
#   PYTHON_AGENT_IMAGE JAVA_AGENT_IMAGE  the language agents' tags (render/images.py); the
#                       Java agent's context is the tool cache's java-agent directory
#                       (`kvtrace dev tools java-agent`: Maven Central via mvn)
#   JAEGER_LOCAL_IMAGE  the local Jaeger image, from the cached jaeger binary (and the cached
#                       jaeger-ui assets when the tool cache has them); empty: not built
#   PROMETHEUS_LOCAL_IMAGE  the local Prometheus image, from the cached prometheus and
#                       promtool binaries; empty: not built
#   IMAGE_REVISION    the revision label;  IMAGES  which to build (default: all seven)
# Bases: the Dockerfiles' upstream bases (ARG PYTHON_IMAGE / GOLANG_IMAGE) when the engine
# can pull them, else local Debian bases made once by tools/images/base.sh.
# Podman only (docker build has no -v): builds run on the host network with the host's pip
# configuration and CA bundle mounted read-only (a pip or Go proxy that needs them works in
# the build as on the host), and the collector's Go build reuses the host's Go module and
# build caches (the tool cache's collector build fills them; -trimpath keeps them valid).
# Prints each image's size against its budget (tools/images/budgets.txt) and the build time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
log() { echo "[images] $*" >&2; }
engine=${CONTAINER_ENGINE:-}
[[ -n $engine ]] || engine=$("$here/engine.sh")
: "${OPERATOR_IMAGE:?}" "${KVNODE_IMAGE:?}" "${COLLECTOR_IMAGE:?}"
: "${PYTHON_AGENT_IMAGE:?}" "${JAVA_AGENT_IMAGE:?}"
revision=${IMAGE_REVISION:-unknown}
wanted=${IMAGES:-operator kvnode collector python-agent java-agent jaeger prometheus}
started=$SECONDS
podman=false
[[ $(basename "$engine") == podman* ]] && podman=true

build_flags=()
if $podman; then
  # Explicit limits (kvtrace.devstack.containers.ulimits: podman's defaults can exceed the host's).
  nproc=$(ulimit -Hu); [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  build_flags+=(--network host --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
  for file in /etc/pip.conf /etc/xdg/pip/pip.conf "${PIP_CONFIG_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [[ -n $file && -f $file ]] && build_flags+=(-v "$file:$file:ro")
  done
fi

# The reference to build FROM for a Dockerfile's base ARG: upstream when pullable, else local.
# Sets base[ARG] once per run (called directly, never in a subshell, so the choice is kept).
declare -A base=()
choose_base() {  # ARG_NAME KIND DOCKERFILE
  local arg=$1 kind=$2 dockerfile=$3 default qualified
  [[ -z ${base[$arg]:-} ]] || return 0
  default=$(sed -n "s/^ARG $arg=//p" "$dockerfile" | head -1)
  qualified=$default
  [[ $default == */* && ${default%%/*} == *[.:]* ]] || qualified=docker.io/library/$default
  if "$engine" image inspect "$qualified" >/dev/null 2>&1 \
     || timeout 120 "$engine" pull -q "$qualified" >/dev/null 2>&1; then
    base[$arg]=$qualified
  else
    log "cannot pull $qualified: using a local Debian base"
    base[$arg]=$("$here/base.sh" "$engine" "$kind")
  fi
  log "$arg=${base[$arg]}"
}

build() {  # TAG DOCKERFILE CONTEXT [extra build flags...]
  local tag=$1 dockerfile=$2 context=$3 t0=$SECONDS
  shift 3
  log "building $tag ($dockerfile)"
  local ignore=()
  # BuildKit reads <Dockerfile>.dockerignore by itself; podman 4 is told.
  if $podman && [[ -f $dockerfile.dockerignore ]]; then ignore=(--ignorefile "$dockerfile.dockerignore"); fi
  "$engine" build -q "${build_flags[@]}" "${ignore[@]}" "$@" -f "$dockerfile" -t "$tag" \
    --build-arg "VERSION=${tag##*:}" --build-arg "REVISION=$revision" "$context" >/dev/null
  log "built $tag in $((SECONDS - t0))s"
}

# The local Jaeger image's context: the cached binary, the CA bundle, and the cached
# jaeger-ui assets (served from /usr/share/jaeger-ui) when the tool cache has them: the
# image's first --config (/etc/jaeger-local/ui.yaml) then sets jaeger_query's ui.assets_path,
# and the pod's own --config merges over it.
jaeger_context() {  # DIR
  local dir=$1 python=${PYTHON:-.venv/bin/python} ui
  mkdir -p "$dir/rootfs/tmp" "$dir/rootfs/etc/ssl/certs" "$dir/rootfs/usr/share/jaeger-ui"
  chmod 1777 "$dir/rootfs/tmp"
  cp "$("$python" -c 'from kvtrace.devstack.tools import binary; print(binary("jaeger"))')" "$dir/rootfs/jaeger"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/rootfs/etc/ssl/certs/"
  ui=$("$python" -c 'from kvtrace.devstack import tools
t = tools.TOOLS.get("jaeger-ui")
print(t.directory if t and tools.verify(t) is None else "")')
  mkdir -p "$dir/rootfs/etc/jaeger-local"
  if [[ -n $ui ]]; then
    cp -a "$ui/." "$dir/rootfs/usr/share/jaeger-ui/"
    printf 'extensions:\n  jaeger_query:\n    ui:\n      assets_path: /usr/share/jaeger-ui\n' \
      >"$dir/rootfs/etc/jaeger-local/ui.yaml"
  else
    echo '{}' >"$dir/rootfs/etc/jaeger-local/ui.yaml"
  fi
  echo "jaeger:x:10001:10001:jaeger:/tmp:/sbin/nologin" >"$dir/rootfs/etc/passwd"
  echo "jaeger:x:10001:" >"$dir/rootfs/etc/group"
}

# The local Prometheus image's context: the cached prometheus and promtool binaries, the CA
# bundle, /tmp, /prometheus (writable by any user, as the upstream image's is by nobody), a
# default configuration, passwd and group.
prometheus_context() {  # DIR
  local dir=$1 python=${PYTHON:-.venv/bin/python} name
  mkdir -p "$dir/rootfs/bin" "$dir/rootfs/tmp" "$dir/rootfs/prometheus" \
    "$dir/rootfs/etc/ssl/certs" "$dir/rootfs/etc/prometheus"
  chmod 1777 "$dir/rootfs/tmp"
  chmod 0777 "$dir/rootfs/prometheus"
  for name in prometheus promtool; do
    cp "$("$python" -c "from kvtrace.devstack.tools import binary; print(binary('$name'))")" \
      "$dir/rootfs/bin/$name"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$dir/rootfs/etc/ssl/certs/"
  printf 'global:\n  scrape_interval: 15s\nscrape_configs:\n- job_name: prometheus\n  static_configs:\n  - targets: [localhost:9090]\n' \
    >"$dir/rootfs/etc/prometheus/prometheus.yml"
  echo "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin" >"$dir/rootfs/etc/passwd"
  echo "nobody:x:65534:" >"$dir/rootfs/etc/group"
}

# Each built image's size against its budget (tools/images/budgets.txt), OVER BUDGET flagged
# (the containers tier's budget test is what fails on it).
sizes() {
  local name budget tag bytes mb over=0
  printf '%-12s %-52s %8s %8s\n' IMAGE TAG MB BUDGET >&2
  while read -r name budget; do
    case $name in operator) tag=$OPERATOR_IMAGE ;; kvnode) tag=$KVNODE_IMAGE ;;
                  collector) tag=$COLLECTOR_IMAGE ;; python-agent) tag=$PYTHON_AGENT_IMAGE ;;
                  java-agent) tag=$JAVA_AGENT_IMAGE ;; *) continue ;; esac
    bytes=$("$engine" image inspect --format '{{.Size}}' "$tag" 2>/dev/null) || continue
    mb=$((bytes / 1000000))
    printf '%-12s %-52s %8s %8s%s\n' "$name" "$tag" "$mb" "$budget" \
      "$( ((mb > budget)) && echo '  OVER BUDGET')" >&2
    ((mb <= budget)) || over=1
  done < <(sed -e 's/#.*//' "$here/budgets.txt" | grep -v '^[[:space:]]*$')
  ((over == 0)) || log "some image is over its budget (tools/images/budgets.txt)"
}

# Staged build contexts (the local images'), removed on exit.
contexts=()
trap 'rm -rf ${contexts[@]+"${contexts[@]}"}' EXIT
# A local stack's image of cached tool binaries, its context staged by STAGE; not built when
# TAG is empty (`make images IMAGE_REGISTRY=...`) or the tool cache lacks TOOL (make tools).
build_local() {  # TAG TOOL DOCKERFILE STAGE
  local tag=$1 tool=$2 dockerfile=$3 stage=$4 context
  [[ -n $tag ]] || return 0
  if ! "${PYTHON:-.venv/bin/python}" -c "from kvtrace.devstack.tools import binary; binary('$tool')" 2>/dev/null; then
    log "not building $tag: $tool is not in the tool cache (make tools)"
    return 0
  fi
  context=$(mktemp -d)
  contexts+=("$context")
  "$stage" "$context"
  build "$tag" "$dockerfile" "$context"
}
for name in $wanted; do
  case $name in
    operator)
      choose_base PYTHON_IMAGE python operator/Dockerfile
      build "$OPERATOR_IMAGE" operator/Dockerfile . --build-arg "PYTHON_IMAGE=${base[PYTHON_IMAGE]}" ;;
    kvnode)
      choose_base PYTHON_IMAGE python kvnode/Dockerfile
      build "$KVNODE_IMAGE" kvnode/Dockerfile . --build-arg "PYTHON_IMAGE=${base[PYTHON_IMAGE]}" ;;
    collector)
      go_flags=()
      if $podman && command -v go >/dev/null; then
        mkdir -p "$(go env GOMODCACHE)" "$(go env GOCACHE)"
        go_flags=(-v "$(go env GOMODCACHE):/go/pkg/mod" -v "$(go env GOCACHE):/root/.cache/go-build")
      fi
      choose_base PYTHON_IMAGE python tools/otelcol/Dockerfile
      choose_base GOLANG_IMAGE golang tools/otelcol/Dockerfile
      build "$COLLECTOR_IMAGE" tools/otelcol/Dockerfile . "${go_flags[@]}" \
        --build-arg "PYTHON_IMAGE=${base[PYTHON_IMAGE]}" --build-arg "GOLANG_IMAGE=${base[GOLANG_IMAGE]}" ;;
    python-agent)
      choose_base PYTHON_IMAGE python instrumentation/python/Dockerfile
      build "$PYTHON_AGENT_IMAGE" instrumentation/python/Dockerfile . \
        --build-arg "PYTHON_IMAGE=${base[PYTHON_IMAGE]}" ;;
    java-agent)
      # The cached agent jar, fetched first when the cache lacks it (its last line: the directory).
      agent=$("${PYTHON:-.venv/bin/python}" -c 'from kvtrace.devstack import tools
print(tools.ensure(tools.TOOLS["java-agent"]))' | tail -1)
      choose_base PYTHON_IMAGE python instrumentation/java/Dockerfile
      build "$JAVA_AGENT_IMAGE" instrumentation/java/Dockerfile "$agent" \
        --build-arg "PYTHON_IMAGE=${base[PYTHON_IMAGE]}" ;;
    jaeger) build_local "${JAEGER_LOCAL_IMAGE:-}" jaeger tools/jaeger/Dockerfile jaeger_context ;;
    prometheus)
      build_local "${PROMETHEUS_LOCAL_IMAGE:-}" prometheus tools/prometheus/Dockerfile prometheus_context ;;
    *) log "unknown image '$name' in IMAGES (expected operator, kvnode, collector, python-agent, java-agent, jaeger, prometheus)"; exit 2 ;;
  esac
done
log "done in $((SECONDS - started))s"
sizes
