"""The image's own update policy: containers-policy files requiring the pool's key for
the pool's repository, so a node verifies its next image before `bootc switch` takes it.

Stage: part of the image plan (config layer files) and of the inputs digest. Inputs:
the pool, its MachineOSConfig's push spec (the repository) and
`ReconcilerConfig.spec.imageSigning.publicKey`. Output: files by absolute path. Pure.

Written when `imageSigning` is set (containers-policy.json(5),
containers-registries.d(5), containers/image signature/policy_eval_sigstore.go):

- `/etc/pki/containers/bootc-reconciler.pub`: the public key;
- `/etc/containers/policy.json`: `default` is `reject`, because bootc
  `--enforce-container-sigpolicy` refuses a policy whose default is
  `insecureAcceptAnything` (ostree-ext container/store.rs); the pool's repository
  requires a `sigstoreSigned` signature by the key (`matchRepository`: the pin is
  `repo@sha256:...`, signed with the repository as its identity); every other image of
  every transport is accepted as before (each transport's `""` scope), so podman on the
  node keeps working. It replaces the base image's policy.json: add other scopes in
  the base image's own policy if you need them there;
- `/etc/containers/registries.d/bootc-reconciler-<pool>.yaml`: `use-sigstore-attachments:
  true` for the repository, so containers/image fetches `sha256-<hex>.sig`.

With `sourceVerification` set, `/etc/bootc-reconciler/allowed-signers` holds its
`pinSigners` and `allowedSigners`: the node agent applies a pin only from a commit one
of them signed, so the next pin is checked against keys the booted (signed) image
brought.

The node agent passes `--enforce-container-sigpolicy` when `/etc/containers/policy.json`
requires signatures (reconciler/agent, adapters/bootc.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from reconciler.core import reference

if TYPE_CHECKING:  # annotations only: the agent reads the paths without the models
    from reconciler.core import model

KEY_PATH = "/etc/pki/containers/bootc-reconciler.pub"
ALLOWED_SIGNERS_PATH = "/etc/bootc-reconciler/allowed-signers"
"""With `sourceVerification`: its `pinSigners` and `allowedSigners` in allowed-signers
format, the keys the node agent accepts on a pin commit (its `--allowed-signers`
default)."""
POLICY_PATH = "/etc/containers/policy.json"
REGISTRIES_D = "/etc/containers/registries.d"
_TRANSPORTS = (
    "docker", "atomic", "containers-storage", "dir", "docker-archive", "docker-daemon",
    "oci", "oci-archive", "sif", "tarball",
)  # fmt: skip


def policy_repository(os_config: model.MachineOSConfig) -> str:
    """The repository a pool's images go to (and its policy names)."""
    return reference.repository(reference.parse(os_config.spec.rendered_image_push_spec))


def policy_files(
    pool: str, os_config: model.MachineOSConfig | None, settings: model.ReconcilerConfigSpec
) -> dict[str, bytes]:
    """Path → content of the update policy files (none without `imageSigning` and
    `sourceVerification`, or without a MachineOSConfig)."""
    files: dict[str, bytes] = {}
    verification = settings.source_verification
    if verification is not None and os_config is not None:
        lines = [*verification.pin_signers, *verification.allowed_signers]
        files[ALLOWED_SIGNERS_PATH] = "".join(f"{line.strip()}\n" for line in lines).encode()
    signing = settings.image_signing
    if signing is None or os_config is None:
        return files
    repo = policy_repository(os_config)
    accept = [{"type": "insecureAcceptAnything"}]
    transports: dict[str, dict[str, object]] = {t: {"": accept} for t in _TRANSPORTS}
    transports["docker"][repo] = [
        {
            "type": "sigstoreSigned",
            "keyPath": KEY_PATH,
            "signedIdentity": {"type": "matchRepository"},
        }
    ]
    policy = {"default": [{"type": "reject"}], "transports": transports}
    registries = f"docker:\n  {repo}:\n    use-sigstore-attachments: true\n"
    key = signing.public_key.strip() + "\n"
    files[KEY_PATH] = key.encode()
    files[POLICY_PATH] = (json.dumps(policy, indent=2, sort_keys=True) + "\n").encode()
    files[f"{REGISTRIES_D}/bootc-reconciler-{pool}.yaml"] = registries.encode()
    return files


def requires_signatures(policy_json: bytes) -> bool:
    """Whether a node's policy.json is one `bootc --enforce-container-sigpolicy` can use:
    it parses and its default is not `insecureAcceptAnything` (what bootc refuses)."""
    try:
        doc = json.loads(policy_json)
        default = doc["default"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(default, list) and all(
        isinstance(r, dict) and r.get("type") != "insecureAcceptAnything" for r in default
    )
