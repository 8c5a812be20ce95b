"""Parts both custom resources share: Secret references and ``security.tls``."""

from __future__ import annotations

from dataclasses import dataclass

from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.fields import Fields

TLS_MODES = ("managed", "certManager", "secret")


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Secret in the resource's namespace."""

    name: str
    key: str

    @classmethod
    def read(cls, fields: Fields | None) -> SecretKeyRef | None:
        if fields is None:
            return None
        return cls(name=fields.string("name"), key=fields.string("key"))

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "key": self.key}


@dataclass(frozen=True)
class TokenHolder:
    """A named client with its own token: a KV API client (KVCluster
    ``security.auth.clients[]``) or a collector consumer (TracingPipeline
    ``security.auth.consumers[]``); ``token_secret_ref`` None: the operator generates it."""

    name: str
    token_secret_ref: SecretKeyRef | None

    @classmethod
    def read_all(cls, fields: Fields, name: str) -> tuple[TokenHolder, ...]:
        return tuple(
            cls(item.string("name"), SecretKeyRef.read(item.opt_obj("tokenSecretRef")))
            for item in fields.items(name)
        )


@dataclass(frozen=True)
class IssuerRef:
    """A cert-manager issuer (``tls.mode: certManager``)."""

    name: str
    kind: str | None
    group: str | None

    @classmethod
    def read(cls, fields: Fields | None) -> IssuerRef | None:
        if fields is None:
            return None
        return cls(fields.string("name"), fields.opt_string("kind"), fields.opt_string("group"))


@dataclass(frozen=True)
class TLS:
    """``spec.security.tls``: ``mode`` None means the operator's default for the resource."""

    enabled: bool
    mode: str | None
    secret_name: str | None
    issuer_ref: IssuerRef | None
    duration: Duration
    renew_before: Duration
    ca_duration: Duration
    ca_renew_before: Duration

    @classmethod
    def read(cls, fields: Fields) -> TLS:
        mode = fields.enum("mode", TLS_MODES) if fields.opt_string("mode") else None
        return cls(
            enabled=fields.boolean("enabled"),
            mode=mode,
            secret_name=fields.opt_string("secretName"),
            issuer_ref=IssuerRef.read(fields.opt_obj("issuerRef")),
            duration=fields.duration("duration"),
            renew_before=fields.duration("renewBefore"),
            ca_duration=fields.duration("caDuration"),
            ca_renew_before=fields.duration("caRenewBefore"),
        )
