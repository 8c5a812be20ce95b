"""Layer 2: talking to the API server (lightkube): server-side apply with the field manager
``kvtrace-operator``, pruning children that are no longer rendered, reading children's
status, writing our resources' status, and events. No kopf here."""

from kvtrace_operator.k8s.apply import (
    PRUNABLE_KINDS,
    Applied,
    Changes,
    ChildKey,
    Recreating,
    Rejected,
    Seen,
    apply_children,
    child_key,
    drifted,
    existing_children,
    owned_by,
    seen,
    stale_children,
)
from kvtrace_operator.k8s.client import (
    FIRST,
    RECONCILE,
    KVCluster,
    TracingPipeline,
    count_requests,
    get_object,
    make_client,
    patch_status,
    refresh_pool,
    request_priority,
    resource_class,
)
from kvtrace_operator.k8s.events import build_event, post_event
from kvtrace_operator.k8s.members import drained, member_credentials, member_url, member_views
from kvtrace_operator.k8s.observe import read_workloads, workloads_of
from kvtrace_operator.k8s.permissions import Permissions, forbidden_message, is_forbidden, needed
from kvtrace_operator.k8s.secrets import (
    SecretData,
    TokenSetWrite,
    read_secrets,
    read_tokens,
    write_token_set,
)

__all__ = [
    "FIRST",
    "RECONCILE",
    "PRUNABLE_KINDS",
    "Permissions",
    "Applied",
    "Changes",
    "ChildKey",
    "SecretData",
    "Seen",
    "TokenSetWrite",
    "Recreating",
    "Rejected",
    "KVCluster",
    "TracingPipeline",
    "apply_children",
    "build_event",
    "drained",
    "drifted",
    "existing_children",
    "forbidden_message",
    "is_forbidden",
    "child_key",
    "count_requests",
    "get_object",
    "make_client",
    "member_url",
    "member_credentials",
    "member_views",
    "needed",
    "owned_by",
    "patch_status",
    "post_event",
    "read_secrets",
    "read_tokens",
    "read_workloads",
    "refresh_pool",
    "request_priority",
    "resource_class",
    "seen",
    "stale_children",
    "workloads_of",
    "write_token_set",
]
