"""`kvtrace render -f FILE...`: output, warnings and errors, on small fixture files."""

from __future__ import annotations

import io
from argparse import Namespace
from pathlib import Path

import pytest
import yaml
from render_testlib import DATA, validate_k8s

from kvtrace_operator.render_command import main

pytestmark = pytest.mark.unit


def run(*files: str | Path, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        Namespace(files=[str(f) for f in files]), stdout=out, stderr=err, stdin=io.StringIO(stdin)
    )
    return code, out.getvalue(), err.getvalue()


def kinds(output: str) -> list[str]:
    return [doc["kind"] for doc in yaml.safe_load_all(output)]


class TestRenderCommand:
    def test_cluster_with_its_pipeline(self) -> None:
        code, out, err = run(DATA / "kvcluster-with-pipeline.yaml")
        assert (code, err) == (0, "")
        docs = list(yaml.safe_load_all(out))
        # the cluster's own OTLP token Secret first (its pipeline has auth, the default), then
        # its KV clients' token (KV auth on by default)
        assert kinds(out)[:9] == [
            "Secret",
            "Secret",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
        assert "Deployment" in kinds(out)
        for doc in docs:
            validate_k8s(doc)
            assert doc["metadata"]["namespace"] == "shop"
            assert "ownerReferences" not in doc["metadata"]  # no uid offline
        sts = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"][
            "containers"
        ][0]
        env = {e["name"]: e.get("value") for e in sts["env"]}
        assert (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            == "https://traces-collector.shop.svc.cluster.local:4318"
        )
        collector = next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "traces-collector"
        )
        assert "threshold_ms: 250" in collector["data"]["config.yaml"]

    def test_config_files_are_literal_blocks(self) -> None:
        _, out, _ = run(DATA / "kvcluster-with-pipeline.yaml")
        assert "config.yaml: |" in out and "peers: |" in out

    def test_deterministic(self) -> None:
        first = run(DATA / "kvcluster-with-pipeline.yaml", DATA / "pipeline-two-tier.yaml")
        assert first == run(DATA / "kvcluster-with-pipeline.yaml", DATA / "pipeline-two-tier.yaml")

    def test_files_together_equal_one_file(self) -> None:
        _, together, _ = run(DATA / "kvcluster-alone.yaml", DATA / "pipeline-two-tier.yaml")
        assert "traces-collector.shop.svc.cluster.local:4318" in together
        assert "OTEL_SDK_DISABLED" not in together

    def test_two_tier_and_badger(self) -> None:
        code, out, _ = run(DATA / "pipeline-two-tier.yaml")
        names = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out)]
        assert code == 0
        assert ("Deployment", "traces-collector-sampling") in names
        assert ("PersistentVolumeClaim", "traces-jaeger-data") in names

    def test_missing_pipeline_renders_untraced_with_a_warning(self) -> None:
        code, out, err = run(DATA / "kvcluster-alone.yaml")
        assert code == 0
        assert "warning:" in err and "'traces'" in err and "kvcluster-alone.yaml" in err
        sts = [d for d in yaml.safe_load_all(out) if d["kind"] == "StatefulSet"][0]
        env = {
            e["name"]: e.get("value")
            for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["OTEL_SDK_DISABLED"] == "true"

    def test_stdin(self) -> None:
        code, out, _ = run("-", stdin=(DATA / "pipeline-two-tier.yaml").read_text())
        assert code == 0 and "traces-collector-sampling" in out


class TestRenderCommandErrors:
    @pytest.mark.parametrize(
        ("files", "words"),
        [
            (
                ["unknown-kind.yaml"],
                ["unknown-kind.yaml", "ConfigMap/not-ours", "kind", "KVCluster, TracingPipeline"],
            ),
            (["malformed.yaml"], ["malformed.yaml", "malformed YAML"]),
            (
                ["head-keeps-errors.yaml"],
                ["head-keeps-errors.yaml", "TracingPipeline/traces", "spec.sampling.keepErrors"],
            ),
            (["kvcluster-with-pipeline.yaml", "malformed.yaml"], ["malformed.yaml"]),
            (["does-not-exist.yaml"], ["does-not-exist.yaml", "cannot read"]),
        ],
    )
    def test_error_names_the_file_and_prints_nothing(
        self, files: list[str], words: list[str]
    ) -> None:
        code, out, err = run(*(DATA / name for name in files))
        assert code != 0
        assert out == ""
        for word in words:
            assert word in err

    def test_empty_input(self) -> None:
        code, out, err = run("-", stdin="---\n")
        assert code != 0 and out == "" and "no KVCluster or TracingPipeline" in err

    def test_not_a_mapping(self) -> None:
        code, out, err = run("-", stdin="- a\n- b\n")
        assert code != 0 and out == "" and "<stdin> (document 1)" in err and "mapping" in err

    def test_broken_pipeline_is_blamed_not_the_cluster(self) -> None:
        code, out, err = run(DATA / "kvcluster-alone.yaml", DATA / "head-keeps-errors.yaml")
        assert code != 0 and out == ""
        assert "head-keeps-errors.yaml" in err and "kvcluster-alone.yaml" not in err

    def test_bad_cluster_spec_names_the_field(self) -> None:
        text = "apiVersion: kvtrace.dev/v1alpha1\nkind: KVCluster\nmetadata: {name: a}\nspec: {replicas: 1}\n"
        code, out, err = run("-", stdin=text)
        assert code != 0 and out == ""
        assert "KVCluster/a" in err and "spec.replicationFactor" in err


@pytest.mark.parametrize("package", ["cel_expr_python", "jsonschema"])
def test_without_the_render_extra_it_names_the_missing_package(
    package: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from kvtrace_operator import cli, render

    # As in the operator image, where the render extra is not installed.
    monkeypatch.delitem(sys.modules, "kvtrace_operator.render_command", raising=False)
    for module in ("strict", "cel_rules"):
        monkeypatch.delitem(sys.modules, f"kvtrace_operator.render.{module}", raising=False)
        monkeypatch.delattr(render, module, raising=False)
    monkeypatch.setitem(sys.modules, package, None)
    assert cli._render(Namespace(files=["-"])) == 2
    err = capsys.readouterr().err
    assert err == (
        f"kvtrace render: error: the {package} package is missing: "
        "install the render extra (pip install 'kvtrace[render]')\n"
    )
