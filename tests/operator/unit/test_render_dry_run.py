"""Which children the API server checks before anything is written (render/dry_run.py): the
spec's free-form Kubernetes values (resources, affinity, tolerations, images, storage...)
reach only the workloads and claims; every other child of a render is the same whatever
those values are, so it is valid by construction once the API server accepted it for one
spec (tests/operator/controlplane/test_render_accepted.py checks the examples and edge specs)."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import kvcluster, pipeline

from kvtrace_operator.render import render_kvcluster, render_pipeline
from kvtrace_operator.render.dry_run import CHECKED_KINDS, checked_children, needs_dry_run

pytestmark = pytest.mark.unit

# Values the operator cannot check as the API server would (shape right, content wrong).
RESOURCES = {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
KV_FREE_FORM: dict[str, Any] = {
    "image": "Registry.example/UPPER:case tag",
    "imagePullPolicy": "Always",
    "resources": RESOURCES,
    "storage": {"size": "3Gi", "storageClassName": "Not_A_Class"},
    "tracing": {"pipelineRef": {"name": "traces"}, "serviceName": "any text at all"},
    "scheduling": {
        "podAntiAffinity": "required",
        "affinity": {"podAntiAffinity": "bad"},
        "nodeSelector": {"bad key!": "bad value!"},
        "tolerations": [{"operator": "Sideways"}],
        "topologySpreadConstraints": [{"maxSkew": -1}],
        "priorityClassName": "No Such Class",
    },
}
PIPELINE_FREE_FORM: dict[str, Any] = {
    "collector": {"image": "bad image", "resources": RESOURCES},
    "jaeger": {
        "image": "bad image",
        "resources": RESOURCES,
        "storage": {"type": "badger", "size": "7Gi", "storageClassName": "Not_A_Class"},
        "query": {"auth": {"mode": "bearer", "proxyImage": "bad image"}},
    },
    "metrics": {
        "enabled": True,
        "prometheus": {"image": "bad image", "resources": RESOURCES, "storageSize": "9Gi"},
    },
}
PIPELINE_PLAIN: dict[str, Any] = {
    "jaeger": {"storage": {"type": "badger"}, "query": {"auth": {"mode": "bearer"}}},
    "metrics": {"enabled": True},
}


def unchecked(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (obj["kind"], obj["metadata"]["name"]): obj for obj in children if not needs_dry_run(obj)
    }


def test_the_checked_kinds_are_the_workloads_and_claims() -> None:
    assert {"StatefulSet", "Deployment", "PersistentVolumeClaim"} == CHECKED_KINDS
    children = render_kvcluster(kvcluster(**KV_FREE_FORM), pipeline())
    assert [obj["kind"] for obj in checked_children(children)] == ["StatefulSet"]
    kinds = {obj["kind"] for obj in render_pipeline(pipeline(**PIPELINE_FREE_FORM))}
    assert {"Deployment", "PersistentVolumeClaim"} <= kinds


def test_a_kvclusters_free_form_values_reach_only_its_statefulset() -> None:
    plain = render_kvcluster(kvcluster(tracing={"pipelineRef": {"name": "traces"}}), pipeline())
    wild = render_kvcluster(kvcluster(**KV_FREE_FORM), pipeline())
    assert unchecked(wild) == unchecked(plain)
    sts = checked_children(wild)[0]
    pod = sts["spec"]["template"]["spec"]
    assert pod["affinity"] == {"podAntiAffinity": "bad"}  # it did reach the checked one
    assert pod["containers"][0]["resources"] == RESOURCES


def test_a_pipelines_free_form_values_reach_only_its_workloads_and_claims() -> None:
    plain = render_pipeline(pipeline(**PIPELINE_PLAIN))
    wild = render_pipeline(pipeline(**PIPELINE_FREE_FORM))
    assert unchecked(wild) == unchecked(plain)
    checked = [obj for obj in wild if needs_dry_run(obj)]
    text = repr(checked)
    assert "bad image" in text and "Not_A_Class" in text and "2Gi" in text
