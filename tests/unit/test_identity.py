"""Identity: the inputs digest changes exactly when the image could change, and the tag
and labels derive from content only."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters import directory
from reconciler.core import identity, load, merge, model
from reconciler.core.image import oci
from reconciler.core.merge import RenderedConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = "sha256:" + "a" * 64
SETTINGS = model.ReconcilerConfigSpec()


def repo() -> load.Repository:
    return load.load_repository(directory.read_config_files(EXAMPLES))


def rendered(pool: str = "infra", files: dict[str, bytes] | None = None) -> RenderedConfig:
    r = repo()
    rc = merge.render_pool(r, pool)
    if files is None:
        return rc
    spec = dict(rc.spec)
    config = dict(spec["config"])
    config["storage"] = {
        **config.get("storage", {}),
        "files": [
            *config.get("storage", {}).get("files", []),
            *({"path": p, "contents": {"source": "data:," + d.decode()}} for p, d in files.items()),
        ],
    }
    spec["config"] = config
    return RenderedConfig(pool=rc.pool, name=rc.name + "x", spec=spec, sources=rc.sources)


def mosc(**spec: Any) -> model.MachineOSConfig:
    return model.MachineOSConfig.model_validate(
        {
            "apiVersion": "machineconfiguration.openshift.io/v1",
            "kind": "MachineOSConfig",
            "metadata": {"name": "infra"},
            "spec": {
                "machineConfigPool": {"name": "infra"},
                "renderedImagePushSpec": "registry.example.com/fleet/infra:latest",
                **spec,
            },
        }
    )


def digest(**kw: Any) -> str:
    return identity.inputs_digest(
        kw.pop("base", BASE),
        kw.pop("rendered", None) or rendered(),
        kw.pop("os_config", None),
        kw.pop("settings", SETTINGS),
        architecture=kw.pop("architecture", "amd64"),
        **kw,
    )


def test_same_inputs_same_digest() -> None:
    assert digest() == digest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest())


@pytest.mark.parametrize(
    "change",
    [
        {"base": "sha256:" + "b" * 64},
        {"rendered": "files"},
        {"architecture": "arm64"},
        {"builder_format_version": "999"},
        {"ca_bundle": b"-----BEGIN CERTIFICATE-----\n"},
        {"os_config": mosc(containerFile=[{"containerfileArch": "NoArch", "content": "RUN true"}])},
        {"settings": model.ReconcilerConfigSpec(extensions={"sysstat": ["sysstat", "pcp"]})},
    ],
)
def test_inputs_that_can_change_the_image_change_the_digest(change: dict[str, Any]) -> None:
    if change.get("rendered") == "files":
        change = {"rendered": rendered(files={"/etc/motd": b"hello"})}
    assert digest(**change) != digest()


def test_pool_name_is_an_input() -> None:
    infra = rendered("infra")
    renamed = RenderedConfig("infra2", infra.name, infra.spec, infra.sources)
    assert digest(rendered=renamed) != digest(rendered=infra)


@pytest.mark.parametrize(
    "os_config",
    [
        mosc(),
        mosc(renderedImagePushSpec="other.example.com/elsewhere/infra:v9"),
        mosc(renderedImagePushSecret={"name": "another-secret"}),
        mosc(baseImagePullSecret={"name": "pull"}),
        mosc(imageBuilder={"imageBuilderType": "Job"}),
        mosc(baseImagePullSpec="quay.io/fedora/fedora-bootc@sha256:" + "a" * 64),
        mosc(architecture="amd64"),
        # only the arm64 entry: not used by an amd64 pool
        mosc(containerFile=[{"containerfileArch": "ARM64", "content": "RUN echo arm"}]),
    ],
)
def test_machineosconfig_fields_that_do_not_change_the_image_do_not_change_the_digest(
    os_config: model.MachineOSConfig,
) -> None:
    assert digest(os_config=os_config) == digest(os_config=None)


def test_containerfile_entry_for_the_arch_wins_over_noarch() -> None:
    both = mosc(
        containerFile=[
            {"containerfileArch": "NoArch", "content": "RUN echo all"},
            {"containerfileArch": "AMD64", "content": "RUN echo amd64"},
        ]
    )
    only_amd = mosc(containerFile=[{"containerfileArch": "AMD64", "content": "RUN echo amd64"}])
    assert digest(os_config=both) == digest(os_config=only_amd)


def test_packages_of_unused_extensions_do_not_matter() -> None:
    table = {name: list(pkgs) for name, pkgs in model.MCO_EXTENSIONS.items()}
    extra = model.ReconcilerConfigSpec(extensions={**table, "ipsec": ["libreswan", "extra"]})
    assert digest(settings=extra) == digest()  # infra uses sysstat only


def test_yaml_key_order_and_file_layout_do_not_matter() -> None:
    files = directory.read_config_files(EXAMPLES)
    # the same documents, re-dumped with keys reversed and all in one file
    docs = []
    for path in sorted(files):
        for doc in yaml.safe_load_all(files[path]):
            docs.append(_reverse_keys(doc))
    relaid = {"everything.yaml": yaml.safe_dump_all(docs, sort_keys=False).encode()}
    original = merge.render_pool(load.load_repository(files), "infra")
    shuffled = merge.render_pool(load.load_repository(relaid), "infra")
    assert digest(rendered=original) == digest(rendered=shuffled)


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_inputs_document_shows_what_is_hashed() -> None:
    doc = identity.inputs_document(BASE, rendered(), None, SETTINGS, architecture="amd64")
    assert doc["builderFormatVersion"] == oci.BUILDER_FORMAT_VERSION
    assert doc["baseImageDigest"] == BASE
    assert doc["extensionPackages"] == {"sysstat": ["sysstat"]}
    assert doc["containerFile"] is None
    assert doc["pool"] == "infra"


def test_base_digest_must_be_a_digest() -> None:
    with pytest.raises(ValueError, match="sha256"):
        digest(base="quay.io/fedora/fedora-bootc:42")


TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


@pytest.mark.parametrize("pool", ["worker", "infra", "a" * 63, "x"])
def test_tag_is_a_valid_oci_tag_with_the_whole_digest(pool: str) -> None:
    d = digest()
    tag = identity.image_tag(pool, d)
    assert TAG.match(tag)
    assert len(tag) <= 128
    assert tag == f"{pool}-{d.removeprefix('sha256:')}"


def test_tag_follows_the_digest() -> None:
    assert identity.image_tag("infra", digest()) == identity.image_tag("infra", digest())
    assert identity.image_tag("infra", digest()) != identity.image_tag(
        "infra", digest(base="sha256:" + "c" * 64)
    )
    with pytest.raises(ValueError, match="digest"):
        identity.image_tag("infra", "latest")


def test_labels_are_content_derived_only() -> None:
    rc = rendered()
    d = digest(rendered=rc)
    labels = identity.image_labels(rc, d)
    assert labels == {"gitops.bootc.dev/pool": "infra", "gitops.bootc.dev/inputs-digest": d}
    # no rendered-config name: it hashes the live settings too, and one image serves
    # every rendered config that differs only in them
    assert identity.image_labels(rc) == {"gitops.bootc.dev/pool": "infra"}


def with_core(rc: RenderedConfig, **core: Any) -> RenderedConfig:
    spec = dict(rc.spec)
    spec["config"] = {**spec["config"], "passwd": {"users": [{"name": "core", **core}]}}
    return RenderedConfig(rc.pool, rc.name + "-core", spec, rc.sources)


def test_live_settings_are_not_inputs_of_the_image() -> None:
    # Issue 12: core's keys and password hash are applied live by nodes, so changing
    # them is the same inputs digest (the same tag, nothing built) ...
    base = with_core(rendered(), sshAuthorizedKeys=["ssh-ed25519 AAAA a"])
    rotated = with_core(rendered(), sshAuthorizedKeys=["ssh-ed25519 AAAB b"], passwordHash="$6$s$h")
    assert digest(rendered=rotated) == digest(rendered=base)
    doc = identity.inputs_document(BASE, rotated, None, SETTINGS, architecture="amd64")
    assert "$6$s$h" not in json.dumps(doc)
    assert "AAAB" not in json.dumps(doc)
    # ... declaring core at all is an image input (it makes the user and its ~/.ssh)
    spec = dict(base.spec)
    spec["config"] = {k: v for k, v in spec["config"].items() if k != "passwd"}
    assert digest(rendered=base) != digest(rendered=RenderedConfig("infra", "n", spec, ()))
    # ... but a hold ends on them: they are the pool's inputs as Git states them
    fp = functools.partial(identity.config_fingerprint, os_config=None, settings=SETTINGS,
                           architecture="amd64")  # fmt: skip
    assert fp(rotated) != fp(base)
    assert fp(with_core(rendered(), sshAuthorizedKeys=["ssh-ed25519 AAAA a"])) == fp(base)
