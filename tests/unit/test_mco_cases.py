"""MCO's own validation and reconcilability tests, transcribed as table cases: each
MachineConfig is accepted or refused here as the Go test expects MCO to (or as listed
among the deliberate differences in `repo-layout/README.md`). Merge tests are golden
cases (`golden/mco-*`). Source: openshift/machine-config-operator @ 7ff337a4,
`pkg/controller/common/helpers_test.go` and `reconcile_test.go`; each case names its
Go test. MCO's reconcilability tests compare a new config with the node's current
one; here the current one is the empty config, as on a freshly installed machine."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from reconciler.core import load, verdict
from reconciler.core.image import layout

POOL = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: worker}
spec:
  machineConfigSelector:
    matchLabels: {machineconfiguration.openshift.io/role: worker}
"""
SETTINGS = """\
apiVersion: gitops.bootc.dev/v1alpha1
kind: ReconcilerConfig
metadata: {name: settings}
spec: {defaultBaseImage: "quay.io/fedora/fedora-bootc:42"}
"""


@dataclass(frozen=True)
class Case:
    id: str
    go_test: str
    spec: str
    refused: str | None = None
    """A part of the problem expected; None: accepted."""
    warning: str | None = None
    """A part of a warning expected."""


def ign(body: str = "", version: str = "3.5.0") -> str:
    return f"config:\n  ignition: {{version: {version}}}\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "  "
    )


V = "TestValidateIgnition"
R = "TestIsRenderedConfigReconcilable"
S = "TestReconcilableSSH"
CASES = [
    Case("empty-config-is-valid", V, ign()),
    Case("no-version-is-invalid", V, "config:\n  passwd:\n    users: [{name: core, sshAuthorizedKeys: ['5678', abc]}]",
         refused="Ignition version is missing"),
    Case("spec-2-file-is-valid", V, ign("storage:\n  files: [{filesystem: root, path: /etc/testfileconfig, mode: 420, contents: {source: 'data:,helloworld'}}]", "2.2.0")),
    Case("spec-3-file-is-valid", V, ign("storage:\n  files: [{path: /etc/testfileconfig, mode: 420, contents: {source: 'data:,greatconfigstuff'}}]")),
    Case("spec-3-sticky-mode-is-invalid", V, ign("storage:\n  files: [{path: /etc/testfileconfig, mode: 1023, contents: {source: 'data:,x'}}]"),
         refused="cannot exceed 0777"),
    Case("spec-2-sticky-mode-is-invalid", V, ign("storage:\n  files: [{filesystem: root, path: /etc/testfileconfig, mode: 1023, contents: {source: 'data:,x'}}]", "2.2.0"),
         refused="cannot exceed 0777"),
    Case("unknown-version-is-irreconcilable", R, ign(version="4.0.0"), refused="unknown version '4.0.0'"),
    Case("max-version-is-reconcilable", R, ign()),
    # Deliberate difference: disks, filesystems and RAID are install-time sections,
    # accepted with a warning (MCO refuses a change to them on a running node).
    Case("disks-install-time", R, ign("storage:\n  disks: [{device: /one}]"), warning="install time only"),
    Case("filesystems-install-time", R, ign("storage:\n  filesystems: [{device: /dev/sda1, format: ext4, path: /foo/bar}]"),
         warning="install time only"),
    Case("raid-install-time", R, ign("storage:\n  raid: [{name: data, level: stripe, devices: [/dev/vda, /dev/vdb]}]"),
         warning="install time only"),
    Case("passwd-groups-are-irreconcilable", R, ign("passwd:\n  groups: [{name: testGroup}]"), refused="Groups section is not supported"),
    Case("ignition-kargs-are-irreconcilable", R, ign("kernelArguments: {shouldExist: ['foo=bar'], shouldNotExist: ['baz=foo']}"),
         refused="kargs section is not supported"),
    Case("luks-tang-is-reconcilable", R, ign("""
        storage:
          luks:
            - name: luks-tang
              device: /dev/sdb
              clevis: {tang: [{url: 'https://tang.example.com', thumbprint: TREPLACE-THIS-WITH-YOUR-TANG-THUMBPRINT}]}
        """), warning="LUKS volumes are set up at install time only"),
    Case("fips-on-a-new-machine", R, "fips: true"),
    Case("forcefile-is-irreconcilable", R, ign("storage:\n  files: [{path: /run/machine-config-daemon-force, mode: 420, contents: {source: 'data:,'}}]"),
         refused="cannot create /run/machine-config-daemon-force"),
    Case("core-ssh-keys-are-reconcilable", S, ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ['5678', abc]}]")),
    Case("non-core-user-is-irreconcilable", S, ign("passwd:\n  users: [{name: another-user, sshAuthorizedKeys: ['5678']}]"),
         refused="non-core user 'another-user'"),
    Case("core-home-dir-is-irreconcilable", S, ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ['5678'], homeDir: somedir}]"),
         refused="homeDir of user core is not supported"),
    Case("second-user-is-irreconcilable", S, ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ['5678']}, {name: some-user, sshAuthorizedKeys: ['5678']}]"),
         refused="non-core user 'some-user'"),
    Case("core-without-keys-is-irreconcilable", S, ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: []}]"),
         refused="no sshAuthorizedKeys and no passwordHash"),
    Case("no-users-is-reconcilable", S, ign("passwd: {}")),
    Case("core-password-hash", "TestMergeMachineConfigs", ign("passwd:\n  users: [{name: core, passwordHash: testpass}]")),
    Case("supported-extensions", "TestValidateMachineConfigExtensions", "extensions: [sysstat, sandboxed-containers]"),
    Case("unsupported-extensions", "TestValidateMachineConfigExtensions", "extensions: [unsupported1, unsupported2]",
         refused="unsupported extension 'unsupported1'"),
    Case("spec-2-duplicate-ssh-keys", "TestParseAndConvert", ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ['5678', '5678', abc]}]", "2.2.0")),
    Case("ignition-kargs-e2e", "e2e add-ignition-kernel-arguments.yaml",
         ign("kernelArguments: {shouldExist: [enforcing=0]}", "3.3.0"), refused="kargs section is not supported"),
]  # fmt: skip


def load_case(case: Case) -> tuple[load.Repository, list[str]]:
    mc = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: case\n  labels: {machineconfiguration.openshift.io/role: worker}\n"
        "spec:\n" + textwrap.indent(case.spec, "  ") + "\n"
    )
    files = {"mc.yaml": mc, "pool.yaml": POOL, "reconciler.yaml": SETTINGS}
    repo = load.load_repository(files)
    problems = [str(p) for p in repo.problems]
    rendered, failed = verdict.render_all(repo)
    problems += [str(p) for e in failed.values() for p in e.problems]
    for result in rendered.values():
        try:
            layout.plan_image(result, None, repo.settings, "amd64")
        except Exception as exc:  # a plan refusal is a refusal too
            problems.append(str(exc))
    return repo, problems


@pytest.mark.parametrize("case", CASES, ids=[f"{c.go_test}-{c.id}" for c in CASES])
def test_mco_case(case: Case) -> None:
    repo, problems = load_case(case)
    if case.refused is None:
        assert problems == []
    else:
        assert any(case.refused in p for p in problems), problems
    if case.warning is not None:
        assert any(case.warning in str(w) for w in repo.warnings), repo.warnings


def test_spec_2_duplicate_ssh_keys_are_removed() -> None:
    # TestParseAndConvert: a 2.2 core user with a key twice converts to the key once.
    repo, _ = load_case(CASES[[c.id for c in CASES].index("spec-2-duplicate-ssh-keys")])
    users = repo.machine_configs["case"].ignition["passwd"]["users"]
    assert users == [{"name": "core", "sshAuthorizedKeys": ["5678", "abc"]}]
