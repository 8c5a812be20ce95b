"""The bearer token of ``spec.security.auth`` (on by default) for harnesses that run the
rendered collector without the operator and the kubelet (tests/tracing, tests/security,
benchmarks/tracing_overhead.py).

In a cluster the operator creates the token Secret, the kubelet mounts it as the edge
collector's token file and resolves the KV pods' ``secretKeyRef``. Here :func:`local_token`
writes such a file, :func:`use_token_file` points the rendered config's ``bearertokenauth``
extension at it, and :meth:`LocalToken.secrets` is the Secret data a pod's ``secretKeyRef``
resolves against; nothing else of the rendered config or environment changes.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvtrace_operator.render.defaults import apply_defaults_pipeline
from kvtrace_operator.render.security import AUTH_EXTENSION, auth, token_ref


@dataclass(frozen=True)
class LocalToken:
    value: str
    file: Path

    def secrets(self, pipeline: dict[str, Any]) -> dict[tuple[str, str], str]:
        """``{(secret name, key): token}`` for the Secret key the pipeline's pods reference
        (its ``tokenSecretRef`` or the generated ``NAME-otlp-token``); empty without auth."""
        spec = apply_defaults_pipeline(pipeline.get("spec"))
        if auth(spec) is None:
            return {}
        ref = token_ref(spec, pipeline["metadata"]["name"])
        return {(ref["name"], ref["key"]): self.value}

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
