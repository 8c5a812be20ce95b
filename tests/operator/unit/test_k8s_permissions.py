"""The permission check before a render is written (k8s/permissions.py): what a render needs,
whether RBAC rules grant it, the refusal in the API server's words, and the rules kept per
namespace only while they allowed everything (a refusal is always checked afresh)."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import kvcluster, pipeline

from kvtrace_operator import k8s
from kvtrace_operator.k8s.permissions import Permissions, allowed, needed, refusal
from kvtrace_operator.render import render_kvcluster

pytestmark = pytest.mark.unit

CHART_LIKE = [
    {"verbs": ["get", "list", "watch", "create", "patch", "delete"], "apiGroups": [""],
     "resources": ["configmaps", "secrets", "services", "serviceaccounts"]},
    {"verbs": ["get", "list", "watch", "create", "patch", "delete"], "apiGroups": ["apps"],
     "resources": ["statefulsets", "deployments"]},
    {"verbs": ["get", "list", "watch", "create", "patch", "delete"], "apiGroups": ["policy"],
     "resources": ["poddisruptionbudgets"]},
    {"verbs": ["get", "list", "watch", "create", "delete"], "apiGroups": ["networking.k8s.io"],
     "resources": ["networkpolicies"]},
]  # fmt: skip


def test_a_render_needs_patch_of_every_kind_and_get_and_create_of_secrets() -> None:
    needs = needed(render_kvcluster(kvcluster(), pipeline()))
    assert ("apps", "statefulsets", "patch") in needs
    assert ("networking.k8s.io", "networkpolicies", "patch") in needs
    assert {("", "secrets", "get"), ("", "secrets", "create"), ("", "secrets", "patch")} <= set(
        needs
    )
    assert needs == sorted(set(needs))


def test_rules_grant_by_verb_group_and_resource_wildcards_included_names_not() -> None:
    assert allowed(CHART_LIKE, ("apps", "statefulsets", "patch"))
    assert not allowed(CHART_LIKE, ("networking.k8s.io", "networkpolicies", "patch"))
    assert not allowed(CHART_LIKE, ("", "statefulsets", "patch"))  # wrong group
    assert allowed([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], ("x", "y", "z"))
    named = {
        "verbs": ["patch"],
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["a"],
    }
    assert not allowed([named], ("", "secrets", "patch"))


def test_the_refusal_reads_like_the_api_servers_403() -> None:
    exc = refusal("store", ("networking.k8s.io", "networkpolicies", "patch"))
    assert k8s.is_forbidden(exc)
    assert "may not patch networkpolicies.networking.k8s.io in namespace store" in (
        k8s.forbidden_message(exc)
    )
    core = k8s.forbidden_message(refusal("store", ("", "secrets", "get")))
    assert "may not get secrets in namespace store (HTTP 403)" in core


class Reviews:
    """A client answering SelfSubjectRulesReviews with ``rules`` (counted)."""

    def __init__(self, rules: list[dict[str, Any]], incomplete: bool = False) -> None:
        self.rules, self.incomplete, self.calls = rules, incomplete, 0

    async def create(self, review: Any) -> dict[str, Any]:
        self.calls += 1
        assert review.spec.namespace == "store"
        return {"status": {"resourceRules": self.rules, "incomplete": self.incomplete}}


async def test_rules_that_allowed_are_kept_and_a_refusal_is_checked_afresh() -> None:
    client = Reviews(CHART_LIKE)
    permissions = Permissions(client, ttl=60.0)  # type: ignore[arg-type]
    ok = [("apps", "statefulsets", "patch"), ("", "secrets", "get")]
    await permissions.check("store", ok)
    await permissions.check("store", ok)
    assert client.calls == 1  # kept
    denied = [*ok, ("networking.k8s.io", "networkpolicies", "patch")]
    with pytest.raises(Exception, match='cannot patch resource "networkpolicies"'):
        await permissions.check("store", denied)
    assert client.calls == 2  # looked at fresh rules before refusing
    client.rules = [*CHART_LIKE, {"verbs": ["patch"], "apiGroups": ["networking.k8s.io"],
                                  "resources": ["networkpolicies"]}]  # fmt: skip
    await permissions.check("store", denied)  # granted again: no refusal
    assert client.calls == 3


async def test_incomplete_rules_refuse_nothing() -> None:
    client = Reviews([], incomplete=True)
    await Permissions(client).check("store", [("apps", "statefulsets", "patch")])  # type: ignore[arg-type]


async def test_a_refused_review_refuses_nothing() -> None:
    """Without the right to create SelfSubjectRulesReviews (system:basic-user removed), the
    check steps aside: each request's own answer says."""

    class Refusing:
        async def create(self, review: Any) -> dict[str, Any]:
            raise refusal("", ("authorization.k8s.io", "selfsubjectrulesreviews", "create"))

    await Permissions(Refusing()).check("store", [("apps", "statefulsets", "patch")])  # type: ignore[arg-type]


async def test_reconciles_checking_at_once_share_one_review() -> None:
    import asyncio

    client = Reviews(CHART_LIKE)
    permissions = Permissions(client)  # type: ignore[arg-type]
    await asyncio.gather(
        *(permissions.check("store", [("apps", "statefulsets", "patch")]) for _ in range(20))
    )
    assert client.calls == 1
