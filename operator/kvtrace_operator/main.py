"""Layer 4: `kvtrace operator run`. One startup handler holds every kopf setting; the
handlers are registered into kopf's registry with the options from the command line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from aiohttp import web

from kvtrace.shared import api
from kvtrace_operator import handlers, k8s, tracing
from kvtrace_operator.handlers import webhook
from kvtrace_operator.handlers.metrics import CONTENT_TYPE, METRICS
from kvtrace_operator.render.images import images_from_args

FINALIZER = f"{api.GROUP}/finalizer"
ANNOTATIONS_PREFIX = api.GROUP


def configure(settings: kopf.OperatorSettings, args: Any) -> None:
    """Every kopf setting the operator relies on, in one place."""
    # No deletion handler needs one (children go by owner references), but should one ever
    # be added, its finalizer is ours, not kopf's default.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # Several replicas coordinate through a KopfPeering object only when asked to.
    settings.peering.standalone = args.peering is None
    if args.peering is not None:
        settings.peering.name = args.peering
        settings.peering.mandatory = True
    # Watches end server-side before any proxy or load balancer cuts them silently; the
    # client gives up a little later.
    settings.watching.server_timeout = int(args.watch_timeout)
    settings.watching.client_timeout = args.watch_timeout + 30
    settings.watching.connect_timeout = 10
    # The children are watched through our label, filtered by the API server: the operator
    # never streams the cluster's other ConfigMaps, Services... Secrets excepted: the ones a
    # pipeline references are the user's (handlers/secret_watch.py filters them by an index).
    for api_version, kind in k8s.PRUNABLE_KINDS:
        group, _, version = api_version.rpartition("/")
        if kind == "Secret":
            continue
        settings.watching.label_selectors[(group, version, kind)] = (
            f"{api.MANAGED_BY_LABEL}={api.MANAGED_BY}"
        )
    # kopf's own log lines become events only for warnings and errors; actions get our
    # own events (Created, Updated, Deleted, Scaling, Ready, InvalidSpec...).
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = api.FIELD_MANAGER
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
    settings.execution.max_workers = 4
    # A resource being deleted goes once its timers exited; they exit at once when stopped
    # (handlers/common.py unless_stopped), and kopf looks again after this many seconds, not
    # its default minute, if one was still finishing.
    settings.background.cancellation_polling = 1.0


async def serve_metrics(port: int) -> web.AppRunner | None:
    """``GET /metrics`` (Prometheus text) on ``port``; None when the port is 0."""
    if not port:
        return None

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=METRICS.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - scraped from the pod network
    return runner


def handler_options(args: Any) -> handlers.Options:
    """What the handlers are registered with, from the parsed `kvtrace operator run` flags."""
    return handlers.Options(
        resync_interval=getattr(args, "resync_interval", 60.0),
        retry_backoff=getattr(args, "retry_backoff", 5.0),
        drain_timeout=getattr(args, "drain_timeout", 300.0),
        canary_interval=getattr(args, "canary_interval", 60.0),
        canary_timeout=getattr(args, "canary_timeout", 20.0),
        images=images_from_args(args),
        webhook=bool(getattr(args, "webhook_port", 0)),
    )


def webhook_serving(args: Any) -> webhook.Serving | None:
    """Where the injection webhook is served, None when it is off (``--webhook-port 0``)."""
    port = int(getattr(args, "webhook_port", 0) or 0)
    if not port:
        return None
    return webhook.Serving(
        port=port,
        host=getattr(args, "webhook_host", "127.0.0.1"),
        service=getattr(args, "webhook_service", None),
    )


def run(args: Any) -> int:
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    registry = kopf.get_default_registry()
    options = handler_options(args)
    serving = webhook_serving(args)
    namespaces = list(args.namespaces or [])
    trace_pipeline = getattr(args, "trace_pipeline", None)
    if trace_pipeline:
        tracing.enable(*trace_pipeline)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        configure(settings, args)
        # The run's state (handlers/runtime.py): kopf hands its live indices to startup too.
        memo.runtime = handlers.start(k8s.make_client(), options, kwargs)
        await k8s.refresh_pool(memo.runtime.client)  # the HTTP stack loads now, not mid-burst
        METRICS.state.sizes = memo.runtime.sizes
        memo.metrics = await serve_metrics(getattr(args, "metrics_port", 0))
        if serving is not None:
            settings.admission.server, ca_pem = webhook.server(serving)
            settings.admission.managed = None  # our own configuration (render/webhook.py)
            await webhook.install(memo.runtime.client, serving, ca_pem, namespaces)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        # The API client stays open: timers may still be finishing; the process exits next.
        if getattr(memo, "runtime", None) is not None:
            await memo.runtime.requests.close()
        if getattr(memo, "metrics", None) is not None:
            await memo.metrics.cleanup()
        await asyncio.to_thread(tracing.shutdown)  # flush the operator's last spans

    handlers.register(registry, options)
    liveness = args.liveness or None
    if liveness in ("none", "off"):
        liveness = None
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )
    )
    return 0
