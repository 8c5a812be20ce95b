"""Build and cache the upstream programs of the local stack (docs/design.md section 5).

Every tool is built from its Go module once, into a cache directory keyed by name and
version (``~/.cache/kvtrace/tools/<name>-<version>/`` unless ``KVTRACE_TOOLS_DIR`` says
otherwise). A build that is present and intact is skipped; a missing or corrupt one
(its recorded SHA-256 no longer matches) is rebuilt rather than trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO_TOOLS = Path(__file__).resolve().parents[3] / "tools"

KUBERNETES_VERSION = "1.37.2"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"
OTELCOL_VERSION = "0.161.0"
JAEGER_VERSION = "1.76.0"
HELM_VERSION = "4.3.1"
# The Python agent of injected pods (instrumentation/python/requirements.txt pins its packages).
PYTHON_AGENT_VERSION = "0.66b1"
PYTHON_AGENT_REQUIREMENTS = REPO_TOOLS.parent / "instrumentation" / "python" / "requirements.txt"
# The Java agent of injected pods, from Maven Central (instrumentation/java/Dockerfile).
JAVA_AGENT_VERSION = "2.22.0"
JAVA_AGENT_ARTIFACT = f"io.opentelemetry.javaagent:opentelemetry-javaagent:{JAVA_AGENT_VERSION}"
# Prometheus publishes its Go module as v0.<major*100+minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_VERSION = "0.316.0"

STAMP = ".kvtrace-tool.json"

# Cold build times measured on an idle 2-core machine (docs/local-stack.md, "Measured build
# times"), printed as what to expect; a busy machine takes longer.
EXPECTED_SECONDS = {
    "kubernetes": 299,
    "etcd": 35,
    "etcdload": 60,  # 61 s of CPU cold (50 user + 11 system): at most that on 2 idle cores
    "kwok": 85,
    "ocb": 3,
    "otelcol": 263,
    "jaeger": 184,
    "helm": 170,
    "jaeger-ui": 75,
}
# Commands a tool's build runs besides Go (every build needs Go), by tool name.
EXTRA_PREREQUISITES: dict[str, tuple[str, ...]] = {"jaeger-ui": ("node", "npm")}
PREREQUISITE_NAMES = {"go": "Go 1.26", "make": "make", "node": "Node.js", "npm": "npm (Node.js)"}
MIN_GO = (1, 26)


class MissingPrerequisite(RuntimeError):
    """A program the builds need is not installed (one line naming it)."""


def prometheus_release(module_version: str = PROMETHEUS_VERSION) -> str:
    """The Prometheus release of its Go module version (v0.316.0 is 3.16.0)."""
    _, minor, patch = module_version.split(".")
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


def cache_root() -> Path:
    """The directory that holds one sub-directory per tool and version."""
    env = os.environ.get("KVTRACE_TOOLS_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvtrace" / "tools"


@dataclasses.dataclass(frozen=True)
class Tool:
    """One cached upstream program (or a group built together). ``release`` is its cache key
    (the version), or the function that computes it from the build's input files: called when
    the key is first asked for, never at import, so importing this module reads no file (the
    collector image's build imports it with only the collector's inputs at hand)."""

    name: str
    release: str | Callable[[], str]
    binaries: tuple[str, ...]
    build: Callable[[Path, Path], None]  # (output dir, scratch dir) -> None
    executable: bool = True  # False: ``binaries`` are data files (jaeger-ui's assets)

    @functools.cached_property
    def version(self) -> str:
        """The cache key: the release, plus a digest of the inputs for a repository's build."""
        return self.release() if callable(self.release) else self.release

    @property
    def directory(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    def path(self, binary: str | None = None) -> Path:
        return self.directory / (binary or self.binaries[0])


OTELCOL_MANIFEST = REPO_TOOLS / "otelcol" / "builder-config.yaml"


def _inputs_digest(directory: Path, inputs: Sequence[Path]) -> str:
    """A short digest of a build's input files (their paths under ``directory`` and bytes)."""
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def otelcol_build_id(directory: Path = OTELCOL_MANIFEST.parent) -> str:
    """The collector's cache key: its release plus a digest of the distribution's inputs
    (the ocb manifest, the committed go.sum, the stand-in modules), so a change to any of
    them builds a new binary instead of reusing a cached one without the new components."""
    inputs = [directory / "builder-config.yaml", directory / "go.sum"]
    inputs += sorted(p for p in (directory / "stubs").rglob("*") if p.is_file())
    return f"{OTELCOL_VERSION}-{_inputs_digest(directory, inputs)}"


# benchmarks/kv.py's Go load generator: etcd's gRPC path (etcd's own Go client, at ETCD_VERSION),
# etcd's JSON gateway and kvtrace's HTTP API (one small HTTP/1.1 client, standard library only).
ETCDLOAD_MODULE = REPO_TOOLS.parent / "benchmarks" / "etcdload"


def etcdload_build_id(directory: Path = ETCDLOAD_MODULE) -> str:
    """etcdload's cache key: the etcd client's version plus a digest of the module (go.mod,
    go.sum, its Go files), so an edit builds a new binary and an unchanged one is reused."""
    inputs = [directory / "go.mod", directory / "go.sum", *sorted(directory.glob("*.go"))]
    return f"{ETCD_VERSION}-{_inputs_digest(directory, inputs)}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(tool: Tool) -> str | None:
    """Return None when the cached build is intact, else why it is not."""
    stamp = tool.directory / STAMP
    if not stamp.is_file():
        return "not built"
    try:
        recorded = json.loads(stamp.read_text())["sha256"]
    except (ValueError, KeyError):
        return "stamp unreadable"
    for binary in tool.binaries:
        path = tool.path(binary)
        if not path.is_file() or (tool.executable and not os.access(path, os.X_OK)):
            return f"{binary} missing"
        if recorded.get(binary) != _sha256(path):
            return f"{binary} corrupt (checksum mismatch)"
    return None


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("CGO_ENABLED", "0")
    env.setdefault("GOFLAGS", "-mod=mod")
    return env


def _run(cmd: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    print(f"    $ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env or _go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def _build_wrapper(
    module_dir: str | Path, targets: dict[str, str], ldflags: str = ""
) -> Callable[[Path, Path], None]:
    """Build main packages from a committed module with its go.mod + go.sum (a directory of
    tools/, or an absolute path such as benchmarks/etcdload)."""

    def build(out: Path, scratch: Path) -> None:
        src = REPO_TOOLS / module_dir
        work = scratch / src.name
        shutil.copytree(src, work)  # never let the build touch the committed go.sum
        for binary, package in targets.items():
            cmd = ["go", "build", "-trimpath", "-o", str(out / binary)]
            if ldflags:
                cmd += ["-ldflags", ldflags]
            _run(cmd + [package], cwd=work)

    return build


def _go_install(
    targets: dict[str, str], ldflags: str = "", tags: str = ""
) -> Callable[[Path, Path], None]:
    """`go install PKG@VERSION` for modules that build without a wrapper."""

    def build(out: Path, scratch: Path) -> None:
        env = _go_env()
        env["GOBIN"] = str(out)
        for binary, package in targets.items():
            cmd = ["go", "install", "-trimpath"]
            if ldflags:
                cmd += ["-ldflags", ldflags]
            if tags:
                cmd += ["-tags", tags]
            _run(cmd + [package], cwd=scratch, env=env)
            built = out / package.split("@")[0].rsplit("/", 1)[-1]
            if built.name != binary:
                built.rename(out / binary)

    return build


_OCB_SECTIONS = (
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "providers",
    "converters",
)


def _build_python_agent(out: Path, scratch: Path) -> None:
    """The files the Python agent image holds (``/autoinstrumentation``), for the pod runner's
    init containers: ``pip install --target`` of the agent's pinned requirements."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(out / "autoinstrumentation"),
            "-r",
            str(PYTHON_AGENT_REQUIREMENTS),
        ],
        cwd=scratch,
        env=dict(os.environ),
    )


def _build_java_agent(out: Path, scratch: Path) -> None:
    """``/javaagent.jar`` of the Java agent image: the OpenTelemetry Java agent from Maven
    Central (``mvn dependency:copy``, the machine's Maven and its settings)."""
    _run(
        [
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={JAVA_AGENT_ARTIFACT}",
            f"-DoutputDirectory={scratch}",
            "-Dmdep.stripVersion=true",
        ],
        cwd=scratch,
        env=dict(os.environ),
    )
    shutil.move(str(scratch / "opentelemetry-javaagent.jar"), out / "javaagent.jar")


def _otelcol_go_mod(manifest: dict[str, object]) -> str:
    """The go.mod ocb would write: every component module, the collector core, the replaces."""
    requires = [
        f"go.opentelemetry.io/collector/{core} v{OTELCOL_VERSION}"
        for core in ("otelcol", "service")
    ]
    for section in _OCB_SECTIONS:
        for entry in manifest.get(section) or []:  # type: ignore[attr-defined]
            requires.append(entry["gomod"])
    lines = ["module go.opentelemetry.io/collector/cmd/builder", "", "go 1.25.0", "", "require ("]
    lines += [f"\t{req}" for req in requires] + [")", ""]
    lines += [f"replace {rep}" for rep in manifest.get("replaces") or []]  # type: ignore[attr-defined]
    return "\n".join(lines) + "\n"


def otelcol_go_mod(manifest_path: Path = OTELCOL_MANIFEST) -> str:
    """The distribution's go.mod, from the ocb manifest (also what tools/otelcol/Dockerfile
    builds with: one recipe for the cached binary and the image)."""
    import yaml

    return _otelcol_go_mod(yaml.safe_load(manifest_path.read_text()))


def _build_otelcol(out: Path, scratch: Path) -> None:
    """Generate the distribution's sources with ocb, then build them with ``go build``.

    ocb's own module step runs ``go mod tidy``, which also fetches the test-only
    dependencies of every component; some of those are not served by the module
    proxy. So ocb only generates the sources, and ``go build -mod=mod`` resolves just
    what the binary links, from the go.mod written here from the same manifest and the
    committed ``tools/otelcol/go.sum`` (the build is byte-for-byte reproducible).
    """
    ocb = TOOLS["ocb"]
    ensure(ocb)
    build_dir = scratch / "otelcol-build"
    _run(
        [
            str(ocb.path()),
            "--config",
            str(OTELCOL_MANIFEST),
            "--output-path",
            str(build_dir),
            "--skip-get-modules",
            "--skip-compilation",
        ]
    )
    shutil.copytree(REPO_TOOLS / "otelcol" / "stubs", build_dir / "stubs")
    (build_dir / "go.mod").write_text(otelcol_go_mod())
    shutil.copy2(REPO_TOOLS / "otelcol" / "go.sum", build_dir / "go.sum")  # committed checksums
    _run(["go", "build", "-trimpath", "-o", str(out / "otelcol-kvtrace"), "."], cwd=build_dir)


JAEGER_UI_VERSION = JAEGER_VERSION  # jaeger-ui tags its releases like the Jaeger v1 line
JAEGER_UI_ARCHIVE = f"jaeger-ui-v{JAEGER_UI_VERSION}.tar.gz"
JAEGER_UI_SHA256 = "42dffc4acf32f2f60f9e1c319039516bde24b4a1903848ddbbfb9b6c2d07eace"
JAEGER_UI_URL = (
    f"https://github.com/jaegertracing/jaeger-ui/archive/refs/tags/v{JAEGER_UI_VERSION}.tar.gz"
)


def jaeger_ui_source(repo: Path = REPO_TOOLS.parent) -> Path | None:
    """The mirrored jaeger-ui tree: ``shared/upstream/`` next to the checkout (or next to a
    directory above it, as for a git worktree), else ``$KVTRACE_UPSTREAM_DIR``; None when absent."""
    env = os.environ.get("KVTRACE_UPSTREAM_DIR")
    candidates = [Path(env) / JAEGER_UI_ARCHIVE] if env else []
    candidates += [
        parent / "shared" / "upstream" / JAEGER_UI_ARCHIVE for parent in repo.resolve().parents
    ]
    return next((path for path in candidates if path.is_file()), None)


def _fetch_jaeger_ui(scratch: Path) -> Path:
    """The source archive: the mirrored one (checksum verified), else the tag's tarball."""
    source = jaeger_ui_source()
    if source is not None:
        if _sha256(source) != JAEGER_UI_SHA256:
            raise RuntimeError(f"{source}: sha256 is not {JAEGER_UI_SHA256}")
        return source
    print(f"    no ../shared/upstream/{JAEGER_UI_ARCHIVE}: fetching {JAEGER_UI_URL}", flush=True)
    target = scratch / JAEGER_UI_ARCHIVE
    try:
        with urllib.request.urlopen(JAEGER_UI_URL, timeout=120) as resp:
            target.write_bytes(resp.read())
    except OSError as exc:
        raise RuntimeError(
            f"jaeger-ui source not found: put {JAEGER_UI_ARCHIVE} (a `git archive` of tag "
            f"v{JAEGER_UI_VERSION}) in ../shared/upstream/ next to the checkout or in "
            f"$KVTRACE_UPSTREAM_DIR; downloading {JAEGER_UI_URL} failed: {exc}"
        ) from exc
    return target


def _build_jaeger_ui(out: Path, scratch: Path) -> None:
    """jaeger-ui with npm (``npm ci``, ``npm run build``; its package.json asks for node >= 24,
    node 20 builds it with ``--engine-strict=false``); the built assets are the cached tool."""
    archive = _fetch_jaeger_ui(scratch)
    with tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
    tree = next(
        path for path in scratch.iterdir() if path.is_dir() and path.name.startswith("jaeger-ui")
    )
    env = {
        **os.environ,
        "CI": "true",
        "npm_config_engine_strict": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_update_notifier": "false",
    }
    _run(
        ["npm", "ci", "--ignore-scripts", "--engine-strict=false", "--no-audit", "--no-fund"],
        cwd=tree,
        env=env,
    )
    _run(["npm", "run", "build"], cwd=tree, env=env)
    shutil.copytree(tree / "packages" / "jaeger-ui" / "build", out, dirs_exist_ok=True)


_K8S_LDFLAGS = " ".join(
    f"-X k8s.io/{pkg}.{key}={value}"
    for pkg in ("component-base/version", "client-go/pkg/version")
    for key, value in (
        ("gitVersion", f"v{KUBERNETES_VERSION}"),
        ("gitMajor", KUBERNETES_VERSION.split(".")[0]),
        ("gitMinor", KUBERNETES_VERSION.split(".")[1]),
        ("gitTreeState", "clean"),
    )
)

# What `prometheus --version` prints (upstream's release builds set the same variables).
_PROMETHEUS_LDFLAGS = " ".join(
    f"-X github.com/prometheus/common/version.{key}={value}"
    for key, value in (
        ("Version", prometheus_release()),
        ("Branch", "HEAD"),
        ("BuildUser", "kvtrace"),
    )
)

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "kubernetes",
            KUBERNETES_VERSION,
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
            _build_wrapper(
                "kubernetes",
                {
                    name: f"k8s.io/kubernetes/cmd/{name}"
                    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
                },
                ldflags=_K8S_LDFLAGS,
            ),
        ),
        Tool(
            "etcd",
            ETCD_VERSION,
            ("etcd",),
            _build_wrapper("etcd", {"etcd": "go.etcd.io/etcd/server/v3"}),
        ),
        Tool(
            "etcdload",
            etcdload_build_id,
            ("etcdload",),
            _build_wrapper(ETCDLOAD_MODULE, {"etcdload": "."}),
        ),
        Tool(
            "kwok",
            KWOK_VERSION,
            ("kwok", "kwokctl"),
            _go_install(
                {
                    name: f"sigs.k8s.io/kwok/cmd/{name}@v{KWOK_VERSION}"
                    for name in ("kwok", "kwokctl")
                },
                ldflags=f"-X sigs.k8s.io/kwok/pkg/consts.Version=v{KWOK_VERSION}",
            ),
        ),
        Tool(
            "ocb",
            OTELCOL_VERSION,
            ("builder",),
            _go_install(
                {"builder": f"go.opentelemetry.io/collector/cmd/builder@v{OTELCOL_VERSION}"}
            ),
        ),
        Tool("otelcol", otelcol_build_id, ("otelcol-kvtrace",), _build_otelcol),
        Tool(
            "jaeger",
            JAEGER_VERSION,
            ("jaeger",),
            _build_wrapper("jaeger", {"jaeger": "github.com/jaegertracing/jaeger/cmd/jaeger"}),
        ),
        Tool(
            "prometheus",
            PROMETHEUS_VERSION,
            ("prometheus", "promtool"),
            _go_install(
                {
                    name: f"github.com/prometheus/prometheus/cmd/{name}@v{PROMETHEUS_VERSION}"
                    for name in ("prometheus", "promtool")
                },
                ldflags=_PROMETHEUS_LDFLAGS,
                # Only the Kubernetes service discovery the rendered prometheus.yml uses: the
                # other two dozen (clouds, Consul, ...) triple the cold build for nothing here.
                tags="remove_all_sd,enable_kubernetes_sd",
            ),
        ),
        Tool("python-agent", PYTHON_AGENT_VERSION, (), _build_python_agent),
        Tool("java-agent", JAVA_AGENT_VERSION, (), _build_java_agent),
        Tool("jaeger-ui", JAEGER_UI_VERSION, ("index.html",), _build_jaeger_ui, executable=False),
        Tool(
            "helm",
            HELM_VERSION,
            ("helm",),
            _go_install(
                {"helm": f"helm.sh/helm/v4/cmd/helm@v{HELM_VERSION}"},
                ldflags=f"-X helm.sh/helm/v4/internal/version.version=v{HELM_VERSION}",
            ),
        ),
    )
}


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, each as wide as its longest cell (the last
    column is not padded): ``kvtrace dev tools --list``."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def listing() -> list[str]:
    """``kvtrace dev tools --list``: each tool's name, cache key, state and directory."""
    rows = [("TOOL", "VERSION", "STATE", "DIRECTORY")]
    rows += [
        (tool.name, tool.version, verify(tool) or "ok", str(tool.directory))
        for tool in TOOLS.values()
    ]
    return table(rows)


def minutes(seconds: float) -> str:
    """``75`` -> ``1m15s``; under a minute ``42s``."""
    whole = int(round(seconds))
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def _go_version() -> tuple[int, int] | None:
    try:
        text = subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60, env=_go_env()
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    parts = text.removeprefix("go").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def check_prerequisites(tools: Sequence[Tool]) -> None:
    """Raise MissingPrerequisite naming the first program the builds of ``tools`` need and do
    not find (Go 1.26 for all of them), before anything is built."""
    if not tools:
        return
    commands = ["go", *sorted({c for t in tools for c in EXTRA_PREREQUISITES.get(t.name, ())})]
    names = ", ".join(t.name for t in tools)
    for command in commands:
        if shutil.which(command) is None:
            raise MissingPrerequisite(
                f"{PREREQUISITE_NAMES.get(command, command)} is needed to build {names}, and "
                f"`{command}` is not on PATH (README.md, Prerequisites)"
            )
    version = _go_version()
    if version is None or version < MIN_GO:
        found = "an unreadable version" if version is None else f"go{version[0]}.{version[1]}"
        raise MissingPrerequisite(
            f"Go {MIN_GO[0]}.{MIN_GO[1]} or newer is needed to build {names} (GOTOOLCHAIN=local), "
            f"`go` on PATH is {found} (README.md, Prerequisites)"
        )


def ensure(tool: Tool, *, force: bool = False) -> Path:
    """Build the tool unless an intact build is cached; return its directory."""
    return _ensure(tool, "rebuild forced" if force else verify(tool))


@contextlib.contextmanager
def _build_lock(tool: Tool) -> Iterator[None]:
    """Hold the tool's build lock (a file lock beside its cache directory): a second
    ``kvtrace dev tools`` (another shell, a parallel test session) waits for the first one's
    build and then finds it cached, instead of compiling the same packages again."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{tool.name}-{tool.version}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[tools] {tool.name} {tool.version}: waiting for another build", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _ensure(
    tool: Tool, problem: str | None, position: str = "", since: float | None = None
) -> Path:
    """Build ``tool`` when ``problem`` says why (None: it is cached). ``position`` (``"3 of
    7"``) and ``since`` (when the whole run began) only enrich the progress lines."""
    head = f"[tools] {position + ': ' if position else ''}{tool.name} {tool.version}"
    if problem is None:
        print(f"{head}: cached at {tool.directory}", flush=True)
        return tool.directory
    with _build_lock(tool):
        problem = verify(tool) if problem != "rebuild forced" else problem
        if problem is None:  # another run built it while this one waited
            print(f"{head}: cached at {tool.directory}", flush=True)
            return tool.directory
        return _build(tool, problem, head, since)


def _build(tool: Tool, problem: str, head: str, since: float | None) -> Path:
    expected = EXPECTED_SECONDS.get(tool.name)
    expectation = f", about {minutes(expected)} cold on 2 idle cores" if expected else ""
    print(f"{head}: building ({problem}{expectation})", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"build-{tool.name}-", dir=cache_root()) as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        tool.build(staging, scratch)
        sums = {binary: _sha256(staging / binary) for binary in tool.binaries}
        (staging / STAMP).write_text(
            json.dumps({"version": tool.version, "sha256": sums}, indent=2)
        )
        if tool.directory.exists():
            shutil.rmtree(tool.directory)
        staging.rename(tool.directory)
    total = f", {minutes(time.monotonic() - since)} since the start" if since is not None else ""
    print(f"{head}: built in {minutes(time.monotonic() - started)}{total}", flush=True)
    return tool.directory


def ensure_all(names: Sequence[str] = (), *, force: bool = False) -> dict[str, Path]:
    """Ensure the named tools (all when empty); raise naming each one that failed."""
    selected = list(names) or [n for n in TOOLS if n != "ocb"]
    unknown = [n for n in selected if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; expected some of {sorted(TOOLS)}")
    problems = {n: "rebuild forced" if force else verify(TOOLS[n]) for n in selected}
    check_prerequisites([TOOLS[n] for n in selected if problems[n] is not None])
    started = time.monotonic()
    result: dict[str, Path] = {}
    failures: list[str] = []
    for index, name in enumerate(selected, 1):
        try:
            result[name] = _ensure(
                TOOLS[name], problems[name], f"{index} of {len(selected)}", started
            )
        except RuntimeError as exc:
            failures.append(f"{name}: {exc}")
            print(f"[tools] {name}: FAILED\n{exc}", file=sys.stderr, flush=True)
    print(f"[tools] done in {minutes(time.monotonic() - started)}", flush=True)
    if failures:
        raise RuntimeError("tool builds failed:\n" + "\n".join(failures))
    return result


def binary(name: str) -> Path:
    """Path of a cached binary by its file name (e.g. ``kube-apiserver``); raise if not built."""
    for tool in TOOLS.values():
        if name in tool.binaries:
            problem = verify(tool)
            if problem:
                raise FileNotFoundError(
                    f"{name} ({tool.name} {tool.version}) is {problem}: run `kvtrace dev tools`"
                )
            return tool.path(name)
    raise KeyError(f"no tool provides {name!r}")


def jaeger_ui_assets() -> Path:
    """The directory of the built jaeger-ui (``ui.assets_path`` of the local Jaeger); raise
    like :func:`binary` when it is not built."""
    return binary("index.html").parent


def jaeger_ui_flag() -> str:
    """The flag that makes a local ``jaeger`` serve the cached jaeger-ui (its Go module has no
    UI assets; the upstream images embed them)."""
    return f"--set=extensions.jaeger_query.ui.assets_path={jaeger_ui_assets()}"
