"""Strict ``kvtrace render``: documents checked against the CRDs' own schema and CEL rules as
the API server's strict field validation checks them (the controlplane test in
tests/operator/controlplane/test_crds.py compares the words with the real API server)."""

from __future__ import annotations

import io
import json
import shutil
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import yaml
from render_testlib import CRDS, DATA, crd, kvcluster, pipeline

from kvtrace_operator import crds
from kvtrace_operator.render import cel_rules, strict
from kvtrace_operator.render_command import main

pytestmark = pytest.mark.unit

KVC = ("kvtrace.dev/v1alpha1", "KVCluster")
TP = ("kvtrace.dev/v1alpha1", "TracingPipeline")


def errors_of(resource: dict[str, Any]) -> list[str]:
    key = (resource["apiVersion"], resource["kind"])
    return [str(error) for error in strict.check(resource, crds.schemas()[key]).errors]


def run(*files: str | Path, stdin: str = "", **options: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = Namespace(
        files=[str(f) for f in files], **{"recursive": False, "output": "yaml", **options}
    )
    code = main(args, stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def resource_with(spec_schema: dict[str, Any], spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(resource, schema) of a made-up CRD whose spec has ``spec_schema``."""
    return {"metadata": {"name": "a"}, "spec": spec}, {
        "type": "object",
        "properties": {"spec": spec_schema},
    }


def spec_errors(spec_schema: dict[str, Any], spec: Any) -> list[str]:
    return [str(error) for error in strict.check(*resource_with(spec_schema, spec)).errors]


def rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(schema.get("x-kubernetes-validations", []))
    for sub in [
        *schema.get("properties", {}).values(),
        schema.get("items"),
        schema.get("additionalProperties"),
    ]:
        if isinstance(sub, dict):
            found += rules(sub)
    return found


class TestTheSchemaIsTheCRDs:
    def test_packaged_crds_are_byte_identical_copies_of_crds(self) -> None:
        package = Path(crds.__file__).parent
        top = sorted(p.name for p in CRDS.glob("*.yaml"))
        assert sorted(p.name for p in package.glob("*.yaml")) == top, "run `make crds`"
        for name in top:
            assert (package / name).read_bytes() == (CRDS / name).read_bytes(), (
                f"{name}: run `make crds`"
            )

    def test_a_field_added_to_the_crd_is_accepted_without_code(self) -> None:
        schema = crds.schemas()[KVC]
        resource = kvcluster(uid=None, newField={"x": 1})
        assert errors_of(resource) == ['spec.newField: unknown field "spec.newField"']
        spec = schema["properties"]["spec"]
        grown = {
            **schema,
            "properties": {
                **schema["properties"],
                "spec": {
                    **spec,
                    "properties": {
                        **spec["properties"],
                        "newField": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    },
                },
            },
        }
        assert strict.check(resource, grown).errors == []

    @pytest.mark.parametrize("plural", ["kvclusters", "tracingpipelines"])
    def test_every_rule_of_the_crds_is_evaluated_here(self, plural: str) -> None:
        schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        found = rules(schema)
        assert found
        for rule in found:
            for expression in (rule["rule"], rule.get("messageExpression")):
                if expression:
                    cel_rules.compiled(expression)  # raises RuleUnsupported


class TestWhatANewUserTyped:
    """The issue's cases: each rendered silently before."""

    @pytest.mark.parametrize(
        ("resource", "expected"),
        [
            (
                pipeline(uid=None, samplng={"mode": "production"}),
                "spec.samplng: unknown field \"spec.samplng\" (did you mean 'sampling'?)",
            ),
            (
                kvcluster(uid=None, tracing={"pipelineref": {"name": "traces"}}),
                "spec.tracing.pipelineref: unknown field \"spec.tracing.pipelineref\" (did you mean 'pipelineRef'?)",
            ),
            (
                kvcluster(uid=None, replicaz=5),
                "spec.replicaz: unknown field \"spec.replicaz\" (did you mean 'replicas'?)",
            ),
            (
                {**kvcluster(uid=None), "metadata": {"name": "a", "labelz": {}}},
                "metadata.labelz: unknown field \"metadata.labelz\" (did you mean 'labels'?)",
            ),
        ],
    )
    def test_unknown_fields_are_errors_naming_the_path(
        self, resource: dict[str, Any], expected: str
    ) -> None:
        assert errors_of(resource) == [expected]

    def test_a_quantity_that_is_not_one(self) -> None:
        [error] = errors_of(
            kvcluster(uid=None, resources={"requests": {"cpu": "lots", "memory": "1Gi"}})
        )
        assert error.startswith(
            'spec.resources.requests.cpu: Invalid value: "lots": '
            "spec.resources.requests.cpu in body should match"
        )
        assert (
            errors_of(
                pipeline(
                    uid=None, collector={"resources": {"limits": {"cpu": 2, "memory": "1.5Gi"}}}
                )
            )
            == []
        )

    def test_preserved_fields_stay_free(self) -> None:
        affinity = {"nodeAffinity": {"anything": [1, 2]}}
        assert errors_of(kvcluster(uid=None, scheduling={"affinity": affinity})) == []

    def test_status_is_not_the_users(self) -> None:
        assert errors_of({**kvcluster(uid=None), "status": {"whatever": 1}}) == []


class TestEveryErrorInTheAPIServersWords:
    def test_every_error_of_a_document(self) -> None:
        found = errors_of(kvcluster(uid=None, replicas=0, replicaz=1, storage={"size": "lots"}))
        assert found == [
            "spec.replicaz: unknown field \"spec.replicaz\" (did you mean 'replicas'?)",
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            'spec.storage.size: Invalid value: "lots": spec.storage.size in body should match '
            "'^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$'",
            "spec.replicationFactor: Invalid value: replicationFactor must be at most "
            "replicas: each key needs that many distinct members",
        ]
        # an unsupported enum value, like a wrong type, leaves the rules unchecked (as there)
        assert errors_of(kvcluster(uid=None, replicas=2, consistency={"read": "most"}))[1:] == [
            f"<nil>: Invalid value: null: {strict.BLOCKED_NOTE}"
        ]

    def test_defaults_apply_before_the_rules(self) -> None:
        # replicationFactor defaults to 3: above 2 replicas
        assert errors_of(kvcluster(uid=None, replicas=2)) == [
            "spec.replicationFactor: Invalid value: replicationFactor must be at most "
            "replicas: each key needs that many distinct members"
        ]

    def test_a_type_error_blocks_the_rules_as_on_the_api_server(self) -> None:
        assert errors_of(kvcluster(uid=None, replicas="three", replicationFactor=5)) == [
            'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
            f"<nil>: Invalid value: null: {strict.BLOCKED_NOTE}",
        ]

    def test_required_and_reason(self) -> None:
        assert errors_of(kvcluster(uid=None, tracing={"pipelineRef": {}})) == [
            "spec.tracing.pipelineRef.name: Required value"
        ]
        assert errors_of(pipeline(uid=None, sampling={"mode": "head", "keepErrors": True})) == [
            "spec.sampling.keepErrors: Forbidden: head sampling decides at the root span, before any "
            "error happens, so it cannot keep every error: use mode production or leave keepErrors "
            "unset/false"
        ]

    def test_list_map_keys_are_unique(self) -> None:
        otlp = [{"name": "a", "endpoint": "x:4317"}, {"name": "a", "endpoint": "y:4317"}]
        assert errors_of(pipeline(uid=None, exporters={"otlp": otlp})) == [
            'spec.exporters.otlp[1]: Duplicate value: {"name":"a"}'
        ]

    def test_numbers_are_typed_by_the_schema_for_the_rules(self) -> None:
        spec = {
            "type": "object",
            "properties": {"ratio": {"type": "number"}},
            "x-kubernetes-validations": [{"rule": "self.ratio <= 1.0", "message": "too big"}],
        }
        assert spec_errors(spec, {"ratio": 1}) == []
        assert spec_errors(spec, {"ratio": 2}) == ["spec: Invalid value: too big"]

    def test_transition_rules_are_not_evaluated_on_create(self) -> None:
        spec = {
            "type": "object",
            "properties": {"x": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}],
        }
        assert spec_errors(spec, {"x": "a"}) == []

    def test_message_expression_and_field_path(self) -> None:
        spec = {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "x-kubernetes-validations": [
                {
                    "rule": "self.a < 3",
                    "fieldPath": ".a",
                    "messageExpression": "'a is ' + string(self.a)",
                }
            ],
        }
        assert spec_errors(spec, {"a": 7}) == ["spec.a: Invalid value: a is 7"]

    def test_a_rule_this_evaluator_cannot_compile_is_reported_not_passed(self) -> None:
        spec = {
            "type": "object",
            "properties": {
                "q": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "notAFunction(self) > 1"}],
                }
            },
        }
        report = strict.check(*resource_with(spec, {"q": "1Gi"}))
        assert (
            report.errors == []
            and len(report.unchecked) == 1
            and "notAFunction" in report.unchecked[0]
        )

    def test_a_name_is_required_and_a_dns_subdomain(self) -> None:
        assert errors_of({**kvcluster(uid=None), "metadata": {}}) == [
            "metadata.name: Required value: name or generateName is required",
            f"<nil>: Invalid value: null: {strict.BLOCKED_NOTE}",
        ]
        [subdomain, label] = errors_of({**kvcluster(uid=None), "metadata": {"name": "Not_a_name"}})
        assert subdomain.startswith(
            'metadata.name: Invalid value: "Not_a_name": a lowercase RFC 1123 subdomain'
        )
        assert label.startswith("<nil>: Invalid value: metadata.name must be a DNS label")


class TestCommandLine:
    def test_every_error_of_every_document_and_nothing_on_stdout(self) -> None:
        text = yaml.safe_dump_all([kvcluster(uid=None, replicaz=1), pipeline(uid=None, samplng={})])
        code, out, err = run("-", stdin=text)
        assert (code, out) == (1, "")
        lines = err.splitlines()
        assert len(lines) == 2
        assert lines[0].startswith(
            "kvtrace render: <stdin> (document 1, KVCluster/demo): spec.replicaz:"
        )
        assert lines[1].startswith(
            "kvtrace render: <stdin> (document 2, TracingPipeline/traces): spec.samplng:"
        )

    def test_yaml_syntax_error_names_file_line_and_column(self) -> None:
        code, out, err = run(DATA / "malformed.yaml")
        assert (code, out) == (1, "")
        assert f"{DATA / 'malformed.yaml'}:6:1: malformed YAML" in err

    def test_a_field_given_twice_is_an_error(self) -> None:
        code, _, err = run(
            "-",
            stdin="apiVersion: kvtrace.dev/v1alpha1\nkind: KVCluster\n"
            "metadata: {name: a}\nspec:\n  replicas: 3\n  replicas: 5\n",
        )
        assert code == 1 and "<stdin>:6:3:" in err and "duplicate field 'replicas'" in err

    def test_a_directory_like_kubectl(self, tmp_path: Path) -> None:
        shutil.copy(DATA / "kvcluster-alone.yaml", tmp_path / "a.yaml")
        (tmp_path / "notes.md").write_text("not yaml: [")
        (tmp_path / "nested").mkdir()
        shutil.copy(DATA / "pipeline-two-tier.yaml", tmp_path / "nested" / "p.yml")
        code, flat, err = run(tmp_path)
        assert code == 0 and "OTEL_SDK_DISABLED" in flat and "warning:" in err
        code, deep, err = run(tmp_path, recursive=True)
        assert code == 0 and "OTEL_SDK_DISABLED" not in deep and err == ""
        assert deep == run(tmp_path / "a.yaml", tmp_path / "nested" / "p.yml")[1]

    def test_an_empty_directory(self, tmp_path: Path) -> None:
        code, out, err = run(tmp_path)
        assert (code, out) == (1, "") and str(tmp_path) in err and ".yaml" in err

    def test_output_json_is_one_list_of_the_same_objects(self) -> None:
        _, as_yaml, _ = run(DATA / "kvcluster-with-pipeline.yaml")
        code, as_json, _ = run(DATA / "kvcluster-with-pipeline.yaml", output="json")
        listed = json.loads(as_json)
        assert code == 0 and (listed["apiVersion"], listed["kind"]) == ("v1", "List")
        assert listed["items"] == list(yaml.safe_load_all(as_yaml))

    def test_unchecked_rules_are_warnings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def unsupported(rule: str) -> Any:
            raise cel_rules.RuleUnsupported(rule)

        monkeypatch.setattr(cel_rules, "compiled", unsupported)
        code, out, err = run(DATA / "kvcluster-alone.yaml")
        assert code == 0 and out
        assert "rule not checked here (the API server will)" in err


def test_a_rule_that_fails_to_evaluate_is_an_error_naming_it() -> None:
    spec = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-validations": [{"rule": "self.missing > 1"}],
    }
    [error] = spec_errors(spec, {"x": 1})
    assert error.startswith("spec: Invalid value: rule evaluation error:") and "missing" in error


def test_namespace_flag_like_kubectl() -> None:
    code, out, _ = run(DATA / "pipeline-two-tier.yaml", namespace="shop")  # the file says shop
    assert code == 0 and "namespace: shop" in out
    code, out, err = run(DATA / "pipeline-two-tier.yaml", namespace="elsewhere")
    assert (code, out) == (
        1,
        "",
    ) and "metadata.namespace: 'shop' does not match -n 'elsewhere'" in err
    text = yaml.safe_dump(pipeline(uid=None, namespace=None))
    code, out, _ = run("-", stdin=text, namespace="team-a")
    assert code == 0 and {d["metadata"]["namespace"] for d in yaml.safe_load_all(out)} == {"team-a"}


def test_every_image_may_be_pinned_by_digest() -> None:
    """Checkov's digest check is skipped for the default tags only (tools/checkov/config.yaml):
    every image field accepts repo@sha256:... and renders it unchanged."""
    digest = "@sha256:" + "a" * 64
    images = {
        name: f"registry.example/{name}{digest}"
        for name in ("kvnode", "otelcol", "jaeger", "proxy", "prometheus")
    }
    cluster = kvcluster(
        uid=None, image=images["kvnode"], tracing={"pipelineRef": {"name": "traces"}}
    )
    tp = pipeline(
        uid=None,
        collector={"image": images["otelcol"]},
        jaeger={
            "image": images["jaeger"],
            "query": {"auth": {"mode": "bearer", "proxyImage": images["proxy"]}},
        },
        metrics={"prometheus": {"image": images["prometheus"]}},
    )
    assert errors_of(cluster) == [] and errors_of(tp) == []
    code, out, err = run("-", stdin=yaml.safe_dump_all([cluster, tp]))
    assert code == 0, err
    rendered = {
        c["image"]
        for d in yaml.safe_load_all(out)
        if d["kind"] in ("StatefulSet", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert rendered == set(images.values())
