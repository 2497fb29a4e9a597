"""The Kubernetes Job builder: build a pool's Containerfile in the cluster with buildah.

Stage: build, for plans with RUN steps, when the MachineOSConfig (or the repository's
default, or the reconciler's) says `imageBuilderType: Job`. Input: a `PoolPlan`.
Output: the pushed image digest, or a `BuildError`. Builds spread over the cluster's
nodes instead of running on the reconciler's machine.

Objects, all in one namespace and named from the inputs digest
(`build-<pool>-<16 hex>`), as MCO names its build objects after the MachineOSBuild:
- ConfigMap `<job>-context`: the Containerfile, `config-layer.tar` (binaryData), the
  CA bundle if any, and `build.sh` itself: the pod runs the very script the local
  builder runs. A ConfigMap holds at most 1 MiB: a larger context is refused with a
  message saying so.
- Secret `<job>-auth` (`kubernetes.io/dockerconfigjson`), only for the logins the
  MachineOSConfig's `renderedImagePushSecret` / `baseImagePullSecret` do not cover and
  the reconciler has: exactly the base's and the target's. Named secrets are mounted as
  they are (key `.dockerconfigjson`, as MCO mounts them) and must exist first.
- Job `<job>`: one pod (`restartPolicy: Never`) running `bash build.sh` in the builder
  image (buildah, `BUILDAH_ISOLATION=chroot`, vfs storage on an emptyDir, as MCO's
  build pod). `backoffLimit: 3` (MCO: four attempts), but a `podFailurePolicy` fails
  the Job at once when the script exits 11 (a build step failed: retrying the same
  inputs cannot help) or 2. `activeDeadlineSeconds` is the build timeout.
  The digest comes back as the container's termination message (the script writes
  it to `/dev/termination-log`), cross-checked against the registry; on failure
  `terminationMessagePolicy: FallbackToLogsOnError` and the pod log give the tail.
- On success all three are deleted. On failure they are kept for inspection
  (`kubectl logs job/<job>`), as MCO keeps a failed build's objects; a failure that
  retrying cannot fix is reported again on every pass until the inputs change or
  someone deletes the Job, a transient one (pull, push, deadline) is deleted and
  started afresh on the next pass.
- A reconciler that restarts mid-build, or a second one, finds the Job by name and
  waits for it: one build per inputs digest, never two (the loop reports the pool as
  building meanwhile). A wait that times out leaves the Job running for the next pass
  to pick up; a Job that is gone when its image is in the registry was finished and
  cleaned up by another waiter.

The pod sets no securityContext, like MCO's build pod (which runs unprivileged as UID
1000 with the anyuid SCC granted to its service account): a cluster whose policy
forbids what buildah's chroot isolation needs must give the builder's service account
(`service_account`) the right to run it. The fake kubelet of the tests runs the
command on the test machine, so this part is not tested here.

Talks to the API server through the official client (`reconciler.adapters.kube.Kube`:
kubeconfig or the in-cluster service account). RBAC the reconciler needs in the build
namespace (`deploy/reconciler/rbac.yaml`; `tests/integration/test_kubejob.py` runs as
that Role and checks it is exactly what builds use): jobs get, create, delete;
configmaps create, update, patch, delete; secrets the same and get (named Secrets);
pods list; pods/log get.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from reconciler.adapters.builders import script
from reconciler.adapters.kube import Conflict, Kube, KubeError, NotFound
from reconciler.adapters.registry import RegistryClient
from reconciler.core import model, reference
from reconciler.core.poolplan import PoolPlan
from reconciler.errors import BuildError, ReconcilerError

log = logging.getLogger(__name__)

# The upstream buildah image (Fedora, buildah and bash; BUILDAH_ISOLATION=chroot).
DEFAULT_IMAGE = "quay.io/containers/buildah:v1.41.5"
DEFAULT_TIMEOUT_S = 3600.0
BACKOFF_LIMIT = 3
CONFIGMAP_MAX_BYTES = 1024 * 1024
CONTAINER = "build"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

POOL_LABEL = f"{model.OUR_GROUP}/pool"
BUILD_LABEL = f"{model.OUR_GROUP}/build"
INPUTS_ANNOTATION = f"{model.OUR_GROUP}/inputs-digest"
IMAGE_ANNOTATION = f"{model.OUR_GROUP}/image"
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "reconciler",
    "app.kubernetes.io/component": "image-build",
}

# Paths inside the build pod (the script reads them all from its environment).
INPUT_MOUNT = "/build/input"
WORK_MOUNT = "/build/work"
STORAGE_MOUNT = "/build/storage"
CERTS_MOUNT = "/build/certs"
PULL_AUTH_MOUNT = "/build/pull-auth"
PUSH_AUTH_MOUNT = "/build/push-auth"
TERMINATION_LOG = "/dev/termination-log"
CA_KEY_PREFIX = "ca-"  # ConfigMap keys of registry CA certificates (their own volume)
DOCKERCONFIG_KEY = ".dockerconfigjson"

_NAME_SAFE_RE = re.compile(r"[^a-z0-9-]")


def job_name(pool: str, inputs_digest: str) -> str:
    """`build-<pool>-<16 hex>`, at most 63 characters (the `job-name` pod label's limit)."""
    hex_part = inputs_digest.split(":", 1)[1][:16]
    safe = _NAME_SAFE_RE.sub("-", pool.lower())[: 63 - len("build--") - len(hex_part)]
    return f"build-{safe.strip('-')}-{hex_part}"


class JobBuilder:
    """Builds as a Kubernetes Job (module docstring)."""

    name = "job"

    def __init__(
        self,
        registry: RegistryClient,
        kube: Kube,
        *,
        namespace: str = "default",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        builder_image: str = DEFAULT_IMAGE,
        service_account: str | None = None,
        backoff_limit: int = BACKOFF_LIMIT,
        poll_s: float = 2.0,
        wait_grace_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.kube = kube
        self.batch = client.BatchV1Api(kube.api)
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.builder_image = builder_image
        self.service_account = service_account
        self.backoff_limit = backoff_limit
        self.poll_s = poll_s
        self.wait_grace_s = wait_grace_s
        """How much longer than the Job's deadline the reconciler waits before leaving
        it for the next pass (pods may wait for a node before the deadline starts)."""
        self.sleep = sleep

    @classmethod
    def connect(
        cls,
        registry: RegistryClient,
        *,
        kubeconfig: str | Any | None = None,
        namespace: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        builder_image: str | None = None,
        **kwargs: Any,
    ) -> JobBuilder:
        """From a kubeconfig, else the in-cluster service account; the namespace
        defaults to the pod's own, else `default`."""
        if namespace is None:
            sa_file = Path(SA_NAMESPACE_FILE)
            namespace = sa_file.read_text().strip() if sa_file.is_file() else "default"
        return cls(
            registry,
            Kube.connect(kubeconfig),
            namespace=namespace,
            timeout_s=timeout_s,
            builder_image=builder_image or DEFAULT_IMAGE,
            **kwargs,
        )

    # --- the build ------------------------------------------------------------------------

    def build(self, plan: PoolPlan, waiting: Callable[[str], None] | None = None) -> str:
        """Run (or pick up) the pool's build Job; return the pushed digest. A Job that
        exists already (another replica's, or ours before a restart) is waited for, and
        `waiting` hears of it."""
        inputs = script.prepare(plan)
        name = job_name(plan.pool, plan.inputs_digest)
        try:
            job = self._get("jobs", name)
            if job is not None:
                self._check_same_build(job, inputs)
                state = _job_state(job)
                if state == "failed":
                    error = self._failure(inputs, job)
                    if not error.transient:
                        raise error
                    first_line = str(error).splitlines()[0]
                    log.info("pool %s: Job %s/%s failed (%s); starting it again",
                             plan.pool, self.namespace, name, first_line)  # fmt: skip
                    self._delete_all(name)
                    job = None
                else:
                    log.info("pool %s: Job %s/%s already exists (%s); waiting for it",
                             plan.pool, self.namespace, name, state)  # fmt: skip
                    if waiting is not None:
                        waiting(f"Job {self.namespace}/{name}, found {state}")
            if job is None:
                self._start(plan, inputs, name)
            job = self._wait(inputs, name)
            digest = self._digest(inputs, name)
        except KubeError as exc:
            raise BuildError(
                f"pool {plan.pool}: build Job {self.namespace}/{name}: {exc}",
                transient=exc.transient,
            ) from None
        self._delete_all(name)
        log.info(
            "pool %s: uploaded image %s (Job %s)",
            plan.pool,
            reference.short_image(inputs.target, digest),
            name,
        )
        return digest

    # --- manifests ------------------------------------------------------------------------

    def manifests(self, plan: PoolPlan, inputs: script.BuildInputs | None = None) -> dict[str, Any]:
        """The objects `build` creates for `plan`: `configmap`, `job` and, when the
        reconciler supplies logins, `secret` (its data is the only secret content)."""
        inputs = inputs or script.prepare(plan)
        name = job_name(plan.pool, plan.inputs_digest)
        labels = {**MANAGED_BY, POOL_LABEL: plan.pool, BUILD_LABEL: name.rsplit("-", 1)[1]}
        annotations = {INPUTS_ANNOTATION: plan.inputs_digest, IMAGE_ANNOTATION: inputs.image}

        def meta(object_name: str) -> dict[str, Any]:
            return {
                "name": object_name,
                "namespace": self.namespace,
                "labels": dict(labels),
                "annotations": dict(annotations),
            }

        files = inputs.files(with_script=True)
        cas = script.ca_certificates(
            self.registry.ca_file,
            self.registry.certs_dirs,
            [inputs.base.registry, inputs.target.registry],
        )
        files.update({f"{CA_KEY_PREFIX}{name}": data for name, data in cas.items()})
        text, binary = {}, {}
        for key, data in files.items():
            try:
                text[key] = data.decode()
            except UnicodeDecodeError:
                binary[key] = base64.b64encode(data).decode()
        size = sum(len(d) for d in files.values())
        if size > CONFIGMAP_MAX_BYTES - 16 * 1024:
            raise BuildError(
                f"pool {plan.pool}: the build context is {size} bytes; a ConfigMap holds at "
                f"most {CONFIGMAP_MAX_BYTES} (1 MiB), so the Job builder cannot take it; "
                "move large files out of the pool's config, or build this pool with "
                "imageBuilderType: Buildah",
                transient=False,
            )
        configmap: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{name}-context"),
            "data": text,
        }
        if binary:
            configmap["binaryData"] = binary

        spec = plan.os_config.spec
        push_secret = (
            spec.rendered_image_push_secret.name if spec.rendered_image_push_secret else None
        )
        pull_secret = spec.base_image_pull_secret.name if spec.base_image_pull_secret else None
        wanted = [ref for ref, named in ((inputs.base, pull_secret), (inputs.target, push_secret))
                  if named is None]  # fmt: skip
        auth = script.auth_document(self.registry.credentials, wanted)
        out: dict[str, Any] = {"configmap": configmap}
        if not auth.empty:
            out["secret"] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(f"{name}-auth"),
                "type": "kubernetes.io/dockerconfigjson",
                "data": {DOCKERCONFIG_KEY: base64.b64encode(auth.data).decode()},
            }
            pull_secret = pull_secret or f"{name}-auth"
            push_secret = push_secret or f"{name}-auth"

        insecure = self.registry.insecure
        env = {
            "INPUT_DIR": INPUT_MOUNT,
            "WORK_DIR": WORK_MOUNT,
            "BASE_IMAGE": inputs.base_image,
            "IMAGE": inputs.image,
            "DIGEST_FILE": TERMINATION_LOG,
            "PULL_TLS_VERIFY": script.env_flags(inputs.base.registry, insecure),
            "PUSH_TLS_VERIFY": script.env_flags(inputs.target.registry, insecure),
            "STORAGE_DRIVER": "vfs",
            "STORAGE_ROOT": f"{STORAGE_MOUNT}/root",
            "STORAGE_RUNROOT": f"{STORAGE_MOUNT}/run",
            "TIMESTAMP": "0",
            "STRIP_IF_EMPTY": " ".join(inputs.strip_if_empty),
            "BUILDAH_ISOLATION": "chroot",
        }
        mounts = [
            {"name": "input", "mountPath": INPUT_MOUNT, "readOnly": True},
            {"name": "work", "mountPath": WORK_MOUNT},
            {"name": "storage", "mountPath": STORAGE_MOUNT},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "input", "configMap": {"name": f"{name}-context"}},
            {"name": "work", "emptyDir": {}},
            {"name": "storage", "emptyDir": {}},
        ]
        if cas:
            env["CERT_DIR"] = CERTS_MOUNT
            mounts.append({"name": "certs", "mountPath": CERTS_MOUNT, "readOnly": True})
            items = [{"key": f"{CA_KEY_PREFIX}{n}", "path": n} for n in sorted(cas)]
            volumes.append(
                {"name": "certs", "configMap": {"name": f"{name}-context", "items": items}}
            )
        for volume, secret, mount, var in (
            ("pull-auth", pull_secret, PULL_AUTH_MOUNT, "PULL_AUTHFILE"),
            ("push-auth", push_secret, PUSH_AUTH_MOUNT, "PUSH_AUTHFILE"),
        ):
            if secret is None:
                continue
            env[var] = f"{mount}/config.json"
            mounts.append({"name": volume, "mountPath": mount, "readOnly": True})
            volumes.append(
                {
                    "name": volume,
                    "secret": {
                        "secretName": secret,
                        "items": [{"key": DOCKERCONFIG_KEY, "path": "config.json"}],
                    },
                }
            )

        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": self.builder_image,
                    "command": ["/bin/bash", f"{INPUT_MOUNT}/{script.SCRIPT_NAME}"],
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "volumeMounts": mounts,
                    "terminationMessagePath": TERMINATION_LOG,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
            "volumes": volumes,
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        out["job"] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(name),
            "spec": {
                "backoffLimit": self.backoff_limit,
                "completions": 1,
                "parallelism": 1,
                "activeDeadlineSeconds": max(1, int(self.timeout_s)),
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": CONTAINER,
                                "operator": "In",
                                "values": [script.EXIT_SETUP, script.EXIT_BUILD],
                            },
                        }
                    ]
                },
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            },
        }
        out["named_secrets"] = sorted(
            {s for s in (pull_secret, push_secret) if s and s != f"{name}-auth"}
        )
        return out

    # --- steps ----------------------------------------------------------------------------

    def _start(self, plan: PoolPlan, inputs: script.BuildInputs, name: str) -> None:
        objects = self.manifests(plan, inputs)
        for secret in objects["named_secrets"]:
            if self._get("secrets", secret) is None:
                raise BuildError(
                    f"pool {plan.pool}: Secret {self.namespace}/{secret}, named in "
                    f"machineosconfigs/{plan.pool}.yaml, does not exist; create it "
                    "(type kubernetes.io/dockerconfigjson) in the build namespace",
                    transient=False,
                )
        self._put("configmaps", objects["configmap"])
        if "secret" in objects:
            self._put("secrets", objects["secret"])
        try:
            created = self.kube.call(
                f"create job {name}",
                self.batch.create_namespaced_job,
                self.namespace,
                objects["job"],
            )
        except Conflict:
            # Another replica created it between our GET and POST: wait for that one.
            log.info("pool %s: Job %s was created by someone else; waiting for it", plan.pool, name)
            return
        log.info("pool %s: started Job %s/%s (%s)", plan.pool, self.namespace, name, inputs.image)
        # Owned by the Job, so deleting the Job (kubectl, or TTL) takes them along.
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": created["metadata"]["uid"],
        }
        patch = {"metadata": {"ownerReferences": [owner]}}
        self.kube.call(f"own configmap {name}-context", self.kube.core.patch_namespaced_config_map,
                        f"{name}-context", self.namespace, patch)  # fmt: skip
        if "secret" in objects:
            self.kube.call(f"own secret {name}-auth", self.kube.core.patch_namespaced_secret,
                            f"{name}-auth", self.namespace, patch)  # fmt: skip

    def _wait(self, inputs: script.BuildInputs, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s + self.wait_grace_s
        delay = self.poll_s
        last = ""
        while True:
            job = self._get("jobs", name)
            if job is None and self._pushed(inputs) is not None:
                # Done, and cleaned up by another reconciler that waited for it too.
                return {}
            if job is None:
                raise BuildError(
                    f"pool {inputs.pool}: build Job {self.namespace}/{name} was deleted while "
                    "running; the next pass starts it again",
                    transient=True,
                )
            state = _job_state(job)
            if state == "succeeded":
                return job
            if state == "failed":
                raise self._failure(inputs, job)
            if state != last:
                log.info("pool %s: Job %s/%s is %s", inputs.pool, self.namespace, name, state)
                last = state
            if time.monotonic() > deadline:
                raise BuildError(
                    f"pool {inputs.pool}: build Job {self.namespace}/{name} has not finished "
                    f"after {self.timeout_s + self.wait_grace_s:.0f}s; it is left running and "
                    "the next pass waits for it again",
                    transient=True,
                )
            self.sleep(delay)
            delay = min(delay * 1.5, max(self.poll_s, 10.0))

    def _digest(self, inputs: script.BuildInputs, name: str) -> str:
        where = f"Job {self.namespace}/{name}"
        pod = _latest(self._pods(name), "Succeeded")
        status = _container_status(pod) if pod else None
        message = ((status or {}).get("state", {}).get("terminated") or {}).get("message", "")
        pushed = self._pushed(inputs)
        if not message:
            # The pod is gone (garbage-collected): the registry has the answer.
            if pushed is None:
                raise BuildError(
                    f"pool {inputs.pool}: {where} succeeded but {inputs.image} is not in the "
                    "registry",
                    transient=True,
                )
            return pushed
        digest = script.check_digest(inputs, message, where=where)
        if pushed != digest:
            raise BuildError(
                f"pool {inputs.pool}: {where} reported {digest}, but the registry has "
                f"{pushed or 'nothing'} under {inputs.image}",
                transient=True,
            )
        return digest

    def _pushed(self, inputs: script.BuildInputs) -> str | None:
        """What the registry holds under the build's tag (one HEAD)."""
        # A client of its own: builds run in background threads beside the pass, and a
        # client is not thread-safe.
        with self.registry.clone() as registry:
            return registry.manifest_digest(inputs.target, inputs.target.tag or "")

    def _failure(self, inputs: script.BuildInputs, job: dict[str, Any]) -> BuildError:
        name = job["metadata"]["name"]
        reason = _condition(job, "Failed").get("reason", "")
        where = (
            f"Job {self.namespace}/{name} and its pods are kept for inspection "
            f"(kubectl -n {self.namespace} logs job/{name}); delete the Job to retry"
        )
        pod = _latest(self._pods(name), "Failed")
        status = _container_status(pod) if pod else None
        terminated = (status or {}).get("state", {}).get("terminated") or {}
        tail = self._log_tail(pod) if pod else ""
        tail = tail or str(terminated.get("message", ""))
        tail = "\n".join(tail.splitlines()[-script.TAIL_LINES :])
        if reason == "DeadlineExceeded":
            return BuildError(
                f"pool {inputs.pool}: the build of {inputs.image} took longer than "
                f"{self.timeout_s:.0f}s and the Job was stopped; {where}; raise "
                "--build-timeout if the build is just slow",
                log_tail=tail,
                transient=True,
            )
        code = terminated.get("exitCode")
        return script.failure(
            inputs, int(code) if code is not None else None, tail, where=where,
            hint=f"Job condition Failed: {reason}" if reason else "",
        )  # fmt: skip

    def _log_tail(self, pod: dict[str, Any]) -> str:
        try:
            text = self.kube.core.read_namespaced_pod_log(
                pod["metadata"]["name"],
                self.namespace,
                container=CONTAINER,
                tail_lines=script.TAIL_LINES,
                _request_timeout=30,
            )
        except (client.ApiException, OSError, ValueError) as exc:  # the log is best effort
            log.debug("no log for pod %s: %s", pod["metadata"]["name"], exc)
            return ""
        return str(text or "")

    def _check_same_build(self, job: dict[str, Any], inputs: script.BuildInputs) -> None:
        found = (job["metadata"].get("annotations") or {}).get(INPUTS_ANNOTATION)
        if found != inputs.inputs_digest:
            raise BuildError(
                f"pool {inputs.pool}: Job {self.namespace}/{job['metadata']['name']} exists "
                f"for other inputs ({found or 'not ours'}); delete it",
                transient=False,
            )

    # --- API helpers ----------------------------------------------------------------------

    def _readers(self) -> dict[str, Callable[..., Any]]:
        # Only what is read: the Job (poll) and named Secrets (do they exist?); a
        # ConfigMap is only ever written, so the Role grants no `get` on configmaps.
        return {
            "jobs": self.batch.read_namespaced_job,
            "secrets": self.kube.core.read_namespaced_secret,
        }

    def _get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.call(f"get {resource} {name}", self._readers()[resource], name,
                                   self.namespace)  # fmt: skip
        except NotFound:
            return None

    def _put(self, resource: str, body: dict[str, Any]) -> None:
        """Create, or replace what a previous attempt left (same name, same inputs)."""
        name = body["metadata"]["name"]
        create, replace = {
            "configmaps": (self.kube.core.create_namespaced_config_map,
                           self.kube.core.replace_namespaced_config_map),
            "secrets": (self.kube.core.create_namespaced_secret,
                        self.kube.core.replace_namespaced_secret),
        }[resource]  # fmt: skip
        try:
            self.kube.call(f"create {resource} {name}", create, self.namespace, body)
        except Conflict:
            self.kube.call(f"replace {resource} {name}", replace, name, self.namespace, body)

    def _pods(self, job: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.call(
            f"list pods of job {job}",
            self.kube.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"job-name={job}",
        )["items"]
        return items

    def _delete_all(self, name: str) -> None:
        """Delete the Job (and its pods), its ConfigMap and Secret; missing is fine."""
        for what, fn, object_name, kwargs in (
            ("job", self.batch.delete_namespaced_job, name, {"propagation_policy": "Background"}),
            ("configmap", self.kube.core.delete_namespaced_config_map, f"{name}-context", {}),
            ("secret", self.kube.core.delete_namespaced_secret, f"{name}-auth", {}),
        ):
            try:
                self.kube.call(f"delete {what} {object_name}", fn, object_name, self.namespace,
                                **kwargs)  # fmt: skip
            except NotFound:
                pass
            except ReconcilerError as exc:  # the image is pushed; leftovers are only litter
                log.warning("could not delete %s %s/%s: %s", what, self.namespace, object_name, exc)


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return {}


def _job_state(job: dict[str, Any]) -> str:
    """`succeeded`, `failed`, `running` (a pod is active) or `pending`."""
    status = job.get("status") or {}
    if _condition(job, "Complete") or (status.get("succeeded") or 0) >= 1:
        return "succeeded"
    if _condition(job, "Failed"):
        return "failed"
    return "running" if status.get("active") else "pending"


def _latest(pods: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    matching = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    matching.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                 int(p["metadata"].get("resourceVersion") or 0)))  # fmt: skip
    return matching[-1] if matching else None


def _container_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status)
    return None
