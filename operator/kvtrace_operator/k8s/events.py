"""Kubernetes Events about our resources (``kubectl describe`` shows them)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event

from kvtrace.shared.api import FIELD_MANAGER

COMPONENT = FIELD_MANAGER
MAX_MESSAGE = 1024
log = logging.getLogger(__name__)


def build_event(
    owner: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about ``owner``."""
    meta = owner["metadata"]
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "action": reason,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    client: AsyncClient, owner: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
) -> None:
    """Post an event; failing to post one is logged, never fatal."""
    try:
        event: Any = Event.from_dict(build_event(owner, reason, message, type_))
        await client.create(event)
    except Exception as exc:  # noqa: BLE001 - an event is never worth a failed reconcile
        log.warning("could not post event %s on %s: %s", reason, owner["metadata"]["name"], exc)
