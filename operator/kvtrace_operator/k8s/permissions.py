"""Requests the API server refused for lack of permission (HTTP 403): which verb on which
resource, in words for a condition and an event."""

from __future__ import annotations

import re

from lightkube import ApiError

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
