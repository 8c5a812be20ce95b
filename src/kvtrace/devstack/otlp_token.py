"""The bearer token of ``spec.security.auth`` (on by default) for harnesses that run the
rendered collector without the operator and the kubelet (tests/tracing, tests/security,
benchmarks/tracing_overhead.py).

In a cluster the operator gives each consumer its own token (the pipeline's, each KVCluster's
``CLUSTER-otlp-client-token``), writes them all into the token set the kubelet mounts as the
edge collector's token file, and the kubelet resolves the KV pods' ``secretKeyRef``. Here one
token stands for every consumer: :func:`local_token` writes it as the token file,
:func:`use_token_file` points the rendered config's ``bearertokenauth`` extension at it, and
:meth:`LocalToken.secrets` is the Secret data a pod's ``secretKeyRef`` resolves against;
nothing else of the rendered config or environment changes.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvtrace_operator.render.consumer_tokens import TOKEN_KEY, client_token_secret
from kvtrace_operator.render.security import AUTH_EXTENSION, auth, token_ref
from kvtrace_operator.spec import parse_pipeline


class ConsumerSecrets(Mapping[tuple[str, str], str]):
    """``{(secret name, key): token}``: the pipeline's token Secret key and, since a KVCluster's
    Secret is named after the cluster, ``(NAME-otlp-client-token, token)`` of any cluster."""

    def __init__(self, pipeline_ref: tuple[str, str], token: str) -> None:
        self._pipeline_ref, self._token = pipeline_ref, token

    def _covers(self, ref: object) -> bool:
        if ref == self._pipeline_ref:
            return True
        return (
            isinstance(ref, tuple)
            and len(ref) == 2
            and ref[1] == TOKEN_KEY
            and isinstance(ref[0], str)
            and ref[0].endswith(client_token_secret(""))
        )

    def __getitem__(self, ref: tuple[str, str]) -> str:
        if not self._covers(ref):
            raise KeyError(ref)
        return self._token

    def __contains__(self, ref: object) -> bool:
        return self._covers(ref)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([self._pipeline_ref])

    def __len__(self) -> int:
        return 1


@dataclass(frozen=True)
class LocalToken:
    value: str
    file: Path

    def secrets(self, pipeline: dict[str, Any]) -> Mapping[tuple[str, str], str]:
        """``{(secret name, key): token}`` for the Secret keys consumers of the pipeline read
        (its ``tokenSecretRef`` or the generated ``NAME-otlp-token``, and every KVCluster's
        own token Secret); empty without auth."""
        spec = parse_pipeline(pipeline.get("spec"))
        if auth(spec) is None:
            return {}
        ref = token_ref(spec, pipeline["metadata"]["name"])
        return ConsumerSecrets((ref["name"], ref["key"]), self.value)

    @property
    def header(self) -> dict[str, str]:
        """The header an authenticated OTLP client sends."""
        return {"authorization": f"Bearer {self.value}"}


def local_token(directory: Path) -> LocalToken:
    """A random token (the generated Secret's alphabet, no trailing newline) in
    ``directory/token``."""
    directory.mkdir(parents=True, exist_ok=True)
    token = LocalToken(secrets.token_urlsafe(32), directory / "token")
    token.file.write_text(token.value)
    return token


def use_token_file(config: dict[str, Any], token_file: Path | None) -> dict[str, Any]:
    """A copy of a rendered collector config whose ``bearertokenauth`` extension reads
    ``token_file`` (the in-pod mount path otherwise). Configs without the extension (auth off,
    the sampling tier behind a load-balancing tier) come back unchanged; a config that has it
    needs a ``token_file``."""
    config = copy.deepcopy(config)
    extension = (config.get("extensions") or {}).get(AUTH_EXTENSION)
    if extension is not None:
        if token_file is None:
            raise ValueError(f"the config has the {AUTH_EXTENSION} extension: give token_file")
        extension["filename"] = str(token_file)
    return config
