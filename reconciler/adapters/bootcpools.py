"""The BootcPool custom resource (gitops.bootc.dev/v1alpha1, deploy/crds/): the calls.

Stage: edge, over `reconciler.adapters.kube` (the official client's CustomObjectsApi).
Inputs and outputs are plain dicts; errors are `kube.KubeError`s. The reconciler writes
BootcPools (`reconciler.loop.clusterstatus`); `reconciler status` reads them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kubernetes import client

from reconciler.adapters import kube

GROUP = "gitops.bootc.dev"
VERSION = "v1alpha1"
PLURAL = "bootcpools"
KIND = "BootcPool"
API_VERSION = f"{GROUP}/{VERSION}"


class BootcPools:
    def __init__(self, api: kube.Kube, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.objects = client.CustomObjectsApi(api.api)

    def _args(self) -> tuple[str, str, str, str]:
        return GROUP, VERSION, self.namespace, PLURAL

    def list(self) -> list[dict[str, Any]]:
        doc = self.api.call(
            f"list bootcpools in {self.namespace}",
            self.objects.list_namespaced_custom_object,
            *self._args(),
        )
        items: list[dict[str, Any]] = doc.get("items") or []
        return items

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.call(
                f"get bootcpool {self.namespace}/{name}",
                self.objects.get_namespaced_custom_object,
                *self._args(),
                name,
            )
        except kube.NotFound:
            return None

    def create(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {},
        }
        return self.api.call(
            f"create bootcpool {self.namespace}/{name}",
            self.objects.create_namespaced_custom_object,
            *self._args(),
            body,
        )

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT to `/status` with the object's resourceVersion: `kube.Conflict` if it
        changed since it was read."""
        name = obj["metadata"]["name"]
        return self.api.call(
            f"update bootcpool {self.namespace}/{name} status",
            self.objects.replace_namespaced_custom_object_status,
            *self._args(),
            name,
            obj,
        )

    def delete(self, name: str) -> None:
        with contextlib.suppress(kube.NotFound):
            self.api.call(
                f"delete bootcpool {self.namespace}/{name}",
                self.objects.delete_namespaced_custom_object,
                *self._args(),
                name,
            )
