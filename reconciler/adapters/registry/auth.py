"""The registry auth protocol: Basic, and Bearer tokens per scope set from the realm
a 401 challenge names (distribution docs/spec/auth/token.md, oauth.md; RFC 7235).

Stage: edge. Credentials come from `credentials` (auth files); tokens are cached
per scope set until they expire.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time

import httpx

from reconciler.adapters.registry.credentials import Credential
from reconciler.adapters.registry.transport import Scopes, Transport, _Access, _Unavailable
from reconciler.errors import RegistryError


class Authentication(Transport):
    """Answers the transport's auth hooks."""

    def _auth_header(self, a: _Access) -> dict[str, str]:
        h = a.host
        if h.challenge == "basic":
            cred = self._credential(a)
            if cred is not None:
                return {"Authorization": _basic(cred.username, cred.password)}
        elif h.challenge == "bearer":
            scopes = a.scopes
            now = time.monotonic()
            for granted, (token, expires) in h.tokens.items():
                if expires > now and scopes <= granted:
                    return {"Authorization": f"Bearer {token}"}
            return {"Authorization": f"Bearer {self._fetch_token(a, scopes)}"}
        return {}

    def _answer_challenge(self, a: _Access, response: httpx.Response) -> None:
        """Learn from a 401 how to authenticate, and get what is needed (RFC 7235)."""
        h = a.host
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if h.challenge == "basic" or self._credential(a) is None:
                raise self._auth_error(a, response)
            h.challenge = "basic"
        elif scheme == "bearer" and params.get("realm"):
            if h.challenge == "bearer":
                # We sent a token and it was refused: expired, or short of a scope.
                h.tokens = {k: v for k, v in h.tokens.items() if not a.scopes <= k}
            h.challenge, h.realm, h.service = "bearer", params["realm"], params.get("service")
            # Ask for what we need plus whatever the registry named.
            self._fetch_token(a, a.scopes | _parse_scopes(params.get("scope", "")))
        else:
            raise RegistryError(
                f"{h.name} asks for authentication we cannot answer "
                f"({scheme or 'no WWW-Authenticate challenge'}); it must offer Basic or Bearer"
            )

    def _fetch_token(self, a: _Access, scopes: Scopes) -> str:
        """A Bearer token for `scopes` from the realm (distribution docs/spec/auth/token.md)."""
        h = a.host
        realm = httpx.URL(h.realm or "")
        realm_host = realm.netloc.decode()
        if realm.scheme != "https" and not (h.insecure or realm_host in self.insecure):
            raise RegistryError(
                f"{h.name}: its token service {realm.copy_with(query=None)} is not HTTPS; "
                f"refusing to send credentials in clear. Name {realm_host} with "
                f"--insecure-registry if that is intended"
            )
        client = self._realm_clients.get(str(realm.copy_with(path="/", query=None)))
        if client is None:
            client = self._new_client(realm_host if realm.scheme == "https" else None)
            self._realm_clients[str(realm.copy_with(path="/", query=None))] = client
        cred = self._credential(a)
        ordered = _format_scopes(scopes)
        self.requests += 1
        try:
            if cred is not None and cred.identity_token:
                # OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md).
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.identity_token,
                    "service": h.service or "",
                    "scope": " ".join(ordered),
                    "client_id": "reconciler",
                }
                r = client.post(realm, data=form)
            else:
                pairs: list[tuple[str, str | int | float | bool | None]] = [
                    ("scope", s) for s in ordered
                ]
                if h.service:
                    pairs.insert(0, ("service", h.service))
                query = httpx.QueryParams(pairs)
                auth = (cred.username, cred.password) if cred is not None else None
                r = client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(h, exc, f"token service {realm_host}") from None
        if r.status_code in (401, 403):
            who = f"the credentials {cred.describe()}" if cred else "anonymous access"
            raise RegistryError(
                f"{h.name}: the token service refused {who} ({r.status_code}); "
                f"log in again with `skopeo login {h.name}` or fix the auth file"
            )
        if r.status_code == 429 or r.status_code >= 500:
            raise _Unavailable(f"{h.name}: token service answered {r.status_code}", None)
        token: str | None = None
        expires_in = 60.0
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            body = r.json()
            token = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        if r.status_code != 200 or not isinstance(token, str) or not token:
            raise RegistryError(
                f"{h.name}: token service {realm.copy_with(query=None)} gave no token "
                f"({r.status_code}); check the registry's auth configuration"
            )
        # Renew 10 s early (the spec's minimum lifetime is 60 s).
        h.tokens[scopes] = (token, time.monotonic() + max(expires_in - 10, 5))
        return token

    def _credential(self, a: _Access) -> Credential | None:
        """The login for this repository (auth files may key by namespace)."""
        if self.credentials is None:
            return None
        return self.credentials.lookup(a.host.name, a.path)

    def _auth_error(self, a: _Access, response: httpx.Response) -> RegistryError:
        h = a.host
        cred = self._credential(a)
        _, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if cred is None:
            if self.credentials is None:
                where = "no auth file given"
            else:
                where = "in " + self.credentials.describe_checked()
                where += "".join(f"; {n}" for n in self.credentials.notes_for(h.name))
            return RegistryError(
                f"{h.name}: authentication required for {a.action} on {a.path} (no "
                f"credentials found for {h.name} {where}); log in with "
                f"`skopeo login {h.name}` or pass --authfile"
            )
        if params.get("error") == "insufficient_scope":
            return RegistryError(
                f"{h.name}: the credentials {cred.describe()} do not allow {a.action} on "
                f"{a.path}; ask the registry's admin for {a.action} access"
            )
        return RegistryError(
            f"{h.name}: the credentials {cred.describe()} were rejected for {a.action} on "
            f"{a.path} (401 unauthorized); log in again with `skopeo login {h.name}`"
        )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _parse_scopes(text: str) -> Scopes:
    """`repository:a/b:pull,push repository:c:pull` → {(resource, action), ...}."""
    atoms = set()
    for scope in text.split():
        resource, _, actions = scope.rpartition(":")
        atoms |= {(resource, a) for a in actions.split(",") if a and resource}
    return frozenset(atoms)


def _format_scopes(scopes: Scopes) -> list[str]:
    """The inverse: one `type:name:actions` string per resource, sorted."""
    by_resource: dict[str, set[str]] = {}
    for resource, action in scopes:
        by_resource.setdefault(resource, set()).add(action)
    return [f"{r}:{','.join(sorted(a))}" for r, a in sorted(by_resource.items())]


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` → ("bearer", {...}) (RFC 7235)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params
