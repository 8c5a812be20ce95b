"""Parts both custom resources share: Secret references and ``security.tls``."""

from __future__ import annotations

from dataclasses import dataclass

from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.fields import Fields

MANAGED, CERT_MANAGER, SECRET = "managed", "certManager", "secret"
TLS_MODES = (MANAGED, CERT_MANAGER, SECRET)


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Secret in the resource's namespace."""

    name: str
    key: str

    @classmethod
    def read(cls, fields: Fields | None) -> SecretKeyRef | None:
        if fields is None:
            return None
        return cls(name=fields.text("name"), key=fields.text("key"))

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
            cls(item.text("name"), SecretKeyRef.read(item.opt_obj("tokenSecretRef")))
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
        return cls(fields.text("name"), fields.opt_string("kind"), fields.opt_string("group"))


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

    @property
    def active_mode(self) -> str | None:
        """The mode in force: None when TLS is off; an unset ``mode`` means ``secret`` when
        ``secretName`` is given, else ``managed``."""
        if not self.enabled:
            return None
        return self.chosen_mode

    @property
    def chosen_mode(self) -> str:
        """The mode these settings choose, whether or not TLS is enabled (the CRD's rules
        check it either way)."""
        return self.mode or (SECRET if self.secret_name else MANAGED)

    @property
    def every_hop(self) -> bool:
        """Whether every server serves TLS with a leaf of the operator's CA or cert-manager
        (modes managed and certManager), not only the edge (mode secret)."""
        return self.active_mode in (MANAGED, CERT_MANAGER)

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
