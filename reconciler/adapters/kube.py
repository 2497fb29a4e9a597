"""Kubernetes: the few API calls the node agent makes, over the official client.

Stage: edge. Inputs: a kubeconfig file, or the in-cluster service account when none is
given. Outputs: plain dicts (the objects as the API server sent them) and our own
errors (`KubeError`, `Conflict`, `EvictionBlocked`), never a client exception.

Why the official `kubernetes` client rather than httpx against the REST API: it
already reads kubeconfig files and in-cluster service-account tokens (with rotation
and the cluster CA), which is most of the work and all of the security-sensitive part.
We keep it thin: callers get JSON-shaped dicts (`sanitize_for_serialization`), so the
agent never depends on the client's model classes, and every call has a timeout.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from reconciler.errors import ReconcilerError

REQUEST_TIMEOUT = 30.0


class KubeError(ReconcilerError):
    def __init__(self, message: str, *, status: int | None = None, transient: bool = True):
        super().__init__(message)
        self.status = status
        self.transient = transient


class Conflict(KubeError):
    """409: the object changed (stale resourceVersion) or already exists."""


class NotFound(KubeError):
    """404."""


class EvictionBlocked(KubeError):
    """429 on eviction: a PodDisruptionBudget does not allow it now."""


def _translate(exc: ApiException, what: str) -> KubeError:
    message = exc.reason or ""
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message") or message
        causes = (body.get("details") or {}).get("causes") or []
        if causes:
            message += " (" + "; ".join(c.get("message", "") for c in causes) + ")"
    except (ValueError, AttributeError):
        pass
    text = f"{what}: {exc.status} {message}".strip()
    if exc.status == 409:
        return Conflict(text, status=409)
    if exc.status == 404:
        return NotFound(text, status=404, transient=False)
    if exc.status == 429:
        return EvictionBlocked(text, status=429)
    transient = exc.status is None or exc.status >= 500 or exc.status == 0
    return KubeError(text, status=exc.status, transient=transient)


class Kube:
    """A connection to one API server."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | os.PathLike[str] | None = None) -> Kube:
        """From `kubeconfig`, else in-cluster (service account), else `~/.kube/config`."""
        try:
            if kubeconfig is not None:
                return cls(
                    config.new_client_from_config(config_file=os.fspath(kubeconfig))  # type: ignore[no-untyped-call]
                )
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                return cls(client.ApiClient(cfg))
            return cls(config.new_client_from_config())  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise KubeError(
                f"cannot configure the Kubernetes client: {exc}; pass --kubeconfig or run "
                "in a pod with a service account",
                transient=False,
            ) from None

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call a client method `fn`; errors become `KubeError`s saying `what` failed,
        the result a plain dict. For resources without a helper method here."""
        try:
            result = fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            raise _translate(exc, what) from None
        except OSError as exc:  # urllib3 errors derive from it: refused, reset, timeout
            raise KubeError(f"{what}: {exc}") from None
        except Exception as exc:  # urllib3 MaxRetryError etc. are not OSErrors
            if type(exc).__module__.startswith("urllib3"):
                raise KubeError(f"{what}: {exc}") from None
            raise
        doc: dict[str, Any] = self.api.sanitize_for_serialization(result) or {}  # type: ignore[no-untyped-call]
        return doc

    # nodes

    def get_node(self, name: str) -> dict[str, Any]:
        return self.call(f"get node {name}", self.core.read_node, name)

    def list_nodes(self, label_selector: str | None) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        items: list[dict[str, Any]] = self.call("list nodes", self.core.list_node, **kwargs)[
            "items"
        ]
        return items

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch (the client sends a dict body as strategic merge, which is a
        merge patch for the maps and scalars we change)."""
        return self.call(f"patch node {name}", self.core.patch_node, name, patch)

    # pods

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(
            f"list pods on {node}",
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
        )["items"]
        return items

    def evict(self, namespace: str, name: str) -> None:
        """policy/v1 Eviction: the API server checks PodDisruptionBudgets (429)."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        self.call(
            f"evict pod {namespace}/{name}",
            self.core.create_namespaced_pod_eviction,
            name,
            namespace,
            body,
        )

    # leases

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.call(
                f"get lease {namespace}/{name}",
                self.coordination.read_namespaced_lease,
                name,
                namespace,
            )
        except NotFound:
            return None

    def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(
            f"list leases in {namespace}",
            self.coordination.list_namespaced_lease,
            namespace,
            label_selector=label_selector,
        )["items"]
        return items

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(
            f"create lease {namespace}/{name}",
            self.coordination.create_namespaced_lease,
            namespace,
            body,
        )

    def replace_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with `metadata.resourceVersion`: `Conflict` if someone wrote in between."""
        name = body["metadata"]["name"]
        return self.call(
            f"update lease {namespace}/{name}",
            self.coordination.replace_namespaced_lease,
            name,
            namespace,
            body,
        )

    # events

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.call(
            f"create event in {namespace}",
            self.core.create_namespaced_event,
            namespace,
            body,
        )
