"""Bad input: every case must name the file, the field, the bad value or the reason,
and a fix; `validate` must list every problem of a repository in one run.

Each case is a small repository (a valid worker pool plus the broken files); the test
renders it the way `reconciler validate` does and checks the one problem it caused.
"""

from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.core import load, verdict
from reconciler.errors import ConfigProblem

POOL = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata:
  name: worker
spec:
  machineConfigSelector:
    matchLabels:
      machineconfiguration.openshift.io/role: worker
"""
GOOD_MC = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 00-good
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  kernelArguments: [quiet]
"""


def mc(name: str, spec: str, labels: str = "machineconfiguration.openshift.io/role: worker") -> str:
    head = (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        f"metadata:\n  name: {name}\n  labels:\n    {labels}\n"
    )
    return head + "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


def ign(body: str, version: str = "3.4.0") -> str:
    """A spec.config with the given Ignition body (YAML under config:)."""
    return f"config:\n  ignition: {{version: {version}}}\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "  "
    )


def file_entry(path: str, extra: str = "") -> str:
    return f"""
storage:
  files:
    - path: {path}
      contents: {{source: "data:,x"}}
{textwrap.indent(textwrap.dedent(extra).strip(chr(10)), "      ")}
"""


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes]
    file: str
    field: str | None
    says: str
    line: int | None = None
    fix: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


NOT_GZIP = "data:;base64," + base64.b64encode(b"plain").decode()

CASES = [
    Case("yaml-syntax", {"machineconfigs/a.yaml": "metadata:\n  name: a\n bad: indent\n"},
         "machineconfigs/a.yaml", None, "YAML error", line=3),
    Case("yaml-duplicate-key", {"machineconfigs/a.yaml": mc("a", "fips: true\nfips: false")},
         "machineconfigs/a.yaml", None, "duplicate key 'fips'", line=9),
    Case("document-not-object", {"machineconfigs/a.yaml": "- just\n- a list\n"},
         "machineconfigs/a.yaml", None, "not an object"),
    Case("not-utf8", {"machineconfigs/a.yaml": b"kind: \xff\xfe\n"},
         "machineconfigs/a.yaml", None, "not UTF-8"),
    Case("unknown-spec-field", {"machineconfigs/a.yaml": mc("a", "kernelArgs: [quiet]")},
         "machineconfigs/a.yaml", "spec.kernelArgs", "unknown field 'kernelArgs'",
         fix="did you mean 'kernelArguments'?", line=8),
    Case("unknown-ignition-field",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  files:\n    - path: /etc/x\n      contens: {source: 'data:,x'}"))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contens", "unknown field 'contens'",
         fix="did you mean 'contents'?", line=13),
    Case("path-not-absolute", {"machineconfigs/a.yaml": mc("a", ign(file_entry("etc/chrony.conf")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].path",
         "'etc/chrony.conf' is not absolute", fix="write '/etc/chrony.conf'", line=12),
    Case("path-dotdot", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/etc/../root/x")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].path", "'..'"),
    Case("mode-setuid", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/etc/x", "mode: 2541")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].mode", "cannot exceed 0777"),
    Case("bad-base64",
         {"machineconfigs/a.yaml": mc("a", ign('storage:\n  files:\n    - path: /etc/x\n      contents: {source: "data:;base64,@@@"}'))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contents.source", "not valid base64"),
    Case("http-source",
         {"machineconfigs/a.yaml": mc("a", ign('storage:\n  files:\n    - path: /etc/x\n      contents: {source: "https://example.com/x"}'))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contents.source",
         "https: URLs are not supported", fix="inline the file"),
    Case("gzip-not-gzip",
         {"machineconfigs/a.yaml": mc("a", ign(f'storage:\n  files:\n    - path: /etc/x\n      contents: {{source: "{NOT_GZIP}", compression: gzip}}'))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contents.source", "does not gunzip"),
    Case("hash-mismatch",
         {"machineconfigs/a.yaml": mc("a", ign('storage:\n  files:\n    - path: /etc/x\n      contents: {source: "data:,x", verification: {hash: "sha256-00"}}'))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contents.verification.hash",
         "does not match"),
    Case("unknown-ignition-version", {"machineconfigs/a.yaml": mc("a", ign("", version="3.9.0"))},
         "machineconfigs/a.yaml", "spec.config.ignition.version", "Supported spec versions"),
    Case("missing-ignition-version", {"machineconfigs/a.yaml": mc("a", "config:\n  storage: {}")},
         "machineconfigs/a.yaml", "spec.config.ignition.version", "version is missing"),
    Case("non-core-user",
         {"machineconfigs/a.yaml": mc("a", ign("passwd:\n  users: [{name: alice, sshAuthorizedKeys: [k]}]"))},
         "machineconfigs/a.yaml", "spec.config.passwd.users[0].name", "non-core user 'alice'"),
    Case("groups", {"machineconfigs/a.yaml": mc("a", ign("passwd:\n  groups: [{name: ops}]"))},
         "machineconfigs/a.yaml", "spec.config.passwd.groups", "Groups section is not supported"),
    Case("core-shell",
         {"machineconfigs/a.yaml": mc("a", ign("passwd:\n  users: [{name: core, shell: /bin/zsh, sshAuthorizedKeys: [k]}]"))},
         "machineconfigs/a.yaml", "spec.config.passwd.users[0].shell", "shell of user core"),
    Case("ignition-kargs",
         {"machineconfigs/a.yaml": mc("a", ign("kernelArguments:\n  shouldExist: [nosmt]"))},
         "machineconfigs/a.yaml", "spec.config.kernelArguments", "kargs section is not supported",
         fix="use spec.kernelArguments"),
    Case("append",
         {"machineconfigs/a.yaml": mc("a", ign('storage:\n  files:\n    - path: /etc/x\n      append: [{source: "data:,y"}]'))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].append", "includes append"),
    Case("force-file", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/run/machine-config-daemon-force")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].path", "cannot create"),
    Case("kernel-type", {"machineconfigs/a.yaml": mc("a", "kernelType: rt")},
         "machineconfigs/a.yaml", "spec.kernelType", "'rt' is not allowed", fix="realtime"),
    Case("extension-typo", {"machineconfigs/a.yaml": mc("a", "extensions: [usbgard]")},
         "machineconfigs/a.yaml", "spec.extensions[0]", "unsupported extension 'usbgard'",
         fix="did you mean 'usbguard'?"),
    Case("duplicate-name",
         {"machineconfigs/a.yaml": mc("00-good", "fips: false")},
         "machineconfigs/a.yaml", "metadata.name", "defined twice", fix="rename one"),
    Case("unknown-kind",
         {"machineconfigpools/x.yaml": POOL.replace("kind: MachineConfigPool", "kind: MachineConfigPoll")},
         "machineconfigpools/x.yaml", "kind", "unknown kind 'MachineConfigPoll'",
         fix="did you mean MachineConfigPool?"),
    Case("wrong-api-version",
         {"machineconfigs/a.yaml": mc("a", "fips: true").replace("/v1", "/v2")},
         "machineconfigs/a.yaml", "apiVersion", "is not the apiVersion of MachineConfig",
         fix="machineconfiguration.openshift.io/v1"),
    Case("unsupported-kind",
         {"kubeletconfig.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: KubeletConfig\nmetadata: {name: k}\n"},
         "kubeletconfig.yaml", "kind", "KubeletConfig is not supported"),
    Case("mosc-name-mismatch",
         {"machineosconfigs/worker.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata: {name: workers}\nspec:\n  machineConfigPool: {name: worker}\n  renderedImagePushSpec: r.example/w:latest\n"},
         "machineosconfigs/worker.yaml", "spec.machineConfigPool.name", "differs from metadata.name"),
    Case("mosc-unknown-pool",
         {"machineosconfigs/gpu.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata: {name: gpu}\nspec:\n  machineConfigPool: {name: gpu}\n  renderedImagePushSpec: r.example/gpu:latest\n"},
         "machineosconfigs/gpu.yaml", "spec.machineConfigPool.name", "no MachineConfigPool defines"),
    Case("mosc-missing-push-spec",
         {"machineosconfigs/worker.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata: {name: worker}\nspec:\n  machineConfigPool: {name: worker}\n"},
         "machineosconfigs/worker.yaml", "spec.renderedImagePushSpec", "required field is missing"),
    Case("empty-selector",
         {"machineconfigpools/infra.yaml": POOL.replace("name: worker", "name: infra").split("  machineConfigSelector")[0] + "  machineConfigSelector: {}\n"},
         "machineconfigpools/infra.yaml", "spec.machineConfigSelector", "selects nothing"),
    Case("selector-matches-nothing",
         {"machineconfigpools/infra.yaml": POOL.replace("name: worker", "name: infra").replace("role: worker", "role: infra")},
         "machineconfigpools/infra.yaml", "spec.machineConfigSelector",
         "no MachineConfigs found matching selector"),
    Case("in-without-values",
         {"machineconfigpools/infra.yaml": POOL.replace("name: worker", "name: infra") + "    matchExpressions: [{key: a, operator: In}]\n"},
         "machineconfigpools/infra.yaml", "spec.machineConfigSelector.matchExpressions[0].values",
         "operator In needs values"),
    Case("max-unavailable",
         {"machineconfigpools/infra.yaml": POOL.replace("name: worker", "name: infra") + "  maxUnavailable: lots\n"},
         "machineconfigpools/infra.yaml", "spec.maxUnavailable", "neither a count nor a percentage"),
    Case("mode-as-string", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/etc/x", 'mode: "420"')))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].mode", "'420' is a str, not a int"),
    Case("kargs-not-list", {"machineconfigs/a.yaml": mc("a", "kernelArguments: nosmt")},
         "machineconfigs/a.yaml", "spec.kernelArguments", "'nosmt'"),
    Case("unit-name",
         {"machineconfigs/a.yaml": mc("a", ign("systemd:\n  units: [{name: app, enabled: true}]"))},
         "machineconfigs/a.yaml", "spec.config.systemd.units[0].name", "invalid unit name 'app'"),
    Case("duplicate-path",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  files: [{path: /etc/x}]\n  links: [{path: /etc/x, target: /etc/y}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.links[0].path", "appears twice"),
    Case("link-without-target",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  links: [{path: /etc/x}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.links[0].target", "link has no target"),
    Case("v22-other-filesystem",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  files: [{filesystem: data, path: /x}]", version="2.2.0"))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].filesystem", "not the root filesystem"),
    Case("kernel-devel-realtime",
         {"machineconfigs/a.yaml": mc("a", "kernelType: realtime\nextensions: [kernel-devel]")},
         "machineconfigpools/worker.yaml", None, "kernel-devel extension cannot be used"),
    Case("second-reconciler-config",
         {"a.yaml": "apiVersion: gitops.bootc.dev/v1alpha1\nkind: ReconcilerConfig\nmetadata: {name: a}\n",
          "b.yaml": "apiVersion: gitops.bootc.dev/v1alpha1\nkind: ReconcilerConfig\nmetadata: {name: b}\n"},
         "b.yaml", "metadata.name", "a second ReconcilerConfig"),
    Case("bad-mc-name", {"machineconfigs/a.yaml": mc("Chrony_Conf", "fips: true")},
         "machineconfigs/a.yaml", "metadata.name", "is not a valid name"),
    Case("unknown-reconciler-config-field",
         {"reconciler.yaml": "apiVersion: gitops.bootc.dev/v1alpha1\nkind: ReconcilerConfig\nmetadata: {name: a}\nspec: {defaultBaseImg: x}\n"},
         "reconciler.yaml", "spec.defaultBaseImg", "unknown field", fix="did you mean 'defaultBaseImage'?"),
]  # fmt: skip


# Accepted, as MCO accepts them, with a warning (issue 11; these were refused before).
WARNING_CASES = [
    Case("disks", {"machineconfigs/a.yaml": mc("a", ign("storage:\n  disks: [{device: /dev/sdb}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.disks", "install time only"),
    Case("filesystems",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  filesystems: [{device: /dev/sdb1, format: xfs}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.filesystems", "install time only"),
    Case("raid", {"machineconfigs/a.yaml": mc("a", ign("storage:\n  raid: [{name: md0, level: raid1}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.raid", "install time only"),
    Case("luks", {"machineconfigs/a.yaml": mc("a", ign("storage:\n  luks: [{name: root, device: /dev/sda4, clevis: {tpm2: true}}]"))},
         "machineconfigs/a.yaml", "spec.config.storage.luks", "an image cannot create or change them"),
    Case("no-labels",
         {"machineconfigs/a.yaml": "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: {name: a}\nspec: {fips: true}\n"},
         "machineconfigs/a.yaml", "metadata", "no pool selects it"),
    Case("leftover-filesystem-key", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/etc/x", "filesystem: root")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].filesystem", "unused key 'filesystem'"),
    Case("empty-networkd", {"machineconfigs/a.yaml": mc("a", ign("networkd: {}"))},
         "machineconfigs/a.yaml", "spec.config.networkd", "unused key 'networkd'"),
    Case("contents-typo-without-value",
         {"machineconfigs/a.yaml": mc("a", ign("storage:\n  files:\n    - path: /etc/x\n      contens: {}"))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].contens", "unused key 'contens'"),
    Case("key-in-other-case", {"machineconfigs/a.yaml": mc("a", ign(file_entry("/etc/x", "Mode: 384")))},
         "machineconfigs/a.yaml", "spec.config.storage.files[0].Mode", "read as 'mode'"),
]  # fmt: skip


@pytest.mark.parametrize("case", WARNING_CASES, ids=[c.id for c in WARNING_CASES])
def test_accepted_with_a_warning(case: Case) -> None:
    repo = load.load_repository(repo_with(case))
    assert problems_of(repo_with(case)) == []
    warnings = [w for w in repo.warnings if case.says in w.problem]
    assert warnings, f"no warning mentioning {case.says!r} in: {repo.warnings}"
    assert warnings[0].file == case.file
    assert warnings[0].field == case.field
    assert warnings[0].fix


def problems_of(files: dict[str, str | bytes]) -> list[ConfigProblem]:
    repo = load.load_repository(files)
    _, failed = verdict.render_all(repo)
    return repo.problems + [p for err in failed.values() for p in err.problems]


def repo_with(case: Case) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        "machineconfigpools/worker.yaml": POOL,
        "machineconfigs/00-good.yaml": GOOD_MC,
    }
    files.update(case.files)
    return files


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_precisely(case: Case) -> None:
    problems = [p for p in problems_of(repo_with(case)) if case.says in p.problem]
    assert problems, f"no problem mentioning {case.says!r} in: {problems_of(repo_with(case))}"
    problem = problems[0]
    assert problem.file == case.file
    if case.field is not None:
        assert problem.field == case.field
    if case.line is not None:
        assert problem.line == case.line
    assert problem.fix, "every problem must say how to fix it"
    if case.fix is not None:
        assert case.fix in problem.fix
    text = str(problem)
    assert text.startswith(case.file)
    if case.field:
        assert case.field in text


def test_the_valid_base_repository_has_no_problems() -> None:
    assert problems_of({"machineconfigpools/worker.yaml": POOL, "a.yaml": GOOD_MC}) == []


def test_other_pools_render_when_one_is_broken() -> None:
    files = repo_with(CASES[[c.id for c in CASES].index("selector-matches-nothing")])
    repo = load.load_repository(files)
    rendered, failed = verdict.render_all(repo)
    assert set(rendered) == {"worker"}
    assert set(failed) == {"infra"}


def test_a_pool_selecting_a_broken_config_is_blocked_and_says_which() -> None:
    files = repo_with(CASES[[c.id for c in CASES].index("kernel-type")])
    repo = load.load_repository(files)
    rendered, failed = verdict.render_all(repo)
    assert rendered == {}
    pool_problem, *config_problems = failed["worker"].problems
    assert pool_problem.file == "machineconfigpools/worker.yaml"
    assert (
        "selects MachineConfig 'a' (machineconfigs/a.yaml), which is invalid"
        in pool_problem.problem
    )
    # the pool's error carries the config's own problems, so its status is complete
    assert [p.field for p in config_problems] == ["spec.kernelType"]


def test_validate_lists_every_problem_in_one_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # All the single-file cases whose files do not collide, in one repository. Left out
    # too: a pool's own render problem ("selects nothing"), which is looked for only when
    # nothing else blocks the pool (here other files block every pool).
    combined: dict[str, str | bytes] = {}
    chosen = []
    skip = {"duplicate-name", "second-reconciler-config", "kernel-devel-realtime",
            "selector-matches-nothing"}  # fmt: skip
    for index, case in enumerate(CASES):
        if case.id in skip:
            continue
        for path, data in case.files.items():
            directory, _, name = path.rpartition("/")
            renamed = f"{directory}/{index:02d}-{name}" if directory else f"{index:02d}-{name}"
            combined[renamed] = (
                data.replace(b"name: a\n", f"name: a{index}\n".encode())
                if isinstance(data, bytes)
                else data.replace("name: a\n", f"name: a{index}\n")
            )
        chosen.append(case)
    files = repo_with(Case("base", {}, "", None, ""))
    files.update(combined)
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data if isinstance(data, bytes) else data.encode())
    result = CliRunner().invoke(cli, ["validate", "--repo", str(tmp_path)])
    assert result.exit_code == 1
    output = result.output
    assert len(chosen) >= 30
    for case in chosen:
        assert case.says in output, f"{case.id}: {case.says!r} missing from validate output"
    assert "problem(s) found" in output
