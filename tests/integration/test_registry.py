"""The registry client against real docker-registry processes (tests/fixtures/registry.py).

Results are read back with skopeo or plain HTTP requests, never only with the client
under test. `FaultyProxy` (below) sits in front of a real registry to produce what a
healthy one will not: 503s, 429 with Retry-After, and 413 for large bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import reconciler.adapters.registry as registry_module
from reconciler.adapters.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from reconciler.adapters.registry.credentials import Credentials
from reconciler.errors import RegistryError
from tests.fixtures import bootc_lint
from tests.fixtures.registry import (
    PASSWORD,
    REFRESH_TOKEN,
    USERNAME,
    BaseImage,
    RunningRegistry,
    free_port,
    sha256,
    start_registry,
)

pytestmark = pytest.mark.registry


def raw_get(reg: RunningRegistry, path: str, **kw: Any) -> httpx.Response:
    """An independent read (no client under test): plain httpx, Basic auth if any."""
    auth = (reg.username, reg.password) if reg.username and reg.token_server is None else None
    return httpx.get(f"{reg.url}{path}", auth=auth, timeout=10, **kw)


def skopeo_copy_manifest(reg: RunningRegistry, ref: str, tmp: Path, *extra: str) -> bytes:
    """The manifest skopeo copies out of `ref` (bytes as stored: dir: keeps them)."""
    out = tmp / f"skopeo-{hashlib.sha256(ref.encode() + str(extra).encode()).hexdigest()[:8]}"
    reg.skopeo(
        "copy",
        *extra,
        *[a.replace("--", "--src-", 1) for a in reg.skopeo_args()],
        f"docker://{ref}",
        f"dir:{out}",
    )
    return (out / "manifest.json").read_bytes()


# --- resolving ---------------------------------------------------------------------------


def test_resolve_tag_gives_the_digest_skopeo_sees(
    base_image: BaseImage, registry: RunningRegistry
) -> None:
    with registry.client() as client:
        res = client.resolve(base_image.ref)
    assert res.digest == registry.skopeo_digest(base_image.ref) == base_image.digest
    assert res.index_digest is None
    assert res.platform == "linux/amd64"
    assert res.media_type == OCI_MANIFEST
    assert sha256(res.manifest) == res.digest
    assert res.config["config"]["Labels"] == {"containers.bootc": "1", "ostree.bootable": "1"}
    assert sha256(res.config_bytes) == res.config_descriptor["digest"]
    assert [layer["digest"] for layer in res.layers] == [
        layer["digest"] for layer in base_image.bootc.layers
    ]
    assert str(res.pinned) == f"{base_image.repository}@{res.digest}"


def test_resolve_by_digest_verifies_it(base_image: BaseImage, registry: RunningRegistry) -> None:
    with registry.client() as client:
        res = client.resolve(f"{base_image.repository}@{base_image.digest}")
    assert res.digest == base_image.digest


def test_index_is_narrowed_to_the_pool_architecture(
    base_image: BaseImage, registry: RunningRegistry, tmp_path: Path
) -> None:
    with registry.client() as client:
        amd = client.resolve(base_image.multi_ref, arch="amd64")
        arm = client.resolve(base_image.multi_ref, arch="arm64")
        arm_v8 = client.resolve(base_image.multi_ref, arch="aarch64/v8")
    # skopeo reports the index digest for the tag, and copies the per-arch manifest.
    assert amd.index_digest == arm.index_digest == registry.skopeo_digest(base_image.multi_ref)
    assert amd.digest == sha256(skopeo_copy_manifest(registry, base_image.multi_ref, tmp_path))
    arm64_bytes = skopeo_copy_manifest(
        registry, base_image.multi_ref, tmp_path, "--override-arch=arm64", "--override-variant=v8"
    )
    assert arm.digest == arm_v8.digest == sha256(arm64_bytes) == base_image.multi_arm64_digest
    assert arm.config["architecture"] == "arm64"
    assert arm.platform == "linux/arm64"
    assert arm_v8.platform == "linux/arm64/v8"
    # The pin is the per-platform manifest, never the index (bootc reports that one).
    assert str(arm.pinned).endswith(f"@{arm.digest}")


def test_missing_architecture_names_what_is_there(
    base_image: BaseImage, registry: RunningRegistry
) -> None:
    start = time.monotonic()
    with registry.client() as client, pytest.raises(RegistryError) as info:
        client.resolve(base_image.multi_ref, arch="s390x")
    assert str(info.value).startswith(
        f"image {base_image.multi_ref} has no linux/s390x manifest "
        "(available: linux/amd64, linux/arm64/v8); set the pool's architecture"
    )
    assert not info.value.transient
    assert time.monotonic() - start < 2  # refused at once, not retried


def test_single_arch_image_of_another_arch_is_refused(
    base_image: BaseImage, registry: RunningRegistry
) -> None:
    with registry.client() as client:
        ref = f"{base_image.multi_repository}@{base_image.multi_arm64_digest}"
        with pytest.raises(
            RegistryError, match=r"is linux/arm64, not linux/amd64; use an image built"
        ):
            client.resolve(ref, arch="amd64")


@pytest.mark.parametrize("name", ["base/bootc:no-such-tag", "base/no-such-repo:latest"])
def test_missing_base_image_is_a_clear_permanent_error(
    registry: RunningRegistry, base_image: BaseImage, name: str
) -> None:
    ref = f"{registry.host}/{name}"
    with registry.client() as client, pytest.raises(RegistryError) as info:
        client.resolve(ref)
    assert str(info.value).startswith(f"{ref} not found (")
    assert "unknown" in str(info.value)
    assert not info.value.transient


def test_manifest_digest_is_one_head(base_image: BaseImage, registry: RunningRegistry) -> None:
    with registry.client() as client:
        before = client.requests
        assert client.manifest_digest(base_image.repository, "latest") == base_image.digest
        assert (
            client.manifest_digest(base_image.multi_repository, "latest") == base_image.multi_digest
        )
        assert client.manifest_digest(base_image.repository, "nope") is None
        assert client.requests - before == 3


# --- pushing -----------------------------------------------------------------------------


def test_put_manifest_sends_exact_bytes(
    base_image: BaseImage, registry: RunningRegistry, tmp_path: Path
) -> None:
    # Non-canonical formatting on purpose: a client that re-serialises (oras-py) would
    # push other bytes under another digest.
    doc = json.loads(base_image.bootc.manifest)
    doc["annotations"] = {"org.example.note": "exact bytes"}
    data = (json.dumps(doc, indent=3) + "\n").encode()
    target = f"{registry.host}/exact/bytes"
    with registry.client() as client:
        client.ensure_blobs(target, [doc["config"], *doc["layers"]], base_image.repository)
        digest = client.put_manifest(target, "v1", data, OCI_MANIFEST)
        assert client.manifest_digest(target, "v1") == digest
        assert client.get_manifest(target, "v1").data == data
    assert digest == sha256(data)
    assert registry.skopeo_digest(f"{target}:v1") == digest
    assert skopeo_copy_manifest(registry, f"{target}:v1", tmp_path) == data
    # Pushing by digest works too, and is the same manifest.
    with registry.client() as client:
        assert client.put_manifest(target, digest, data, OCI_MANIFEST) == digest


def test_manifest_with_missing_blobs_is_refused_and_nothing_is_tagged(
    registry: RunningRegistry,
) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    target = f"{registry.host}/half/pushed"
    with registry.client() as client:
        with pytest.raises(RegistryError) as info:
            client.put_manifest(target, "v1", manifest, OCI_MANIFEST)
        assert "refused pushing manifest" in str(info.value)
        assert "blob unknown" in str(info.value)
        assert not info.value.transient
        assert client.manifest_digest(target, "v1") is None


def test_cross_repo_mount_uploads_nothing(base_image: BaseImage, registry: RunningRegistry) -> None:
    target = f"{registry.host}/mounted/{os.getpid()}"
    descs = [json.loads(base_image.bootc.manifest)["config"], *base_image.bootc.layers]
    with registry.client() as client:
        assert client.ensure_blobs(target, descs, base_image.repository) == 0
        assert client.bytes_uploaded == 0
        # Present now, with the right bytes (read back without the client).
        for d in descs:
            r = raw_get(registry, f"/v2/mounted/{os.getpid()}/blobs/{d['digest']}")
            assert r.status_code == 200
            assert sha256(r.content) == d["digest"]
        # Everything present: nothing to do, and mount_blob reports the decline of
        # an unknown blob as False.
        assert client.ensure_blobs(target, descs, base_image.repository) == 0
        assert client.mount_blob(target, "sha256:" + "0" * 64, base_image.repository) is False
        assert client.mount_blob(f"{target}-2", descs[1]["digest"], base_image.repository) is True


@pytest.mark.parametrize("chunk_size", [None, 64 * 1024, 100_000])
def test_uploads_monolithic_and_chunked(registry: RunningRegistry, chunk_size: int | None) -> None:
    data = os.urandom(300_000)
    repo = f"{registry.host}/uploads/blobs"
    with registry.client() as client:
        digest = client.push_blob(repo, data, sha256(data), chunk_size=chunk_size)
        assert client.bytes_uploaded == len(data)
        assert client.blob_exists(repo, digest)
        assert client.get_blob(repo, digest) == data
    assert digest == sha256(data)
    assert raw_get(registry, f"/v2/uploads/blobs/blobs/{digest}").content == data


def test_copy_between_registries_streams_and_verifies(
    base_image: BaseImage, registry: RunningRegistry, registry_basic: RunningRegistry
) -> None:
    target = f"{registry_basic.host}/copied/bootc"
    descs = [json.loads(base_image.bootc.manifest)["config"], *base_image.bootc.layers]
    with RegistryClient(
        credentials=registry_basic.credentials(),
        insecure=registry.insecure | registry_basic.insecure,
        retry_deadline_s=5,
    ) as client:
        sent = client.ensure_blobs(target, descs, base_image.repository)
        assert sent == sum(d["size"] for d in descs) == client.bytes_uploaded
        client.put_manifest(target, "latest", base_image.bootc.manifest, OCI_MANIFEST)
        assert client.ensure_blobs(target, descs, base_image.repository) == 0
    assert registry_basic.skopeo_digest(f"{target}:latest") == base_image.digest


# --- auth --------------------------------------------------------------------------------


def test_basic_auth_with_auth_file(base_image: BaseImage, registry_basic: RunningRegistry) -> None:
    ref = base_image.copy_to(registry_basic)
    with RegistryClient(
        Credentials.discover([registry_basic.authfile]), registry_basic.insecure
    ) as client:
        assert client.resolve(ref).digest == base_image.digest
        client.push_blob(f"{registry_basic.host}/basic/push", b"basic auth works")


def test_basic_auth_without_credentials_says_how_to_log_in(
    base_image: BaseImage, registry_basic: RunningRegistry, tmp_path: Path
) -> None:
    ref = base_image.copy_to(registry_basic)
    empty = tmp_path / "auth.json"
    empty.write_text('{"auths": {}}')
    with (
        RegistryClient(Credentials.discover([empty]), registry_basic.insecure) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.resolve(ref)
    host = registry_basic.host
    assert str(info.value) == (
        f"{host}: authentication required for pull on base/bootc (no credentials found for "
        f"{host} in {empty}); log in with `skopeo login {host}` or pass --authfile"
    )
    assert not info.value.transient


def test_basic_auth_wrong_password_never_shows_it(
    base_image: BaseImage, registry_basic: RunningRegistry, tmp_path: Path
) -> None:
    ref = base_image.copy_to(registry_basic)
    wrong = "Wrong-" + PASSWORD
    creds = Credentials.from_mapping(
        {registry_basic.host: (USERNAME, wrong)}, source=str(tmp_path / "a.json")
    )
    with (
        RegistryClient(creds, registry_basic.insecure) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.resolve(ref)
    msg = str(info.value)
    assert f"the credentials '{registry_basic.host}' in {tmp_path / 'a.json'} were rejected" in msg
    assert wrong not in msg
    assert PASSWORD not in msg
    assert USERNAME not in msg


def test_token_auth_pull_push_and_mount_across_repos(
    base_image: BaseImage, registry_token: RunningRegistry
) -> None:
    ref = base_image.copy_to(registry_token, "team-a/base")
    assert registry_token.token_server is not None
    grants = registry_token.token_server.grants
    host = registry_token.host
    descs = [json.loads(base_image.bootc.manifest)["config"], *base_image.bootc.layers]
    with registry_token.client() as client:
        assert client.resolve(ref).digest == base_image.digest
        n = len(grants)
        # A mount needs push on the target and pull on the source in one token:
        # oras-py's single cached token fails exactly here.
        assert client.ensure_blobs(f"{host}/team-b/app", descs, f"{host}/team-a/base") == 0
        assert {
            "repository:team-a/base:pull",
            "repository:team-b/app:pull,push",
        } <= {s for g in grants[n:] for s in g["scopes"]}
        client.put_manifest(f"{host}/team-b/app", "v1", base_image.bootc.manifest, OCI_MANIFEST)
        # Tokens are cached per scope: going back to team-a asks for nothing new.
        n = len(grants)
        assert client.manifest_digest(f"{host}/team-a/base", "latest") == base_image.digest
        assert client.manifest_digest(f"{host}/team-b/app", "v1") == base_image.digest
        assert len(grants) == n
    assert all(g["user"] == USERNAME for g in grants[-3:])
    assert registry_token.skopeo_digest(f"{host}/team-b/app:v1") == base_image.digest


def test_token_auth_anonymous_pulls_but_cannot_push(
    base_image: BaseImage, registry_token: RunningRegistry
) -> None:
    ref = base_image.copy_to(registry_token, "public/base")
    with RegistryClient(None, registry_token.insecure) as client:
        assert client.resolve(ref).digest == base_image.digest
        with pytest.raises(RegistryError) as info:
            client.push_blob(f"{registry_token.host}/public/base", b"anonymous push")
    assert str(info.value).startswith(
        f"{registry_token.host}: authentication required for push on public/base (no credentials"
    )
    assert "no auth file given" in str(info.value)


def test_token_auth_with_identity_token(
    base_image: BaseImage, registry_token: RunningRegistry, tmp_path: Path
) -> None:
    ref = base_image.copy_to(registry_token, "oauth/base")
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    registry_token.host: {"auth": "PHRva2VuPjo=", "identitytoken": REFRESH_TOKEN}
                }
            }
        )
    )
    assert registry_token.token_server is not None
    grants = registry_token.token_server.grants
    n = len(grants)
    with RegistryClient(Credentials.discover([path]), registry_token.insecure) as client:
        client.push_blob(f"{registry_token.host}/oauth/base", b"pushed with an identity token")
        assert client.resolve(ref).digest == base_image.digest
    assert grants[n:]
    assert all(g["method"] == "POST" and g["user"] == USERNAME for g in grants[n:])


def test_token_service_refuses_wrong_password(registry_token: RunningRegistry) -> None:
    creds = Credentials.from_mapping({registry_token.host: (USERNAME, "nope-" + PASSWORD)})
    with (
        RegistryClient(creds, registry_token.insecure) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.manifest_digest(f"{registry_token.host}/any/repo", "latest")
    assert "the token service refused the credentials" in str(info.value)
    assert PASSWORD not in str(info.value)


@pytest.fixture(scope="module")
def registry_tls_token(
    tmp_path_factory: pytest.TempPathFactory,
    registry_tls: RunningRegistry,
    registry_token: RunningRegistry,
) -> Iterator[str]:
    """An HTTPS registry whose token service is plain HTTP (the TLS fixture's
    certificate, the token fixture's token service)."""
    assert registry_token.token_server is not None
    work = tmp_path_factory.mktemp("registry-tls-token")
    auth = {
        "token": {
            "realm": registry_token.token_server.realm,
            "service": "test-registry",
            "issuer": "test-issuer",
            "rootcertbundle": str(registry_token.root / "token.crt"),
        }
    }
    tls = (registry_tls.root / "server.crt", registry_tls.root / "server.key")
    proc, host, _ = start_registry(
        "tls-token", work, auth=auth, tls=tls, ca_file=registry_tls.ca_file
    )
    yield host
    proc.terminate()
    proc.wait(5)


def test_credentials_never_go_to_a_plain_http_token_service_unless_named(
    registry_tls: RunningRegistry, registry_token: RunningRegistry, registry_tls_token: str
) -> None:
    assert registry_token.token_server is not None
    realm_host = f"127.0.0.1:{registry_token.token_server.port}"
    creds = Credentials.from_mapping({registry_tls_token: (USERNAME, PASSWORD)})
    n = len(registry_token.token_server.grants)
    with (
        RegistryClient(creds, ca_file=str(registry_tls.ca_file)) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.push_blob(f"{registry_tls_token}/secure/repo", b"data")
    assert str(info.value) == (
        f"{registry_tls_token}: its token service {registry_token.token_server.realm} is not "
        f"HTTPS; refusing to send credentials in clear. Name {realm_host} with "
        f"--insecure-registry if that is intended"
    )
    assert len(registry_token.token_server.grants) == n  # nothing was sent
    with RegistryClient(creds, insecure={realm_host}, ca_file=str(registry_tls.ca_file)) as client:
        digest = client.push_blob(f"{registry_tls_token}/secure/repo", b"data")
        assert client.blob_exists(f"{registry_tls_token}/secure/repo", digest)


@pytest.mark.parametrize(
    "where", ["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "config", "docker", "pull-secret"]
)
def test_auth_file_locations_against_a_real_registry(
    base_image: BaseImage, registry_basic: RunningRegistry, tmp_path: Path, where: str
) -> None:
    ref = base_image.copy_to(registry_basic)
    home, run = tmp_path / "home", tmp_path / "run"
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
    content = registry_basic.authfile.read_text()
    explicit: list[Path] = []
    if where == "REGISTRY_AUTH_FILE":
        path = tmp_path / "chosen.json"
        env["REGISTRY_AUTH_FILE"] = str(path)
    elif where == "XDG_RUNTIME_DIR":
        path = run / "containers/auth.json"
    elif where == "config":
        path = home / ".config/containers/auth.json"
    elif where == "docker":
        path = home / ".docker/config.json"
        # what `docker login http://HOST` writes: a URL key
        content = content.replace(f'"{registry_basic.host}"', f'"http://{registry_basic.host}/v1/"')
    else:
        path = tmp_path / "pull-secret.yaml"
        content = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "registry-pull"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(content.encode()).decode()},
            }
        )
        explicit = [path]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    creds = Credentials.discover(explicit, env=env, home=str(home))
    with RegistryClient(creds, registry_basic.insecure) as client:
        assert client.resolve(ref).digest == base_image.digest


# --- TLS and plain HTTP ------------------------------------------------------------------


def test_tls_with_ca_file_and_with_certs_dir(
    base_image: BaseImage, registry_tls: RunningRegistry
) -> None:
    ref = base_image.copy_to(registry_tls)
    with RegistryClient(ca_file=str(registry_tls.ca_file)) as client:
        assert client.resolve(ref).digest == base_image.digest
    assert registry_tls.certs_dir is not None
    with RegistryClient(certs_dirs=[str(registry_tls.certs_dir.parent)]) as client:
        assert client.resolve(ref).digest == base_image.digest
    assert registry_tls.skopeo_digest(ref) == base_image.digest


def test_tls_without_the_ca_is_refused_with_the_fix(
    base_image: BaseImage, registry_tls: RunningRegistry
) -> None:
    ref = base_image.copy_to(registry_tls)
    start = time.monotonic()
    with RegistryClient(certs_dirs=[]) as client, pytest.raises(RegistryError) as info:
        client.resolve(ref)
    msg = str(info.value)
    assert msg.startswith(f"registry {registry_tls.host}: TLS certificate not trusted (")
    assert (
        f"--registry-ca FILE or put it in /etc/containers/certs.d/{registry_tls.host}/ca.crt" in msg
    )
    assert not info.value.transient
    assert time.monotonic() - start < 2


def test_plain_http_only_when_named_insecure(
    base_image: BaseImage, registry: RunningRegistry, registry_tls: RunningRegistry
) -> None:
    with RegistryClient(retry_deadline_s=1) as client, pytest.raises(RegistryError) as info:
        client.resolve(base_image.ref)
    assert str(info.value) == (
        f"registry {registry.host} does not speak TLS (a plain-HTTP registry?); if it is, "
        f"name it with --insecure-registry {registry.host}"
    )
    with RegistryClient(insecure={registry.host}) as client:
        assert client.resolve(base_image.ref).digest == base_image.digest
    # And the other way round: an HTTPS registry named insecure.
    with (
        RegistryClient(insecure={registry_tls.host}) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.manifest_digest(f"{registry_tls.host}/base/bootc", "latest")
    assert "speaks HTTPS but is named as a plain-HTTP registry" in str(info.value)


# --- failures, retries -------------------------------------------------------------------


def test_unreachable_registry_fails_within_the_deadline() -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    deadline = 1.5
    start = time.monotonic()
    with (
        RegistryClient(insecure={host}, retry_deadline_s=deadline) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.resolve(f"{host}/fleet/base:latest")
    elapsed = time.monotonic() - start
    msg = str(info.value)
    assert msg.startswith(
        f"registry {host} is unreachable (connection refused); check the host and port"
    )
    assert "gave up after" in msg
    assert info.value.transient
    assert elapsed < deadline + 2  # the error contract: seconds, never oras-py's 131 s


def test_a_host_that_stayed_unreachable_is_not_retried_by_every_request_in_turn() -> None:
    """A pass with a dead push registry: the first request (per thread) retries until
    the deadline; the requests after it, on the client or its clones, fail at once with
    the same error, so the pass reports it after one deadline and not one per pool."""
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    deadline = 1.0
    with RegistryClient(insecure={host}, retry_deadline_s=deadline) as client:
        clones = [client.clone(), client.clone()]
        with pytest.raises(RegistryError) as first:
            client.manifest_digest(f"{host}/fleet/a", "latest")
        tried = client.requests
        assert tried > 1
        assert "gave up after" in str(first.value)
        for i, c in enumerate([client, *clones] * 3):
            with pytest.raises(RegistryError) as later:
                c.blob_exists(f"{host}/fleet/p{i}", "sha256:" + "0" * 64)
            assert later.value.transient
            assert str(later.value).startswith(str(first.value))
            assert "not retried (an earlier request just gave up)" in str(later.value)
        assert client.requests == tried
        assert all(c.requests == 0 for c in clones)
        time.sleep(deadline)  # and once as long again has passed, it is tried again
        with pytest.raises(RegistryError) as again:
            clones[0].manifest_digest(f"{host}/fleet/a", "latest")
        assert "gave up after" in str(again.value)
        assert clones[0].requests > 1


class FaultyProxy:
    """Forwards to a real registry, after failing the first `fail` requests with
    `status` (and `Retry-After`), and refusing bodies over `max_body` with 413 as an
    nginx with `client_max_body_size` would."""

    def __init__(
        self,
        upstream: RunningRegistry,
        *,
        fail: int = 0,
        status: int = 503,
        retry_after: str | None = None,
        max_body: int | None = None,
    ) -> None:
        self.fail, self.status, self.retry_after, self.max_body = (
            fail,
            status,
            retry_after,
            max_body,
        )
        self.seen: list[tuple[str, str, int]] = []
        proxy = self
        upstream_client = httpx.Client(base_url=upstream.url, timeout=10)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail > 0:
                    proxy.fail -= 1
                    self._reply(
                        proxy.status,
                        {"Retry-After": proxy.retry_after} if proxy.retry_after else {},
                        b"",
                    )
                    return
                if proxy.max_body is not None and len(body) > proxy.max_body:
                    self._reply(413, {}, b"<html>413 Request Entity Too Large</html>")
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                # distribution builds Location from Host: keep clients on the proxy.
                headers["Host"] = f"127.0.0.1:{proxy.port}"
                r = upstream_client.request(self.command, self.path, headers=headers, content=body)
                keep = {
                    k: v
                    for k, v in r.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                self._reply(r.status_code, keep, r.content)

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                proxy.seen.append((self.command, self.path.split("?")[0], status))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self._upstream_client = upstream_client
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._upstream_client.close()


@pytest.fixture
def proxy_factory(registry: RunningRegistry) -> Iterator[Any]:
    made: list[FaultyProxy] = []

    def make(**kw: Any) -> FaultyProxy:
        made.append(FaultyProxy(registry, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_5xx_and_429_are_retried(base_image: BaseImage, proxy_factory: Any) -> None:
    proxy = proxy_factory(fail=2, status=503)
    with RegistryClient(insecure={proxy.host}, retry_deadline_s=5) as client:
        res = client.resolve(f"{proxy.host}/base/bootc:latest")
    assert res.digest == base_image.digest
    assert [s for _, _, s in proxy.seen[:3]] == [503, 503, 200]

    proxy = proxy_factory(fail=1, status=429, retry_after="1")
    start = time.monotonic()
    with RegistryClient(insecure={proxy.host}, retry_deadline_s=5) as client:
        assert client.manifest_digest(f"{proxy.host}/base/bootc", "latest") == base_image.digest
    assert time.monotonic() - start >= 1.0  # honoured Retry-After


def test_persistent_5xx_gives_up_at_the_deadline(base_image: BaseImage, proxy_factory: Any) -> None:
    proxy = proxy_factory(fail=10**6, status=502)
    start = time.monotonic()
    with (
        RegistryClient(insecure={proxy.host}, retry_deadline_s=1.0) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.manifest_digest(f"{proxy.host}/base/bootc", "latest")
    assert info.value.transient
    assert "502 Bad Gateway" in str(info.value)
    assert "gave up after" in str(info.value)
    assert time.monotonic() - start < 3


def test_4xx_is_not_retried(registry: RunningRegistry, proxy_factory: Any) -> None:
    proxy = proxy_factory()
    with (
        RegistryClient(insecure={proxy.host}, retry_deadline_s=5) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.put_manifest(
            f"{proxy.host}/bad/manifest", "v1", b'{"schemaVersion": 2}', OCI_MANIFEST
        )
    assert not info.value.transient
    assert [m for m, _, _ in proxy.seen] == ["PUT"]


def test_413_falls_back_to_chunks(
    registry: RunningRegistry, proxy_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = proxy_factory(max_body=100_000)
    data = os.urandom(250_000)
    # Chunks must fit under the proxy's limit; the real default (16 MiB) is for real
    # proxies' limits (nginx: 1 MiB default is raised by every registry deployment).
    monkeypatch.setattr(registry_module.blobs, "DEFAULT_CHUNK_SIZE", 64 * 1024)
    with RegistryClient(insecure={proxy.host}) as client:
        digest = client.push_blob(f"{proxy.host}/big/blob", data)
    statuses = [(m, s) for m, _, s in proxy.seen]
    assert ("PUT", 413) in statuses
    assert statuses.count(("PATCH", 202)) == 4
    assert raw_get(registry, f"/v2/big/blob/blobs/{digest}").content == data


def test_push_a_two_arch_index(
    base_image: BaseImage, registry: RunningRegistry, tmp_path: Path
) -> None:
    target = f"{registry.host}/pushed/multi"
    with registry.client() as client:
        for img in (base_image.bootc, base_image.arm64):
            client.ensure_blobs(
                target,
                [{"digest": d, "size": len(b)} for d, b in img.blobs.items()],
                base_image.multi_repository,
            )
            client.put_manifest(target, img.digest, img.manifest, OCI_MANIFEST)
        digest = client.put_manifest(target, "latest", base_image.index, OCI_INDEX)
        assert (
            client.resolve(f"{target}:latest", arch="arm64").digest == base_image.multi_arm64_digest
        )
    assert digest == base_image.multi_digest == registry.skopeo_digest(f"{target}:latest")
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{target}:latest"],
        capture_output=True,
        check=True,
    ).stdout
    assert sha256(out) == digest


def test_base_image_fixture_is_bootc_like(
    base_image: BaseImage, registry: RunningRegistry, tmp_path: Path
) -> None:
    """What other tests build on, read back with skopeo and umoci."""
    layout = tmp_path / "oci"
    registry.skopeo(
        "copy", "--src-tls-verify=false", f"docker://{base_image.ref}", f"oci:{layout}:base"
    )
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:base", str(tmp_path / "bundle")],
        check=True,
        capture_output=True,
    )
    root = tmp_path / "bundle/rootfs"
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "usr/bin/sh") == "busybox"
    assert os.readlink(root / "etc/os-release") == "../usr/lib/os-release"
    assert b"ID=testos" in (root / "etc/os-release").read_bytes()
    assert (root / "usr/lib/modules/6.1.0-test/vmlinuz").is_file()
    assert bootc_lint.lint_rootfs(root) == []  # /sysroot, /ostree, prepare-root.conf, ...
    out = subprocess.run(
        [str(root / "usr/bin/busybox"), "echo", "bootc-like"], capture_output=True, check=True
    )
    assert out.stdout == b"bootc-like\n"
    config = json.loads(
        registry.skopeo("inspect", "--tls-verify=false", "--config", f"docker://{base_image.ref}")
    )
    assert config["config"]["Labels"] == {"containers.bootc": "1", "ostree.bootable": "1"}
    assert config["architecture"] == "amd64"
