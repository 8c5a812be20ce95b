"""Requests the API server refused for lack of permission (HTTP 403): which verb on which
resource, in words for a condition and an event; and what a render needs, checked against the
operator's own permissions before anything of it is written (Permissions)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.authorization_v1 import SelfSubjectRulesReviewSpec
from lightkube.models.meta_v1 import Status
from lightkube.resources.authorization_v1 import SelfSubjectRulesReview

from kvtrace_operator.k8s.client import resource_class, to_dict

# kube-apiserver's RBAC denial: ... cannot VERB resource "RES" in API group "GROUP" in the namespace "NS"
_DENIAL = re.compile(
    r'cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<namespace>[^"]+)")?'
)


def is_forbidden(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status.code == 403


def describe_denial(message: str) -> str:
    """ "may not VERB RESOURCE[.GROUP] in namespace NS" from the API server's message, or the
    message itself when it has another shape."""
    match = _DENIAL.search(message)
    if match is None:
        return message
    resource = match["resource"] + (f".{match['group']}" if match["group"] else "")
    where = f" in namespace {match['namespace']}" if match["namespace"] else ""
    return f"may not {match['verb']} {resource}{where}"


def forbidden_message(exc: ApiError) -> str:
    """For the Authorized condition: what was refused and what to do about it."""
    return (
        f"the operator {describe_denial(exc.status.message or '')} (HTTP 403): grant it in the "
        "operator's Role/ClusterRole (charts/kvtrace-operator/templates/_rbac.tpl lists every "
        "rule); reconciling resumes on its own once it is granted"
    )


# ---- what a render needs, checked before anything of it is written --------------------------

Need = tuple[str, str, str]  # (API group, resource plural, verb)
RULES_TTL_S = 30.0  # how long a namespace's rules that allowed everything asked are trusted


def needed(children: Iterable[Mapping[str, Any]]) -> list[Need]:
    """What applying ``children`` asks of the API server: ``patch`` (server-side apply) of
    every kind, and ``get`` and ``create`` of Secrets (the generated ones are created, the
    ones the operator reads are read)."""
    needs: set[Need] = set()
    for obj in children:
        info = resource_class(obj["apiVersion"], obj["kind"])._api_info  # noqa: SLF001 - lightkube's
        needs.add((info.resource.group, info.plural, "patch"))
        if obj["kind"] == "Secret":
            needs |= {("", "secrets", "get"), ("", "secrets", "create")}
    return sorted(needs)


def _covers(values: Iterable[str] | None, wanted: str) -> bool:
    found = set(values or ())
    return "*" in found or wanted in found


def allowed(rules: Iterable[Mapping[str, Any]], need: Need) -> bool:
    """Whether RBAC ``rules`` (a SelfSubjectRulesReview's resourceRules) grant ``need`` on
    any object of its resource (a rule naming objects, ``resourceNames``, does not)."""
    group, resource, verb = need
    return any(
        not rule.get("resourceNames")
        and _covers(rule.get("verbs"), verb)
        and _covers(rule.get("apiGroups"), group)
        and _covers(rule.get("resources"), resource)
        for rule in rules
    )


def refusal(namespace: str, need: Need) -> ApiError:
    """The 403 the API server would answer, in its words (describe_denial reads them)."""
    group, resource, verb = need
    message = (
        f"the operator's permissions (SelfSubjectRulesReview): cannot {verb} resource "
        f'"{resource}" in API group "{group}" in the namespace "{namespace}"'
    )
    return ApiError(status=Status(code=403, reason="Forbidden", message=message, status="Failure"))


class Permissions:
    """The operator's own permissions per namespace, from one SelfSubjectRulesReview (which
    every authenticated user may create), so a render is checked before anything of it is
    written: a refused request half-way through an apply would leave it half-applied. Rules
    that allowed everything asked are kept ``ttl`` seconds (one request per namespace then,
    not one per render); a refusal is always checked against fresh rules. When the API server
    cannot list them completely (another authorizer than RBAC), nothing is refused here: each
    request's own answer says."""

    def __init__(self, client: AsyncClient, ttl: float = RULES_TTL_S) -> None:
        self.client, self.ttl = client, ttl
        self._rules: dict[str, tuple[float, list[dict[str, Any]] | None]] = {}
        self._reading: dict[str, asyncio.Lock] = {}  # many reconciles at once: one review

    async def rules(self, namespace: str, *, fresh: bool) -> list[dict[str, Any]] | None:
        asked = time.monotonic()
        async with self._reading.setdefault(namespace, asyncio.Lock()):
            kept = self._rules.get(namespace)
            if kept is not None and (
                kept[0] >= asked or (not fresh and asked - kept[0] < self.ttl)
            ):
                return kept[1]  # asked for after this one asked, or recent enough
            return await self._review(namespace)

    async def _review(self, namespace: str) -> list[dict[str, Any]] | None:
        started = time.monotonic()
        review = SelfSubjectRulesReview(spec=SelfSubjectRulesReviewSpec(namespace=namespace))
        try:
            status = to_dict(await self.client.create(review)).get("status") or {}
        except ApiError as exc:
            if not is_forbidden(exc):
                raise
            status = {"incomplete": True}  # no system:basic-user: the requests' answers decide
        rules = None if status.get("incomplete") else list(status.get("resourceRules") or ())
        self._rules[namespace] = (started, rules)
        return rules

    async def check(self, namespace: str, needs: Iterable[Need]) -> None:
        """Raise the ApiError (403) of the first need the rules do not grant."""
        needs = list(needs)
        rules = await self.rules(namespace, fresh=False)
        if rules is not None and not all(allowed(rules, need) for need in needs):
            rules = await self.rules(namespace, fresh=True)
        if rules is None:
            return
        for need in needs:
            if not allowed(rules, need):
                raise refusal(namespace, need)
