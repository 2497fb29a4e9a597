"""Shared fixtures. What is real and what is not, across the whole suite:

Real: the CNCF distribution registry (Debian `docker-registry`, started per session on
free 127.0.0.1 ports, without auth, with htpasswd Basic auth, with Bearer tokens, with
TLS), Git (file://, `git daemon`, smart HTTP with Basic auth, sshd with a deploy key),
buildah with chroot isolation, skopeo and umoci to read back what we pushed (and bootc's
lints that can run here, `tests/fixtures/bootc_lint.py`, on every image a builder made),
ostree for deployments into a scratch sysroot, shadow-utils' `chpasswd -R` on a scratch
host root for core's password.

Stand-ins, at our own boundary only (there is no API server or bootc binary here):
- Kubernetes: `tests/fixtures/kubeapi.py`, an in-process HTTP server that speaks the
  real REST paths the `kubernetes` client uses and enforces resourceVersion conflicts
  and PodDisruptionBudget refusals, and, when a test enables it, the RBAC of `deploy/`
  (ServiceAccount tokens, 403 for a verb no Role grants) and the agent's node fence; it
  serves CustomResourceDefinitions (deploy/'s BootcPool) with their status subresource,
  schema validation and printer columns, and legacy discovery, so the real `kubectl`
  (the Debian binary on this machine) can `get` from it;
- bootc (and the systemd calls the agent makes: reboot, soft-reboot, SoftRebootsCount,
  is-active): `tests/fixtures/bootc.py`, a stand-in command that follows the
  documented CLI contract and bootc's sources (reference `bootc-contract.md` §7-8:
  soft reboots, download-only stages, transports, usr-overlay); with
  `--enforce-container-sigpolicy` it evaluates the host's containers policy.json and
  registries.d as containers/image does for `reject`, `insecureAcceptAnything` and
  `sigstoreSigned` (keyPath, matchRepository, sigstore attachments), fetching the
  `sha256-<hex>.sig` manifest and payload from the real registry and checking the
  signature with openssl (Debian's containers/image has sigstore patched out).
"""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.gitservers",
    "tests.fixtures.kubeapi",
    "tests.fixtures.bootc",
    "tests.fixtures.buildbase",
]
