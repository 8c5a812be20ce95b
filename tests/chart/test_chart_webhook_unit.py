"""The chart's injection webhook values (docs/injection.md): on by default, the operator gets
`--webhook-port`/`--webhook-service` naming the rendered Service (port 443 to the container's
webhook port), POD_NAMESPACE, and exactly the RBAC the webhook path uses (k8s/injection.py,
handlers/webhook.py, handlers/instrumented.py); `webhook.enabled=false` removes all of it.
The rendered arguments parse with the real `kvtrace operator run` parser."""

from __future__ import annotations

from typing import Any

import pytest
from chartlib import CHART, NAMESPACED_VALUES, helm, rbac_rules, template
from chartlib import parse_operator_args as parse

from kvtrace_operator.render import webhook as webhook_render

pytestmark = pytest.mark.unit

OFF = ("--set", "webhook.enabled=false")
# (group, resource, verbs) the webhook path adds to what the operator holds without it.
WEBHOOK_RULES = [
    ("apps", "replicasets", {"get"}),  # k8s/injection.py workload_owner
    ("apps", "daemonsets", {"get", "patch"}),  # get_workload, roll (restart on change)
]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def verbs(
    rules: list[dict[str, Any]], group: str, resource: str, name: str | None = None
) -> set[str]:
    """Verbs granted on ``resource`` (on the object ``name`` when given, else on any)."""
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        if not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"])
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("extra", [(), NAMESPACED_VALUES], ids=["cluster", "namespaced"])
def test_webhook_is_on_by_default_and_reaches_its_service(extra: tuple[str, ...]) -> None:
    objects = template(*extra)
    main = container(objects)
    parsed = parse(main["args"])
    services = [o for o in objects if o["kind"] == "Service"]
    service = next(s for s in services if s["metadata"]["name"].endswith("-webhook"))
    assert parsed.webhook_port == 9443
    assert parsed.webhook_service == ("kvtrace-system", service["metadata"]["name"])
    assert service["metadata"]["namespace"] == "kvtrace-system"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443  # the port the operator's configuration names
    named = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert named[port["targetPort"]] == 9443
    selector = service["spec"]["selector"]
    pod_labels = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"][
        "metadata"
    ]["labels"]
    assert selector.items() <= pod_labels.items()
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize("extra", [(), NAMESPACED_VALUES], ids=["cluster", "namespaced"])
def test_rbac_grants_what_the_webhook_uses_and_patches_only_its_configuration(
    extra: tuple[str, ...],
) -> None:
    objects = template(*extra)
    rules = [rule for _, rule in rbac_rules(objects)]
    parsed = parse(container(objects)["args"])
    mine = webhook_render.configuration_name(list(parsed.namespaces or []))
    group, resource = "admissionregistration.k8s.io", "mutatingwebhookconfigurations"
    assert verbs(rules, group, resource, mine) == {"create", "patch"}
    assert verbs(rules, group, resource) == {"create"}, "patch must name the configuration"
    cluster_rules = [
        rule
        for obj in objects
        if obj["kind"] == "ClusterRole"
        for rule in obj["rules"]
        if resource in rule["resources"]
    ]
    assert len(cluster_rules) == 2  # cluster-scoped: in the ClusterRole whatever the scope
    for group, resource, wanted in WEBHOOK_RULES:
        assert verbs(rules, group, resource) == wanted, resource
    # Already held for the operator's own children: the workloads' token Secrets and events.
    assert {"get", "create", "patch"} <= verbs(rules, "", "secrets")
    assert {"get", "patch"} <= verbs(rules, "apps", "deployments")
    assert {"get", "patch"} <= verbs(rules, "apps", "statefulsets")
    assert "create" in verbs(rules, "", "events")
    # A Job's pods are injected, but a Job is never read nor rolled (render/injection.py
    # RESTART_KINDS).
    assert not verbs(rules, "batch", "jobs")


@pytest.mark.parametrize("extra", [(), NAMESPACED_VALUES], ids=["cluster", "namespaced"])
def test_disabling_the_webhook_removes_service_args_env_and_rbac(extra: tuple[str, ...]) -> None:
    objects = template(*extra, *OFF)
    main = container(objects)
    assert not [a for a in main["args"] if a.startswith("--webhook")]
    assert parse(main["args"]).webhook_port == 0
    assert "POD_NAMESPACE" not in {e["name"] for e in main["env"]}
    assert "webhook" not in {p["name"] for p in main["ports"]}
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert not [n for n in names if n.endswith("-webhook")], names
    rules = [rule for _, rule in rbac_rules(objects)]
    assert not verbs(rules, "admissionregistration.k8s.io", "mutatingwebhookconfigurations")
    for group, resource, _ in WEBHOOK_RULES:
        assert not verbs(rules, group, resource), resource


def test_webhook_port_is_a_value() -> None:
    args = container(template("--set", "webhook.port=10443"))["args"]
    assert parse(args).webhook_port == 10443


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (("webhook.port=8080",), "webhook.port"),
        (("webhook.port=9090",), "webhook.port"),
        (("replicaCount=2", "peering.name=kvtrace"), "webhook.enabled"),
    ],
)
def test_bad_webhook_combinations_are_refused_naming_the_value(
    settings: tuple[str, ...], named: str
) -> None:
    extra = [arg for setting in settings for arg in ("--set", setting)]
    proc = helm("template", "t", str(CHART), *extra, check=False)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
