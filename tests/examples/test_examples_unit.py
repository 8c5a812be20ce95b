"""Every example, offline: layout, CRD schema (unknown fields rejected), the operator's own
validation and rendering, and Kubernetes 1.37 validation of what it renders."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from examples_lib import EXAMPLES, FOLDER, documents, folders, manifest_files, schema_errors

from kvtrace_operator.render import render_all, validate_kvcluster, validate_pipeline
from kvtrace_operator.spec.defaults import apply_defaults_kvcluster, apply_defaults_pipeline

pytestmark = pytest.mark.unit

EXPECTED = [
    "01-basic",
    "02-production-sampling",
    "03-scaled-collector",
    "04-badger-storage",
    "05-multi-tenant-jaeger",
    "06-instrumented-app",
]
FOLDERS = folders()
IDS = [f.name for f in FOLDERS]


def test_the_numbered_examples_exist() -> None:
    assert [f.name for f in FOLDERS] == EXPECTED
    for folder in FOLDERS:
        assert FOLDER.match(folder.name), folder.name
        assert (folder / "README.md").is_file(), f"{folder.name} has no README.md"
        assert manifest_files(folder), f"{folder.name} has no manifests"


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_manifests_match_the_crd_schemas(folder: Path) -> None:
    docs = documents(folder)
    assert docs
    for doc in docs:
        errors = schema_errors(doc)
        assert not errors, (
            f"{folder.name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {errors}"
        )
        # Examples are applied with `kubectl -n NS apply -f`: no namespace of their own.
        assert set(doc["metadata"]) == {"name"}, doc["metadata"]


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_each_cluster_references_a_pipeline_of_its_example(folder: Path) -> None:
    docs = documents(folder)
    pipelines = {d["metadata"]["name"] for d in docs if d["kind"] == "TracingPipeline"}
    clusters = [d for d in docs if d["kind"] == "KVCluster"]
    assert clusters and pipelines
    for cluster in clusters:
        assert cluster["spec"]["tracing"]["pipelineRef"]["name"] in pipelines


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_the_operator_accepts_and_renders_every_example(folder: Path) -> None:
    docs = documents(folder)
    for doc in docs:
        resource = {**doc, "metadata": {**doc["metadata"], "namespace": "examples", "uid": "uid"}}
        if doc["kind"] == "KVCluster":
            validate_kvcluster({**resource, "spec": apply_defaults_kvcluster(doc["spec"])})
        else:
            validate_pipeline({**resource, "spec": apply_defaults_pipeline(doc["spec"])})
    rendered = render_all(
        [{**d, "metadata": {**d["metadata"], "namespace": "examples", "uid": "uid"}} for d in docs]
    )
    assert rendered
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.37", strict=True)


def test_examples_show_what_each_one_is_about() -> None:
    """The features each example exists for are really in its manifests."""

    def spec(name: str, kind: str = "TracingPipeline") -> dict:  # type: ignore[type-arg]
        return next(d["spec"] for d in documents(EXAMPLES / name) if d["kind"] == kind)

    assert spec("01-basic")["sampling"]["mode"] == "development"
    production = spec("02-production-sampling")["sampling"]
    assert production["mode"] == "production" and production["ratio"] == 0.1
    assert production["keepErrors"] is True and production["latencyThreshold"] == "500ms"
    scaled = spec("03-scaled-collector")
    assert scaled["collector"]["replicas"] == 2 and scaled["sampling"]["mode"] == "production"
    storage = spec("04-badger-storage")["jaeger"]["storage"]
    assert storage["type"] == "badger" and storage["retention"]
    assert spec("04-badger-storage")["jaeger"]["archive"] == {"enabled": True, "retention": "720h"}
    tenancy = spec("05-multi-tenant-jaeger")["jaeger"]["tenancy"]
    assert tenancy["enabled"] is True and tenancy["tenants"]


def test_schema_check_rejects_unknown_and_mistyped_fields() -> None:
    bad = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "replicationFactr": 1},
    }
    errors = " ".join(schema_errors(bad))
    assert "spec.replicas" in errors and "replicationFactr" in errors
