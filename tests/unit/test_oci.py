"""OCI composition: the new config and manifest bytes, and the predicted digest.

The registry names a pushed manifest by the sha256 of the bytes PUT; the real-registry
round trip is in the native builder's integration tests. Here: the bytes are what the
digest says, the base is kept, ours is appended, media types follow the base.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from reconciler.core.image import oci
from reconciler.core.image.layer import Entry, build_layer
from reconciler.errors import ConfigError

LAYER = build_layer([Entry("/etc/pool", "file", data=b"pool=worker\n")])
BASE_LAYER = {
    "mediaType": oci.OCI_LAYER_GZIP,
    "digest": "sha256:" + "1" * 64,
    "size": 1234,
    "annotations": {"x": "kept"},
}
BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2026-09-01T10:00:03Z",
    "config": {"Labels": {"containers.bootc": "1", "ostree.bootable": "1", "clash": "base"}},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64]},
    "history": [{"created": "2026-09-01T10:00:03Z", "created_by": "base"}],
}


def base_manifest(media_type: str | None = oci.OCI_MANIFEST, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "3" * 64, "size": 99},
        "layers": [BASE_LAYER],
        "annotations": {"org.opencontainers.image.version": "42"},
        **extra,
    }
    if media_type:
        doc["mediaType"] = media_type
    # registries serve whatever bytes were pushed: not canonical, on purpose
    return json.dumps(doc, indent=3).encode()


def compose(manifest: bytes | None = None, config: Any = None, **kw: Any) -> oci.ComposedImage:
    return oci.compose_image(
        manifest or base_manifest(),
        json.dumps(config or BASE_CONFIG).encode(),
        LAYER,
        labels=kw.pop("labels", {"gitops.bootc.dev/pool": "worker", "clash": "ours"}),
        created_by=kw.pop("created_by", "reconciler: config layer rendered-worker-x"),
    )


def test_predicted_digest_is_the_sha256_of_the_manifest_bytes() -> None:
    image = compose()
    assert image.manifest_digest == "sha256:" + hashlib.sha256(image.manifest_bytes).hexdigest()
    assert json.loads(image.manifest_bytes) == image.manifest
    assert image.config_digest == "sha256:" + hashlib.sha256(image.config_bytes).hexdigest()
    assert image.manifest["config"]["digest"] == image.config_digest
    assert image.manifest["config"]["size"] == len(image.config_bytes)


def test_same_inputs_same_bytes() -> None:
    assert compose().manifest_bytes == compose().manifest_bytes
    # key order of the base config does not matter: it is re-serialised canonically
    reordered = dict(reversed(list(BASE_CONFIG.items())))
    assert compose(config=reordered).manifest_digest == compose().manifest_digest


def test_bytes_are_canonical_json() -> None:
    image = compose()
    for raw in (image.manifest_bytes, image.config_bytes):
        assert (
            raw
            == json.dumps(
                json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        )


def test_layer_is_appended_to_the_base() -> None:
    image = compose()
    assert image.manifest["layers"][0] == BASE_LAYER
    assert image.manifest["layers"][1] == {
        "mediaType": oci.OCI_LAYER_GZIP,
        "digest": LAYER.digest,
        "size": LAYER.size,
    }
    assert image.config["rootfs"]["diff_ids"] == [*BASE_CONFIG["rootfs"]["diff_ids"], LAYER.diff_id]
    assert image.config["history"][-1] == {
        "created": "2026-09-01T10:00:03Z",
        "created_by": "reconciler: config layer rendered-worker-x",
    }
    assert image.config["history"][0] == BASE_CONFIG["history"][0]


def test_labels_keep_the_base_and_add_ours() -> None:
    labels = compose().config["config"]["Labels"]
    assert labels == {
        "containers.bootc": "1",
        "ostree.bootable": "1",
        "clash": "ours",
        "gitops.bootc.dev/pool": "worker",
    }


def test_created_is_the_base_created_or_the_epoch() -> None:
    assert compose().config["created"] == "2026-09-01T10:00:03Z"
    no_created = {k: v for k, v in BASE_CONFIG.items() if k not in ("created", "history")}
    image = compose(config=no_created)
    assert image.config["created"] == oci.EPOCH
    assert image.config["history"] == [
        {"created": oci.EPOCH, "created_by": "reconciler: config layer rendered-worker-x"}
    ]


def test_oci_manifest_records_the_base_digest_and_drops_base_annotations() -> None:
    raw = base_manifest()
    image = compose(manifest=raw)
    assert image.manifest["annotations"] == {
        oci.BASE_DIGEST_ANNOTATION: "sha256:" + hashlib.sha256(raw).hexdigest()
    }


def test_oci_manifest_without_media_type_is_recognised() -> None:
    image = compose(manifest=base_manifest(media_type=None))
    assert image.media_type == oci.OCI_MANIFEST
    assert image.manifest["mediaType"] == oci.OCI_MANIFEST


def test_docker_base_gives_a_docker_image() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.DOCKER_MANIFEST,
            "config": {"mediaType": oci.DOCKER_CONFIG, "digest": "sha256:" + "3" * 64, "size": 9},
            "layers": [
                {"mediaType": oci.DOCKER_LAYER_GZIP, "digest": "sha256:" + "1" * 64, "size": 5}
            ],
        }
    ).encode()
    image = compose(manifest=raw)
    assert image.manifest["mediaType"] == oci.DOCKER_MANIFEST
    assert image.manifest["config"]["mediaType"] == oci.DOCKER_CONFIG
    assert image.layer_descriptor["mediaType"] == oci.DOCKER_LAYER_GZIP
    assert "annotations" not in image.manifest


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (json.dumps({"mediaType": oci.OCI_INDEX, "manifests": []}).encode(), "index"),
        (json.dumps({"manifests": []}).encode(), "index"),
        (b"not json", "not JSON"),
        (base_manifest(media_type="application/vnd.example+json"), "unsupported"),
        (base_manifest(layers=[BASE_LAYER, BASE_LAYER]), "1 diff_ids for 2 layers"),
    ],
)
def test_unusable_bases_are_refused(manifest: bytes, message: str) -> None:
    with pytest.raises(oci.ManifestError, match=message):
        compose(manifest=manifest)


INDEX = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_INDEX,
    "manifests": [
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": "sha256:" + "a" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": "sha256:" + "b" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": "sha256:" + "c" * 64,
            "size": 1,
            "platform": {"os": "windows", "architecture": "amd64"},
        },
    ],
}


@pytest.mark.parametrize(("arch", "digest"), [("amd64", "a" * 64), ("arm64", "b" * 64)])
def test_select_platform_manifest(arch: str, digest: str) -> None:
    assert (
        oci.select_platform_manifest(json.dumps(INDEX).encode(), arch)["digest"]
        == f"sha256:{digest}"
    )


def test_missing_platform_names_what_there_is() -> None:
    with pytest.raises(ConfigError) as exc:
        oci.select_platform_manifest(INDEX, "s390x", image="quay.io/fedora/fedora-bootc:42")
    text = str(exc.value)
    assert "quay.io/fedora/fedora-bootc:42 has no linux/s390x image" in text
    assert "linux/amd64, linux/arm64, windows/amd64" in text
