"""Read-only Kubernetes API access for the inspection commands (the I/O edge).

Only ``get`` and ``list`` calls, with a plain kubeconfig: ``--kubeconfig``, else
``$KUBECONFIG``, else ``~/.kube/config`` (in a pod: its service account). Every failure
becomes an :class:`InspectError` that says what was asked and why it failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kvtrace.inspect.errors import InspectError, Unreachable
from kvtrace.shared import api

T = TypeVar("T")
RETRY_429 = (0.5, 1.0, 2.0, 4.0)  # seconds before each retry of a request the server throttled

KINDS = {
    # kind: (module of lightkube.resources, class name) or None for ours
    "KVCluster": None,
    "TracingPipeline": None,
    "Pod": ("core_v1", "Pod"),
    "Service": ("core_v1", "Service"),
    "ConfigMap": ("core_v1", "ConfigMap"),
    "Secret": (
        "core_v1",
        "Secret",
    ),  # doctor: only the collector's bearer token (spec.security.auth)
    "Event": ("core_v1", "Event"),
    "StatefulSet": ("apps_v1", "StatefulSet"),
    "Deployment": ("apps_v1", "Deployment"),
    "EndpointSlice": ("discovery_v1", "EndpointSlice"),
    "MutatingWebhookConfiguration": ("admissionregistration_v1", "MutatingWebhookConfiguration"),
}
Objects = list[dict[str, Any]]  # (the class below has a method named list)


def _resource(kind: str) -> Any:
    import importlib

    from lightkube.generic_resource import create_namespaced_resource

    where = KINDS[kind]
    if where is None:
        return create_namespaced_resource(api.GROUP, api.VERSION, kind, api.PLURALS[kind])
    module = importlib.import_module(f"lightkube.resources.{where[0]}")
    return getattr(module, where[1])


def _to_dict(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return data


class Kube:
    """A read-only view of one cluster: ``get`` and ``list`` returning plain dicts."""

    def __init__(
        self, kubeconfig: str | None = None, *, context: str | None = None, timeout: float = 10.0
    ) -> None:
        try:
            import httpx2
            from lightkube import Client, ConfigError, KubeConfig
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
            raise InspectError(
                f"this command needs lightkube ({exc.name} is not installed): "
                "pip install 'kvtrace[operator]'"
            ) from exc
        path = kubeconfig or None
        try:
            if path:
                if not Path(path).expanduser().is_file():
                    raise InspectError(f"--kubeconfig: {path} is not a file")
                config = KubeConfig.from_file(path)
            else:
                config = KubeConfig.from_env()
        except ConfigError as exc:
            where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise InspectError(
                f"cannot load a kubeconfig ({where}; set --kubeconfig or KUBECONFIG): {exc}"
            ) from exc
        selected: Any = config
        if context:
            try:
                selected = config.get(context_name=context)
            except ConfigError as exc:
                raise InspectError(f"--context: {exc} in the kubeconfig") from exc
        self.config = selected
        self.server = self._server(selected)
        self.client = Client(config=selected, timeout=httpx2.Timeout(timeout))
        self.default_namespace = self.client.namespace or "default"

    @staticmethod
    def _server(config: Any) -> str:
        try:
            single = config.get() if hasattr(config, "get") else config
            return str(single.cluster.server)
        except Exception:  # noqa: BLE001 - only used in messages
            return "the API server"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import httpx2
        from lightkube import ApiError

        for attempt in range(len(RETRY_429) + 1):
            try:
                return fn()
            except ApiError as exc:
                if exc.status.code == 429 and attempt < len(RETRY_429):
                    # "storage is (re)initializing" just after a CRD is installed; API priority
                    # and fairness: the server asks to come back later.
                    time.sleep(RETRY_429[attempt])
                    continue
                raise self._api_error(what, exc) from exc
            except (httpx2.TransportError, OSError) as exc:
                raise Unreachable(
                    f"cannot reach the API server at {self.server} to {what}: {exc} "
                    "(check --kubeconfig / KUBECONFIG and that the cluster is up)"
                ) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _api_error(what: str, exc: Any) -> InspectError:
        code = exc.status.code
        if code in (401, 403):
            return InspectError(
                f"the API server refused to {what} ({code} {exc.status.reason}): "
                f"{exc.status.message}; kvtrace needs get and list on it"
            )
        if code == 404 and "could not find the requested resource" in str(exc.status.message or ""):
            return InspectError(
                f"cannot {what}: the API server does not serve it (are the kvtrace "
                "CRDs installed? kubectl apply -f crds/)"
            )
        return InspectError(f"cannot {what}: {code} {exc.status.message}")

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        from lightkube import ApiError

        res = _resource(kind)

        def fetch() -> dict[str, Any] | None:
            try:
                return _to_dict(self.client.get(res, name, namespace=namespace))
            except ApiError as exc:
                if exc.status.code == 404 and "could not find the requested resource" not in str(
                    exc.status.message or ""
                ):
                    return None
                raise

        return self._call(f"get {kind} {namespace}/{name}", fetch)

    def list(
        self, kind: str, namespace: str | None, labels: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (None: all namespaces) matching ``labels``."""
        from lightkube import ALL_NS

        res = _resource(kind)
        ns = ALL_NS if namespace is None else namespace
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        return self._call(
            f"list {kind} {where}",
            lambda: [_to_dict(o) for o in self.client.list(res, namespace=ns, labels=labels)],
        )

    def list_global(self, kind: str, labels: dict[str, Any] | None = None) -> Objects | None:
        """Cluster-scoped objects of ``kind`` matching ``labels``; None when not permitted."""
        res = _resource(kind)
        try:
            return self._call(
                f"list {kind}", lambda: [_to_dict(o) for o in self.client.list(res, labels=labels)]
            )
        except InspectError as exc:
            if "refused" in str(exc):
                return None
            raise
