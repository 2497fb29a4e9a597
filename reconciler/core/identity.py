"""Identity: a pool's build inputs → inputs digest, image tag and content labels.

Stage: after rendering, before any build. Input: the base image's per-architecture
manifest digest (a tag already resolved through the registry; an index already
narrowed to the pool's architecture), the rendered config, the MachineOSConfig, the
repository settings, the architecture and the builder format version. Output: the
inputs digest (`sha256:` over canonical JSON of exactly the inputs that can change the
image), the tag derived from it, and the labels written into the image.

Because the tag is a pure function of the inputs, "does this image exist?" is one
HEAD request for `<repo>:<tag>`, on any replica, after any restart or revert (DESIGN
§2 promise 3); nothing is ever rebuilt for inputs already built.

What is hashed, field by field (anything not listed cannot change the image):
- `pool`: the image carries the pool name as a label, so two pools with the same
  configs still get distinct images;
- `architecture`: the base manifest and the kernel/package steps depend on it;
- `baseImageDigest`: the resolved digest, never the tag as written, so a moving tag
  is a new input and a respelled tag that resolves to the same digest is not;
- `rendered`: the rendered spec as images are made of it (`RenderedConfig.image_spec`:
  config, kargs, extensions, kernelType, fips, osImageURL as written), that is without
  core's `sshAuthorizedKeys` and `passwordHash`, which nodes apply live (the pin's
  `liveConfigDigest`): a key or password change is the same image, and no reboot;
- MachineOSConfig: only the `containerFile` entry used for the architecture (its own,
  else `NoArch`). `renderedImagePushSpec` (where the image goes, not what it is),
  `imageBuilder` (who builds), the secret names (credentials, not content),
  `baseImagePullSpec` (covered by `baseImageDigest`) and `architecture` (covered
  above) are left out;
- settings: only the packages of the extensions the pool uses. The default base image
  is covered by `baseImageDigest`, the default builder does not change content, and
  an edit to the package list of an extension no pool uses rebuilds nothing;
- `caBundle`: the sha256 of the CA bundle baked in by Containerfile builds, if any
  (`ReconcilerConfig.spec.caBundle`, unless the caller passes another);
- `builderFormatVersion`: `oci.BUILDER_FORMAT_VERSION`.

Labels are content-derived only: pool and inputs digest. Never a commit SHA or a time,
so reverting a commit reproduces the old inputs, the old tag and the old image. Not the
rendered config's name either: it hashes the live settings too, so one image serves
every rendered config that differs from another only in them (the pin names which).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.core import canonical, model, pins, reference
from reconciler.core.image import oci, sigpolicy
from reconciler.core.merge import RenderedConfig

LABEL_PREFIX = f"{model.OUR_GROUP}/"
POOL_LABEL = f"{LABEL_PREFIX}pool"
INPUTS_LABEL = f"{LABEL_PREFIX}inputs-digest"

DIGEST_RE = canonical.SHA256_DIGEST_RE
TAG_MAX = 128

# MachineOSConfig `containerfileArch` for each architecture name we use.
CONTAINERFILE_ARCH = {"amd64": "AMD64", "arm64": "ARM64", "ppc64le": "PPC64LE", "s390x": "S390X"}


def containerfile_for(
    os_config: model.MachineOSConfig | None, architecture: str
) -> model.ContainerFile | None:
    """The admin's Containerfile entry for the architecture, else the `NoArch` one.

    MCO uses only the NoArch entry today (`buildrequest.go`); we honour the
    per-architecture one first, as the API's enum promises, and fall back to NoArch.
    """
    if os_config is None:
        return None
    entries: dict[str, model.ContainerFile] = {
        cf.containerfile_arch: cf for cf in os_config.spec.container_file
    }
    return entries.get(CONTAINERFILE_ARCH.get(architecture, "")) or entries.get("NoArch")


def extension_packages(
    extensions: Sequence[str], settings: model.ReconcilerConfigSpec
) -> dict[str, list[str]]:
    """Packages of each extension used (unknown names map to [], load refuses them)."""
    table: Mapping[str, Sequence[str]] = (
        settings.extensions if settings.extensions is not None else model.MCO_EXTENSIONS
    )
    return {name: list(table.get(name, ())) for name in sorted(set(extensions))}


def ca_bundle_of(settings: model.ReconcilerConfigSpec) -> bytes | None:
    """The repository's CA bundle as the image gets it, or None."""
    return settings.ca_bundle.encode() if settings.ca_bundle else None


def inputs_document(
    base_digest: str,
    rendered: RenderedConfig,
    os_config: model.MachineOSConfig | None,
    settings: model.ReconcilerConfigSpec,
    *,
    architecture: str,
    builder_format_version: str = oci.BUILDER_FORMAT_VERSION,
    ca_bundle: bytes | None = None,
) -> dict[str, Any]:
    """Exactly what the inputs digest covers, as a JSON-able dict (shown by `plan`)."""
    if not DIGEST_RE.match(base_digest):
        raise ValueError(f"base digest {base_digest!r} is not 'sha256:<64 hex>'")
    cf = containerfile_for(os_config, architecture)
    if ca_bundle is None:
        ca_bundle = ca_bundle_of(settings)
    return {
        "builderFormatVersion": builder_format_version,
        "pool": rendered.pool,
        "architecture": architecture,
        "baseImageDigest": base_digest,
        "rendered": rendered.image_spec(),
        "containerFile": (
            {"arch": cf.containerfile_arch, "content": cf.content} if cf is not None else None
        ),
        "extensionPackages": extension_packages(rendered.spec.get("extensions", []), settings),
        "caBundle": canonical.sha256_digest(ca_bundle) if ca_bundle else None,
        # Only when set, so that pools without it keep the digests they had.
        **_update_policy(rendered.pool, os_config, settings),
    }


def _update_policy(
    pool: str, os_config: model.MachineOSConfig | None, settings: model.ReconcilerConfigSpec
) -> dict[str, Any]:
    files = sigpolicy.policy_files(pool, os_config, settings)
    if not files:
        return {}
    return {"updatePolicy": {p: canonical.sha256_digest(d) for p, d in sorted(files.items())}}


def inputs_digest(
    base_digest: str,
    rendered: RenderedConfig,
    os_config: model.MachineOSConfig | None,
    settings: model.ReconcilerConfigSpec,
    *,
    architecture: str,
    builder_format_version: str = oci.BUILDER_FORMAT_VERSION,
    ca_bundle: bytes | None = None,
) -> str:
    """`sha256:` over the canonical JSON of `inputs_document(...)`."""
    doc = inputs_document(
        base_digest,
        rendered,
        os_config,
        settings,
        architecture=architecture,
        builder_format_version=builder_format_version,
        ca_bundle=ca_bundle,
    )
    return canonical.sha256_digest(canonical.canonical_json(doc))


def image_tag(pool: str, digest: str) -> str:
    """`<pool>-<64 hex of the inputs digest>`: a valid OCI tag of at most 128 chars.

    Pool names are at most 63 characters (load.py), so the whole digest always fits;
    a longer name (never produced by load) is cut, the digest never is.
    """
    if not DIGEST_RE.match(digest):
        raise ValueError(f"inputs digest {digest!r} is not 'sha256:<64 hex>'")
    hex_part = digest.split(":", 1)[1]
    tag = f"{pool[: TAG_MAX - len(hex_part) - 1]}-{hex_part}"
    if not reference.TAG_RE.match(tag):
        raise ValueError(f"pool name {pool!r} does not make a valid tag ({tag!r})")
    return tag


def image_labels(rendered: RenderedConfig, digest: str | None = None) -> dict[str, str]:
    """Our labels on the image: the pool, and the inputs digest if known."""
    labels = {POOL_LABEL: rendered.pool}
    if digest is not None:
        labels[INPUTS_LABEL] = digest
    return labels


def config_fingerprint(
    rendered: RenderedConfig,
    os_config: model.MachineOSConfig | None,
    settings: model.ReconcilerConfigSpec,
    *,
    architecture: str,
) -> str:
    """The pool's inputs as Git alone states them: the inputs document with the base
    image as written instead of its resolved digest.

    Holds (DESIGN §6) end when "the pool's inputs change again"; replicas must agree
    on that from history alone, without asking a registry what a tag meant then, so
    they compare this instead of the inputs digest. The live settings count as inputs
    here (by their digest): a key change ends a hold, as any other config change does.
    """
    doc = inputs_document(
        "sha256:" + "0" * 64, rendered, os_config, settings, architecture=architecture
    )
    doc["baseImageDigest"] = None
    doc["baseImage"] = rendered.spec.get("osImageURL", "")
    doc["liveConfigDigest"] = pins.live_config_digest(
        rendered.ssh_authorized_keys, rendered.password_hash
    )
    return canonical.sha256_digest(canonical.canonical_json(doc))
