"""Valid YAML with the wrong meaning (`reconciler.core.load`): a list item indented one
space too few folds the next items into it, which YAML accepts and sshd or the kernel
then reads as something else. Each is a problem of its MachineConfig, located at the
entry, with the fix, so `validate` fails and the pools that take it keep their pins."""

from __future__ import annotations

import pytest

from reconciler.core import load, verdict

HEAD = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 99-worker-ssh
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
"""
POOL = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: worker
spec:
  machineConfigSelector:
    matchLabels:
      machineconfiguration.openshift.io/role: worker
"""


def problems(spec: str) -> list[str]:
    repo = load.load_repository({"machineconfigs/99.yaml": HEAD + spec,
                                 "machineconfigpools/worker.yaml": POOL})  # fmt: skip
    if repo.problems:
        assert isinstance(verdict.judge(repo)["worker"], verdict.Blocked)
    return [str(p) for p in repo.problems]


def ssh(keys: str) -> str:
    return ("  config:\n    ignition:\n      version: 3.2.0\n    passwd:\n      users:\n"
            "        - name: core\n          sshAuthorizedKeys:\n" + keys)  # fmt: skip


def test_three_keys_folded_into_one_entry_are_refused_at_their_line() -> None:
    # one space less before the second and third "-": YAML folds them into the first
    found = problems(ssh(
        "            - ssh-ed25519 AAAAC3Nza admin@example.com\n"
        "             - ssh-ed25519 AAAAC3Nzb oncall@example.com\n"
        "             - ssh-rsa AAAAB3Nzc pager@example.com\n"
    ))  # fmt: skip
    assert found == [
        "machineconfigs/99.yaml:15: MachineConfig 99-worker-ssh: "
        "spec.config.passwd.users[0].sshAuthorizedKeys[0]: one entry holds 3 keys (a list "
        "item folded into this one); sshd reads the first and takes the others as its "
        "comment, so they let nobody in; write one key per entry: start each item on its "
        "own line with '- ' at the same indent as the first"
    ]


def test_keys_one_per_entry_with_options_and_comments_pass() -> None:
    assert problems(ssh(
        "            - ssh-ed25519 AAAAC3Nza admin@example.com\n"
        '            - from="10.0.0.0/8",no-pty ecdsa-sha2-nistp256 AAAAE2Vj ops - on call\n'
        "            - sk-ssh-ed25519@openssh.com AAAAGnNr yubikey\n"
    )) == []  # fmt: skip


def test_a_block_scalar_of_several_keys_is_refused() -> None:
    found = problems(ssh(
        "            - |\n"
        "              ssh-ed25519 AAAAC3Nza admin@example.com\n"
        "              ssh-ed25519 AAAAC3Nzb oncall@example.com\n"
    ))  # fmt: skip
    assert len(found) == 1
    assert "an entry spans several lines" in found[0]


@pytest.mark.parametrize(
    ("kargs", "says"),
    [
        ("    - audit=1\n      - nosmt\n", "'audit=1 - nosmt' holds ' - ': a list item folded"),
        ('    - "[audit=1, nosmt]"\n', "is a list written as one string"),
        ('    - "audit = 1"\n', "has a space before '='"),
        ('    - "audit=1\\tnosmt"\n', "holds a newline or tab"),
        ('    - "audit=1\\nnosmt"\n', "holds a newline or tab"),
        ('    - "  "\n', "is not a kernel argument"),
    ],
)
def test_kernel_arguments_that_mean_something_else_are_refused(kargs: str, says: str) -> None:
    (found,) = problems("  kernelArguments:\n" + kargs)
    assert found.startswith("machineconfigs/99.yaml:9: MachineConfig 99-worker-ssh: "
                            "spec.kernelArguments[0]: ")  # fmt: skip
    assert says in found


def test_several_arguments_in_one_entry_and_quoted_values_pass() -> None:
    # MCO splits an entry on spaces; quotes keep a value with spaces together
    assert problems('  kernelArguments:\n    - "audit=1 nosmt"\n    - \'dyndbg="file x +p"\'\n'
                    "    - console=\n") == []  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("MachineConfig", "spec: {kernelArguments: [quiet]}\n"),
        ("MachineConfigPool", "spec: {}\n"),
    ],
)
def test_an_empty_name_is_refused_with_the_naming_fix(kind: str, extra: str) -> None:
    text = f"apiVersion: machineconfiguration.openshift.io/v1\nkind: {kind}\nmetadata:\n  name: ''\n{extra}"
    repo = load.load_repository({"machineconfigs/empty.yaml": text.encode()})
    [problem] = [p for p in repo.problems if p.field == "metadata.name"]
    assert problem.line == 4
    assert "lowercase letters" in (problem.fix or "")
