"""The Kubernetes Job builder against the fake API server, with real builds.

Real: the registry, buildah (run by the fake kubelet on this machine), the official
`kubernetes` client speaking the real REST paths, the Kubernetes OpenAPI schemas
(`kubernetes-validate`, strict) for every object the builder creates, and `deploy/`'s
RBAC: the builder calls the API as the reconciler's ServiceAccount, in the namespace
its Role is bound in, with the Roles and bindings `kubectl kustomize deploy/` builds
enforced, so a verb the Role lacks fails these tests. Stand-ins, said
plainly: the API server (`tests/fixtures/kubeapi.py`) and the Job controller plus
kubelet (`tests/fixtures/kubelet.py`, which runs the pod's command here instead of in
the builder image); `dnf`/`rpm`/`bootc` in the base image are shims
(`tests/fixtures/buildbase.py`).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from reconciler.adapters.builders import kubejob, script
from reconciler.adapters.kube import Kube
from reconciler.adapters.registry import RegistryClient
from reconciler.cli import cli
from reconciler.core import poolplan
from reconciler.errors import BuildError, ReconcilerError
from reconciler.loop import building
from tests.fixtures import bootc_lint
from tests.fixtures.buildbase import BuildBase
from tests.fixtures.kubeapi import FakeKube
from tests.fixtures.kubelet import FakeKubelet
from tests.fixtures.registry import PASSWORD, RunningRegistry, free_port
from tests.helpers import RECONCILER_NS, deploy_docs, example_repo, plan_built_by

pytestmark = [pytest.mark.buildah, pytest.mark.registry]

NS = RECONCILER_NS  # the default build namespace in-cluster: the pod's own
RECONCILER_SA = "reconciler"
# The oldest and newest API versions we check the objects against.
K8S_VERSIONS = ("1.29.0", "1.37.0")


@pytest.fixture(autouse=True)
def rbac(kubeapi: FakeKube) -> Iterator[Path]:
    """deploy/'s RBAC in force; yields the reconciler's ServiceAccount kubeconfig. After
    the test, no request of the builder may have been refused, not even one whose
    failure it tolerates (the log tail, the clean-up)."""
    kubeapi.enforce_rbac(deploy_docs())
    yield kubeapi.kubeconfig_for(NS, RECONCILER_SA)
    denied = [a for a in kubeapi.authorizations if not a.allowed]
    assert denied == [], f"deploy/reconciler/rbac.yaml does not grant: {denied}"


def builds_role() -> set[tuple[str, str]]:
    """(resource, verb) the shipped Role grants the reconciler in the build namespace."""
    [role] = [d for d in deploy_docs() if d["kind"] == "Role"
              and d["metadata"] == {"name": "reconciler-builds", "namespace": NS}]  # fmt: skip
    return {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


def without(resource: str, verb: str) -> list[dict[str, Any]]:
    """deploy/'s objects with `verb` on `resource` taken out of the builds Role."""
    docs = deploy_docs()
    for d in docs:
        if d["kind"] == "Role" and d["metadata"]["name"] == "reconciler-builds":
            for rule in d["rules"]:
                if resource in rule["resources"]:
                    rule["resources"] = [r for r in rule["resources"] if r != resource]
                    d["rules"].append(
                        {
                            **rule,
                            "resources": [resource],
                            "verbs": [v for v in rule["verbs"] if v != verb],
                        }
                    )
                    break
    return docs


@pytest.fixture
def kubelet(kubeapi: FakeKube, tmp_path: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(kubeapi, tmp_path / "kubelet").start()
    yield fake
    fake.stop()


def make_repo(
    dest: Path,
    registry: RunningRegistry,
    base_ref: str,
    *,
    push_secret: str | None = "fleet-push-secret",  # noqa: S107 (a Secret's name)
    push_spec: str | None = None,
    extensions: dict[str, list[str]] | None = None,
    builder: str | None = "Job",
) -> Path:
    """The examples; infra's MachineOSConfig says `imageBuilderType: builder` (None:
    as the example, which names none)."""
    repo = example_repo(dest, registry.host, base_ref, prefix=dest.parent.name)
    path = repo / "machineosconfigs/infra.yaml"
    doc = yaml.safe_load(path.read_text())
    if builder is not None:
        doc["spec"]["imageBuilder"] = {"imageBuilderType": builder}
    if push_secret is None:
        doc["spec"].pop("renderedImagePushSecret", None)
    else:
        doc["spec"]["renderedImagePushSecret"] = {"name": push_secret}
    if push_spec is not None:
        doc["spec"]["renderedImagePushSpec"] = push_spec
    path.write_text(yaml.safe_dump(doc))
    if extensions is not None:
        conf = repo / "reconciler.yaml"
        settings = yaml.safe_load(conf.read_text())
        settings["spec"]["extensions"] = extensions
        conf.write_text(yaml.safe_dump(settings))
    return repo


def plan_infra(
    registry: RunningRegistry, repo_dir: Path
) -> tuple[RegistryClient, poolplan.PoolPlan]:
    return plan_built_by(registry, repo_dir, "infra", "job")


def job_builder(client: RegistryClient, kubeapi: FakeKube, **kw: Any) -> kubejob.JobBuilder:
    """The builder as the reconciler runs it: as its ServiceAccount (see `rbac`)."""
    kw.setdefault("timeout_s", 300)
    kw.setdefault("poll_s", 0.05)
    api = Kube.connect(kubeapi.kubeconfig_for(NS, RECONCILER_SA))
    return kubejob.JobBuilder(client, api, namespace=NS, **kw)


def push_secret(
    kubeapi: FakeKube, registry: RunningRegistry, name: str = "fleet-push-secret"
) -> None:
    """The Secret a MachineOSConfig names, as `kubectl create secret docker-registry`
    makes it, from the registry's auth file."""
    kubeapi.create(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(registry.authfile.read_bytes()).decode()
            },
        },
        NS,
    )


def created(kubeapi: FakeKube, resource: str) -> list[dict[str, Any]]:
    return [c.object for c in kubeapi.changes(resource) if c.verb == "create"]


def validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_job_builds_pushes_returns_the_digest_and_cleans_up(
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    push_secret(kubeapi, registry)
    builder = job_builder(client, kubeapi)

    result = building.ensure_image(client, plan, {"job": builder})

    assert result.built_by == "job"
    assert registry.skopeo_digest(str(plan.target)) == result.digest
    # the pod's build passes bootc's lints: build.sh removed what buildah left
    bootc_lint.check_image(registry, str(result.image), tmp_path / "out")
    name = kubejob.job_name("infra", plan.inputs_digest)
    [job] = created(kubeapi, "jobs")
    assert job["metadata"]["name"] == name
    assert job["metadata"]["annotations"][kubejob.INPUTS_ANNOTATION] == plan.inputs_digest
    # what the API server was sent is what a real one accepts
    for obj in (job, *created(kubeapi, "configmaps")):
        validate(obj)
    # the pod ran the very script the local builder runs, shipped in the ConfigMap
    [argv] = kubelet.commands
    assert argv[0] == "/bin/bash"
    assert Path(argv[1]).read_text() == script.SCRIPT.read_text()
    assert Path(argv[1]).is_symlink()  # through the ConfigMap volume's ..data link
    # the digest came back as the termination message
    [pod] = kubeapi.list("pods", NS)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["message"] == result.digest
    # the named push secret was mounted, no Secret of ours was made
    assert [s["metadata"]["name"] for s in created(kubeapi, "secrets")] == ["fleet-push-secret"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["push-auth"]["secret"]["secretName"] == "fleet-push-secret"
    # cleaned up on success
    assert kubeapi.list("jobs", NS) == []
    assert kubeapi.list("configmaps", NS) == []


def test_the_objects_are_what_a_cluster_accepts(
    registry_basic: RunningRegistry, dnf_base: BuildBase, kubeapi: FakeKube, tmp_path: Path
) -> None:
    base_ref = dnf_base.copy_to(registry_basic)
    repo = make_repo(tmp_path / "repo", registry_basic, base_ref, push_secret=None)
    client, plan = plan_infra(registry_basic, repo)
    objects = job_builder(client, kubeapi).manifests(plan)
    for kind in ("job", "configmap", "secret"):
        validate(objects[kind])

    spec = objects["job"]["spec"]
    assert spec["backoffLimit"] == 3  # MCO's four attempts
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 11]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    [container] = pod["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DIGEST_FILE"] == container["terminationMessagePath"]
    assert env["PUSH_TLS_VERIFY"] == "false"  # plain-HTTP test registry, named insecure
    # what build.sh removes when buildah left it empty (the pool writes none of them)
    assert env["STRIP_IF_EMPTY"] == "/etc/hostname /etc/resolv.conf /etc/hosts"
    # logins only in the Secret, never in the Job or the ConfigMap
    secret = objects["secret"]
    auth = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert set(auth["auths"]) == {registry_basic.host}
    assert PASSWORD not in json.dumps(objects["job"]) + json.dumps(objects["configmap"])

    # The validator is strict: a misspelt field or a wrong type is refused.
    bad = json.loads(json.dumps(objects["job"]))
    bad["spec"]["backofLimit"] = bad["spec"].pop("backoffLimit")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = json.loads(json.dumps(objects["job"]))
    bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_our_secret_carries_the_logins_and_goes_away_with_the_job(
    registry_basic: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    base_ref = dnf_base.copy_to(registry_basic)
    repo = make_repo(tmp_path / "repo", registry_basic, base_ref, push_secret=None)
    client, plan = plan_infra(registry_basic, repo)

    digest = job_builder(client, kubeapi).build(plan)  # pull and push with Basic auth

    assert registry_basic.skopeo_digest(str(plan.target)) == digest
    [secret] = created(kubeapi, "secrets")
    validate(secret)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert kubeapi.list("secrets", NS) == []  # deleted with the Job


def test_a_failing_build_fails_the_job_at_once_and_keeps_it_for_inspection(
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref,
                     extensions={"sysstat": ["sysstat", "no-such-package"]})  # fmt: skip
    client, plan = plan_infra(registry, repo)
    push_secret(kubeapi, registry)
    builder = job_builder(client, kubeapi)

    with pytest.raises(BuildError) as info:
        building.ensure_image(client, plan, {"job": builder})

    err = info.value
    name = kubejob.job_name("infra", plan.inputs_digest)
    assert err.transient is False
    assert "the build failed (a RUN step or the Containerfile)" in str(err)
    assert f"kubectl -n {NS} logs job/{name}" in str(err)
    assert "Unable to find a match: no-such-package" in err.log_tail
    assert len(kubeapi.list("pods", NS)) == 1  # podFailurePolicy: no pointless retries
    job = kubeapi.get("jobs", name, NS)
    assert job["status"]["conditions"][-1]["reason"] == "PodFailurePolicy"
    assert kubeapi.find("configmaps", f"{name}-context", NS) is not None  # kept
    assert client.manifest_digest(plan.target, plan.target.tag or "") is None

    # The next pass reports the same failure; it does not start a second Job.
    with pytest.raises(BuildError) as again:
        builder.build(plan)
    assert "Unable to find a match: no-such-package" in again.value.log_tail
    assert len(created(kubeapi, "jobs")) == 1


class Restart(BaseException):
    """The reconciler process going away mid-wait."""


def test_a_restarted_reconciler_waits_for_the_running_job_and_starts_no_second(
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    push_secret(kubeapi, registry)
    kubelet.hold()  # the build pod is scheduled but does not finish yet

    def die(_: float) -> None:
        raise Restart

    with pytest.raises(Restart):
        job_builder(client, kubeapi, sleep=die).build(plan)
    name = kubejob.job_name("infra", plan.inputs_digest)
    assert kubeapi.find("jobs", name, NS) is not None

    result: dict[str, Any] = {}

    def restarted() -> None:
        try:
            result["digest"] = job_builder(client_b, kubeapi).build(plan)
        except BaseException as exc:  # reported below
            result["error"] = exc

    client_b = registry.client()
    thread = threading.Thread(target=restarted)
    thread.start()
    kubelet.release()
    thread.join(timeout=240)

    assert "error" not in result, result.get("error")
    assert registry.skopeo_digest(str(plan.target)) == result["digest"]
    assert len(created(kubeapi, "jobs")) == 1
    assert len(created(kubeapi, "pods")) == 1
    assert kubeapi.list("jobs", NS) == []


@pytest.mark.slow  # buildah retries the push (3 × 2 s) in each Job
def test_a_transient_failure_is_retried_by_a_new_job_on_the_next_pass(
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: the push fails
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref,
                     push_spec=f"{closed}/fleet/infra:latest")  # fmt: skip
    client, plan = plan_infra(registry, repo)
    push_secret(kubeapi, registry)
    builder = job_builder(client, kubeapi, backoff_limit=0)

    with pytest.raises(BuildError) as info:
        builder.build(plan)
    assert info.value.transient is True
    assert "pushing the image failed" in str(info.value)
    assert "BackoffLimitExceeded" in str(info.value)

    with pytest.raises(BuildError):
        builder.build(plan)
    assert len(created(kubeapi, "jobs")) == 2  # the failed Job was replaced, not duplicated
    assert len(kubeapi.list("jobs", NS)) == 1


def test_a_missing_named_secret_is_a_clear_error_before_any_job(
    registry: RunningRegistry, dnf_base: BuildBase, kubeapi: FakeKube, tmp_path: Path
) -> None:
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    with pytest.raises(BuildError) as info:
        job_builder(client, kubeapi).build(plan)
    assert info.value.transient is False
    assert f"Secret {NS}/fleet-push-secret" in str(info.value)
    assert "machineosconfigs/infra.yaml" in str(info.value)
    assert created(kubeapi, "jobs") == []


def test_reconciler_build_runs_the_pools_job(
    registry: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
    rbac: Path,
) -> None:
    # The example as it is (its infra pool names no builder), with the builder the
    # shipped Deployment chooses: in the cluster, Containerfile pools go to Jobs.
    repo = make_repo(tmp_path / "repo", registry, dnf_base.ref, push_secret=None, builder=None)
    [deployment] = [d for d in deploy_docs() if d["kind"] == "Deployment"]
    shipped = [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
               if a.startswith("--containerfile-builder")]  # fmt: skip
    assert shipped == ["--containerfile-builder=job"]
    args = ["build", "--repo", str(repo), "--pool", "infra", "--insecure-registry", registry.host,
            "--work-dir", str(tmp_path / "work"), "--kubeconfig", str(rbac),
            "--build-namespace", NS, *shipped]  # fmt: skip

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert "infra: job" in result.stderr
    image = result.stdout.strip()
    assert image.startswith(f"{registry.host}/{tmp_path.name}/infra@sha256:")
    assert registry.skopeo_digest(image) == image.split("@", 1)[1]
    assert len(created(kubeapi, "jobs")) == 1
    assert not (tmp_path / "work" / "containers").exists()  # nothing was built here


def test_a_private_registry_ca_goes_to_the_pod_as_its_cert_dir(
    registry_tls: RunningRegistry, dnf_base: BuildBase, kubeapi: FakeKube, tmp_path: Path
) -> None:
    base_ref = dnf_base.copy_to(registry_tls)
    repo = make_repo(tmp_path / "repo", registry_tls, base_ref, push_secret=None)
    client, plan = plan_infra(registry_tls, repo)
    objects = job_builder(client, kubeapi).manifests(plan)
    validate(objects["job"])
    validate(objects["configmap"])
    assert registry_tls.ca_file is not None
    assert objects["configmap"]["data"]["ca-registry-ca.crt"] == registry_tls.ca_file.read_text()
    pod = objects["job"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    certs = next(v for v in pod["volumes"] if v["name"] == "certs")
    assert certs["configMap"]["items"] == [{"key": "ca-registry-ca.crt", "path": "registry-ca.crt"}]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "certs")
    assert env["CERT_DIR"] == mount["mountPath"]
    assert env["PULL_TLS_VERIFY"] == env["PUSH_TLS_VERIFY"] == "true"


def test_the_builds_role_grants_exactly_what_builds_use(
    registry_basic: RunningRegistry,
    dnf_base: BuildBase,
    kubeapi: FakeKube,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> None:
    # Every path through the builder that calls the API: a named Secret (get), ours for
    # the base's login (create, then patch for its owner), leftovers of a killed pass
    # (create conflicts, then update), a success (poll, clean up) and a failure (the
    # pod list and its log).
    base_ref = dnf_base.copy_to(registry_basic)
    repo = make_repo(tmp_path / "ok" / "repo", registry_basic, base_ref)
    client, plan = plan_infra(registry_basic, repo)
    push_secret(kubeapi, registry_basic)
    name = kubejob.job_name("infra", plan.inputs_digest)
    for resource, suffix in (("configmaps", "context"), ("secrets", "auth")):
        kubeapi.create(resource, {"apiVersion": "v1", "kind": resource[:-1].title(),
                                  "metadata": {"name": f"{name}-{suffix}", "namespace": NS}},
                       NS)  # fmt: skip
    assert job_builder(client, kubeapi).build(plan)

    bad = make_repo(tmp_path / "bad" / "repo", registry_basic, base_ref,
                    extensions={"sysstat": ["no-such-package"]})  # fmt: skip
    client, plan = plan_infra(registry_basic, bad)
    with pytest.raises(BuildError) as info:
        job_builder(client, kubeapi).build(plan)
    assert "Unable to find a match: no-such-package" in info.value.log_tail

    used = {(a.resource, a.verb) for a in kubeapi.authorizations
            if a.user == f"system:serviceaccount:{NS}:{RECONCILER_SA}"}  # fmt: skip
    assert used == builds_role()  # all of it needed, nothing more


def test_a_verb_the_role_lacks_fails_the_build_with_the_apis_reason(
    registry: RunningRegistry, dnf_base: BuildBase, kubeapi: FakeKube, tmp_path: Path
) -> None:
    kubeapi.enforce_rbac(without("jobs", "create"))
    client, plan = plan_infra(registry, make_repo(tmp_path / "repo", registry, dnf_base.ref))
    push_secret(kubeapi, registry)
    with pytest.raises(ReconcilerError) as info:
        job_builder(client, kubeapi).build(plan)
    assert (
        f'User "system:serviceaccount:{NS}:{RECONCILER_SA}" cannot create resource "jobs" in '
        f'API group "batch" in the namespace "{NS}"' in str(info.value)
    )
    assert created(kubeapi, "jobs") == []
    kubeapi.authorizations.clear()  # the refusal was the point
