"""``kvtrace query-proxy``: an authenticating reverse proxy in front of Jaeger's query API
(``spec.jaeger.query.auth.mode: bearer | oidc``; docs/security.md, "Query access").

The Jaeger binary (v1.76.0) has no bearer-token or OIDC server authenticator, so the operator
runs this proxy as a sidecar in the Jaeger pod: Jaeger's query servers listen on 127.0.0.1
only, the proxy on the query port, and every request needs ``Authorization: Bearer TOKEN``.

Layers (import-linter keeps them): ``settings``, ``tokens``, ``jwtcheck`` and ``headers`` are
pure (flags to settings, static token matching, JWT/JWK checks, what crosses the proxy); ``jwks`` fetches the issuer's keys;
``server`` is the aiohttp edge (authentication, forwarding, file and certificate reloads);
``cli`` registers the command.
"""
