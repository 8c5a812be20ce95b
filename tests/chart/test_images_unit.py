"""The images kvtrace ships (operator, KV node, collector, the Python and Java agents), read
from their Dockerfiles (no container engine here) and checked against what runs them: the
operator's rendered StatefulSet and collector Deployment, the chart's operator Deployment, and
`make images` / `make kind-up` (which must build and load exactly the render defaults of
render/images.py)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, REPO, template
from dockerfile import Dockerfile

from kvtrace.devstack import tools
from kvtrace_operator.render import images, podspec, render_all
from kvtrace_operator.render.collector_objects import CONFIG_DIR

pytestmark = pytest.mark.unit

DOCKERFILES = {
    images.OPERATOR_IMAGE: Dockerfile(REPO / "operator" / "Dockerfile"),
    images.KVNODE_IMAGE: Dockerfile(REPO / "kvnode" / "Dockerfile"),
    images.COLLECTOR_IMAGE: Dockerfile(REPO / "tools" / "otelcol" / "Dockerfile"),
}
OPERATOR, KVNODE, COLLECTOR = DOCKERFILES.values()
# The language agents the injection webhook's init containers copy (instrumentation/).
AGENTS = {
    images.PYTHON_AGENT_IMAGE: Dockerfile(REPO / "instrumentation" / "python" / "Dockerfile"),
    images.JAVA_AGENT_IMAGE: Dockerfile(REPO / "instrumentation" / "java" / "Dockerfile"),
}
SHIPPED = {**DOCKERFILES, **AGENTS}
SHIPPED_IMAGES = (
    "OPERATOR_IMAGE",
    "KVNODE_IMAGE",
    "COLLECTOR_IMAGE",
    "PYTHON_AGENT_IMAGE",
    "JAVA_AGENT_IMAGE",
)
EACH = pytest.mark.parametrize(
    "dockerfile",
    SHIPPED.values(),
    ids=["operator", "kvnode", "collector", "python-agent", "java-agent"],
)
EXAMPLE = REPO / "examples" / "01-basic"


def rendered(kind: str, container: str) -> dict[str, Any]:
    """The pod template of the first ``kind`` the operator renders for examples/01-basic
    that runs ``container``."""
    docs = [
        doc
        for path in sorted(EXAMPLE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    for obj in render_all(
        [{**d, "metadata": {**d["metadata"], "namespace": "demo"}} for d in docs]
    ):
        pod = obj["spec"]["template"]["spec"] if obj["kind"] == kind else {}
        if any(c["name"] == container for c in pod.get("containers", ())):
            return pod
    raise AssertionError(f"no {kind} running {container} rendered for {EXAMPLE.name}")


def only_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    return container  # type: ignore[no-any-return]


def chart_pod() -> dict[str, Any]:
    deployment = next(o for o in template() if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def tag(image: str) -> str:
    return image.rpartition(":")[2]


# ------------------------------------------------------------------ bases, user, labels
@EACH
def test_bases_are_pinned_to_versions(dockerfile: Dockerfile) -> None:
    for base in dockerfile.bases():
        if base == "scratch":
            continue
        name, _, version = base.partition(":")
        assert version and version != "latest" and re.match(r"\d+\.\d+\.\d+-", version), (
            f"{dockerfile.path}: base {base} is not pinned to a patch release"
        )


def test_python_images_share_one_pinned_3_11_base() -> None:
    python = {df.args()["PYTHON_IMAGE"] for df in SHIPPED.values()}
    assert len(python) == 1, f"the Dockerfiles disagree on PYTHON_IMAGE: {python}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", python.pop())


@EACH
def test_runs_as_the_non_root_user_of_the_rendered_security_context(dockerfile: Dockerfile) -> None:
    users = dockerfile.final_values("USER")
    assert users, f"{dockerfile.path}: no USER, the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert int(uid) == int(gid) == podspec.USER_ID != 0
    for pod in (rendered("StatefulSet", "kvnode"), rendered("Deployment", "otelcol")):
        assert (
            pod["securityContext"]["runAsUser"]
            == pod["securityContext"]["runAsGroup"]
            == podspec.USER_ID
        )
    chart = chart_pod()["securityContext"]
    assert (chart["runAsUser"], chart["runAsGroup"]) == (podspec.USER_ID, podspec.USER_ID)


@EACH
def test_has_oci_labels(dockerfile: Dockerfile) -> None:
    labels = dockerfile.labels()
    for key in ("title", "description", "version", "revision", "licenses", "source", "vendor"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"{dockerfile.path}: no {key} label"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"


# ------------------------------------------------------------------ what the pods run
def test_operator_entrypoint_is_what_the_chart_runs() -> None:
    assert OPERATOR.exec_form("ENTRYPOINT") == ["kvtrace", "operator", "run"]
    container = only_container(chart_pod())
    assert "command" not in container, "the chart relies on the image's entrypoint"
    assert set(OPERATOR.exposed()) >= {port["containerPort"] for port in container["ports"]}
    runs = " ".join(OPERATOR.values("RUN"))
    assert '".[operator]"' in runs and "[node]" not in runs and "[dev]" not in runs


def test_kvnode_entrypoint_ports_and_data_volume_are_the_statefulsets() -> None:
    pod = rendered("StatefulSet", "kvnode")
    container = only_container(pod)
    assert (
        KVNODE.exec_form("ENTRYPOINT")
        == container["command"]
        == ["opentelemetry-instrument", "kvtrace", "node", "serve"]
    )
    assert KVNODE.exposed() == {port["containerPort"] for port in container["ports"]}
    data = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")
    assert KVNODE.final_values("VOLUME") == [f'["{data}"]']
    env = " ".join(KVNODE.final_values("ENV"))
    assert f"KVNODE_DATA_DIR={data}" in env
    # Only the OTLP http/protobuf exporter is installed (kvtrace[node]); without this default
    # opentelemetry-instrument looks for the gRPC one and fails to configure tracing.
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in env
    assert '".[node]"' in " ".join(KVNODE.values("RUN"))


def test_collector_entrypoint_and_config_path_are_the_deployments() -> None:
    container = only_container(rendered("Deployment", "otelcol"))
    binary = yaml.safe_load((REPO / "tools" / "otelcol" / "builder-config.yaml").read_text())[
        "dist"
    ]["name"]
    assert "command" not in container, "the Deployment relies on the image's entrypoint"
    assert COLLECTOR.exec_form("ENTRYPOINT") == [f"/{binary}"]
    assert COLLECTOR.exec_form("CMD") == container["args"] == [f"--config={CONFIG_DIR}/config.yaml"]
    config = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert config["mountPath"] == CONFIG_DIR and config["readOnly"] is True
    assert COLLECTOR.exposed() >= {port["containerPort"] for port in container["ports"]}
    # Stripped (-s -w, as ocb builds by default): the image budget (tools/images/budgets.txt).
    assert f'go build -trimpath -ldflags="-s -w" -o /rootfs/{binary} .' in " ".join(
        COLLECTOR.values("RUN")
    )


def test_collector_is_built_like_the_local_stacks_binary() -> None:
    """Same ocb release, manifest, stubs, go.sum and go.mod recipe as `kvtrace dev tools`."""
    manifest = yaml.safe_load((REPO / "tools" / "otelcol" / "builder-config.yaml").read_text())
    assert (
        COLLECTOR.args()["OTELCOL_VERSION"]
        == tools.OTELCOL_VERSION
        == manifest["dist"]["version"]
        == tag(images.COLLECTOR_IMAGE)
    )
    runs = " ".join(COLLECTOR.values("RUN"))
    assert "tools.otelcol_go_mod()" in runs and "--skip-get-modules --skip-compilation" in runs
    assert {"tools/otelcol/stubs/", "tools/otelcol/go.sum"} <= set(COLLECTOR.copy_sources())
    go_directive = re.search(r"^go (\d+)\.(\d+)", tools.otelcol_go_mod(), re.MULTILINE)
    golang = re.fullmatch(r"golang:(\d+)\.(\d+)\.\d+-\w+", COLLECTOR.args()["GOLANG_IMAGE"])
    assert go_directive and golang
    assert tuple(map(int, golang.groups())) >= tuple(map(int, go_directive.groups()))


def test_collector_go_mod_step_runs_on_its_build_context_alone(tmp_path: Path) -> None:
    """The gomod stage imports tools.py with only what the Dockerfile copies: an input another
    tool's cache key reads at import time (benchmarks/etcdload) must be copied too."""
    for source in COLLECTOR.copy_sources():
        origin, target = REPO / source, tmp_path / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            shutil.copy2(origin, target)
    (run,) = [r for r in COLLECTOR.values("RUN") if "tools.otelcol_go_mod()" in r]
    code = re.search(r'-c "(.+)" >', run)
    assert code, run
    proc = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == tools.otelcol_go_mod()


@pytest.mark.parametrize(
    ("kind", "container"), [("StatefulSet", "kvnode"), ("Deployment", "otelcol")]
)
def test_rendered_pods_write_only_to_volumes(kind: str, container: str) -> None:
    """Read-only root filesystem: /tmp (and the data directory) are volumes."""
    pod = rendered(kind, container)
    spec = only_container(pod)
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["volumeMounts"]
    chart = only_container(chart_pod())
    assert chart["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in chart["volumeMounts"])
    assert OPERATOR.final_values("WORKDIR") == ["/tmp"]


# ------------------------------------------------------------------ one source of image names
def make_dry_run(target: str, *variables: str) -> list[list[str]]:
    proc = subprocess.run(
        ["make", "-n", target, "CONTAINER_ENGINE=docker", "HELM=helm", "KIND=kind", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [
        shlex.split(line)
        for line in re.sub(r"\\\n\s*", " ", proc.stdout).splitlines()
        if line.strip()
    ]


def build_script_call(*variables: str) -> dict[str, str]:
    """The variables `make images` hands tools/images/build.sh (one command line)."""
    (call,) = [
        cmd
        for cmd in make_dry_run("images", *variables)
        if cmd[-2:] == ["bash", "tools/images/build.sh"]
    ]
    return dict(word.split("=", 1) for word in call[:-2])


def test_make_images_builds_each_dockerfile_under_its_render_default() -> None:
    variables = build_script_call()
    script = (REPO / "tools" / "images" / "build.sh").read_text()
    built = dict(
        re.findall(
            r'build(?:_local)? "\$\{?(\w+_IMAGE)(?::-)?\}?" (?:\w+ )?(\S+/Dockerfile)', script
        )
    )
    local = {"JAEGER_LOCAL_IMAGE": "jaeger", "PROMETHEUS_LOCAL_IMAGE": "prometheus"}
    builds = {
        variables[name]: REPO / dockerfile
        for name, dockerfile in built.items()
        if name not in local
    }
    assert builds == {image: df.path for image, df in SHIPPED.items()}
    for name, tool in local.items():
        assert built[name] == f"tools/{tool}/Dockerfile"
        assert variables[name], name
    assert variables["CONTAINER_ENGINE"] == "docker"


def test_make_images_follows_an_overridden_image_name() -> None:
    variables = build_script_call("KVNODE_IMAGE=localhost:5000/kvnode:dev")
    assert variables["KVNODE_IMAGE"] == "localhost:5000/kvnode:dev"
    assert variables["OPERATOR_IMAGE"] == images.OPERATOR_IMAGE


def test_make_images_for_a_registry_names_the_shipped_images_there_and_no_local_ones() -> None:
    variables = build_script_call("IMAGE_REGISTRY=registry.example.com/team")
    for name in SHIPPED_IMAGES:
        image = getattr(images, name)
        assert variables[name] == "registry.example.com/team/" + image.rpartition("/")[2]
    assert variables["JAEGER_LOCAL_IMAGE"] == variables["PROMETHEUS_LOCAL_IMAGE"] == ""
    pushes = [
        cmd
        for cmd in make_dry_run("push-images", "IMAGE_REGISTRY=registry.example.com/team")
        if cmd[:2] == ["docker", "push"]
    ]
    assert [cmd[2] for cmd in pushes] == [variables[n] for n in SHIPPED_IMAGES]


def test_images_install_pinned_python_dependencies() -> None:
    """Every distribution of kvtrace[node] and kvtrace[operator] is pinned (tools/images/lock.sh),
    the Dockerfiles install with those constraints, and the build context carries the file."""
    constraints = REPO / "tools" / "images" / "constraints.txt"
    pins = [
        line for line in constraints.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+-]+", pin) for pin in pins), pins
    pinned = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    assert {"opentelemetry-sdk", "opentelemetry-api", "kopf", "lightkube", "uvloop"} <= pinned
    for dockerfile in (OPERATOR, KVNODE):
        assert "tools/images/constraints.txt" in dockerfile.copy_sources()
        assert re.search(
            r"pip install -c constraints\.txt \"\.\[\w+\]\"", " ".join(dockerfile.values("RUN"))
        )


def test_make_kind_up_loads_the_shipped_images_and_installs_that_operator_image() -> None:
    commands = make_dry_run("kind-up")
    loads = [cmd for cmd in commands if cmd[:3] == ["kind", "load", "docker-image"]]
    shipped = {getattr(images, name) for name in SHIPPED_IMAGES}
    assert len(loads) == 1 and set(loads[0][5:]) == shipped, loads
    helm = next(cmd for cmd in commands if cmd[:2] == ["helm", "upgrade"])
    # The chart's CRD templates are upgraded with it; CRDs an older kind-up applied with
    # kubectl are adopted, not applied a second way.
    assert not any("crds/" in cmd for cmd in commands), commands
    assert "--take-ownership" in helm
    sets = [helm[n + 1] for n, word in enumerate(helm) if word == "--set"]
    repository, _, version = images.OPERATOR_IMAGE.rpartition(":")
    assert {
        f"image.repository={repository}",
        f"image.tag={version}",
        "image.pullPolicy=Never",
    } <= set(sets)
    assert next(
        cmd[cmd.index("--config") : cmd.index("--config") + 2]
        for cmd in commands
        if "create" in cmd
    ) == ["--config", "kind/cluster.yaml"]


def test_make_images_names_the_file_it_cannot_read_image_names_from(tmp_path: Path) -> None:
    reformatted = tmp_path / "images.py"
    reformatted.write_text('KVNODE_IMAGE: str = "ghcr.io/kvtrace/kvnode:0.1.0"\n')
    proc = subprocess.run(
        ["make", "images", "CONTAINER_ENGINE=true", f"IMAGES_PY={reformatted}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert (
        f'{reformatted}: expected lines NAME = "IMAGE" for OPERATOR_IMAGE, KVNODE_IMAGE'
        in proc.stdout
    )


def test_chart_default_image_is_the_operator_image() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (
        f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
        == images.OPERATOR_IMAGE
    )
    assert only_container(chart_pod())["image"] == images.OPERATOR_IMAGE


def test_jaeger_default_is_a_v2_image_and_stated_once() -> None:
    """Jaeger v2 images carry the v2 version (module v1.76.0 = release v2.13.0); every file
    that names the default says the same as render/images.py."""
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", images.JAEGER_IMAGE), (
        images.JAEGER_IMAGE
    )
    stale = []
    for folder in ("crds", "charts", "manifests", "docs", "examples", "kind"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".md", ".json"):
                stale += [
                    f"{path.relative_to(REPO)}: {m}"
                    for m in re.findall(r"jaegertracing/jaeger:[\w.]+", path.read_text())
                    if m != images.JAEGER_IMAGE
                ]
    assert not stale, stale


# ------------------------------------------------------------------ build contexts
@EACH
def test_build_context_is_filtered_to_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    ignore = dockerfile.dockerignore()
    assert ignore[0] == "*", f"{dockerfile.path}.dockerignore must start by excluding everything"
    included = [line[1:] for line in ignore if line.startswith("!")]
    for source in dockerfile.copy_sources():
        assert any(
            source.rstrip("/") == inc.rstrip("/") or source.startswith(inc) for inc in included
        ), (
            f"{dockerfile.path}: COPY {source} is not in its build context ({dockerfile.path.name}.dockerignore)"
        )


@pytest.mark.parametrize("dockerfile", [OPERATOR, KVNODE], ids=["operator", "kvnode"])
def test_images_leave_the_development_harness_out(dockerfile: Dockerfile) -> None:
    # BuildKit applies the last matching line: the exclusion must come after `!src/`.
    ignore = dockerfile.dockerignore()
    assert "src/kvtrace/devstack/" in ignore, (
        f"{dockerfile.path}.dockerignore ships kvtrace.devstack"
    )
    assert ignore.index("src/kvtrace/devstack/") > ignore.index("!src/")
