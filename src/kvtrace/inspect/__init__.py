"""Inspection of kvtrace clusters from the outside: ``kvtrace status``, ``kvtrace doctor``,
``kvtrace trace`` and ``kvtrace traces``.

Every module keeps the same split: pure functions build reports from objects already fetched
(plain dicts, decoded spans), unit-tested directly; the I/O (Kubernetes API reads, OTLP and
Jaeger HTTP calls) happens at the edge, in :mod:`kvtrace.inspect.kube` and the ``gather``
functions.
"""
