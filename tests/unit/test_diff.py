"""The rendered-config diff and its MCO-style disruption classes (`reconciler.core.diff`).

Specs are rendered from the examples through the real loader and merge, then edited the
way a pull request would change them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from reconciler.adapters import directory
from reconciler.core import diff, load, merge
from tests.helpers import EXAMPLES


@pytest.fixture(scope="module")
def worker() -> dict[str, Any]:
    repo = load.load_repository(directory.read_config_files(EXAMPLES))
    return dict(merge.render_pool(repo, "worker").spec)


def changed(spec: dict[str, Any], edit: Any) -> list[diff.ItemDiff]:
    new = copy.deepcopy(spec)
    edit(new)
    return diff.diff_items(diff.config_items(spec), diff.config_items(new))


def add_file(path: str, data: bytes, **extra: Any) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        node = {
            "path": path,
            "contents": {"source": "data:;base64," + base64.b64encode(data).decode()},
        }
        spec["config"]["storage"]["files"].append({**node, **extra})

    return edit


def test_identical_specs_have_no_diff_and_no_disruption(worker: dict[str, Any]) -> None:
    diffs = changed(worker, lambda s: None)
    assert diffs == []
    assert diff.render(diffs) == ""
    assert diff.classify(diffs) == diff.Disruption(False)
    assert diff.classify(diffs).summary == "none"


def test_a_file_change_is_a_unified_diff_of_its_decoded_content(worker: dict[str, Any]) -> None:
    def edit(spec: dict[str, Any]) -> None:
        f = spec["config"]["storage"]["files"][0]
        f["mode"] = 0o755
        text = base64.b64decode(f["contents"]["source"].split(",", 1)[1]).decode()
        new = text.replace("ntp1", "ntp2").encode()
        f["contents"]["source"] = "data:;base64," + base64.b64encode(new).decode()

    (d,) = changed(worker, edit)
    assert (d.status, d.name, d.item.kind) == ("modified", "/etc/chrony.conf", "file")
    lines = d.lines()
    # host paths, and metadata as YAML writes it
    assert lines[:2] == ["diff --rendered /etc/chrony.conf", "mode: 0644 → 0755"]
    assert "--- /etc/chrony.conf" in lines
    assert "-server ntp1.example.internal iburst" in lines
    assert "+server ntp2.example.internal iburst" in lines
    # no policy for /etc/chrony.conf: MCO reboots
    result = diff.classify([d])
    assert result.reboot
    assert result.reasons == (
        "/etc/chrony.conf: reboot (no disruption policy for /etc/chrony.conf)",
    )
    assert result.one_line() == "reboot (no disruption policy for /etc/chrony.conf)"


def test_new_and_removed_items_diff_against_dev_null(worker: dict[str, Any]) -> None:
    (added,) = changed(worker, add_file("/etc/motd", b"hello\n"))
    assert added.status == "added"
    assert added.lines()[1:4] == ["new file (mode: 0644, overwrite: true, owner: root:root)",
                                  "--- /dev/null", "+++ /etc/motd"]  # fmt: skip

    def drop_kargs(spec: dict[str, Any]) -> None:
        spec["kernelArguments"] = []

    (removed,) = changed(worker, drop_kargs)
    assert (removed.status, removed.name) == ("removed", "spec.kernelArguments")
    assert "+++ /dev/null" in removed.lines()


@pytest.mark.parametrize(
    ("path", "summary"),
    [
        ("/etc/containers/policy.json", "reload crio.service"),
        ("/etc/containers/registries.d/default.yaml", "reload crio.service"),  # parent dir policy
        ("/etc/crio/policies/a/b.json", "reload crio.service"),
        ("/etc/nmstate/openshift/eth0.yml", "none"),
        ("/var/lib/kubelet/config.json", "none"),
        ("/etc/kubernetes/credential-providers/ecr.yaml", "restart kubelet.service"),
        (
            "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
            "restart coreos-update-ca-trust.service, restart crio.service",
        ),
        (
            "/etc/containers/registries.conf",
            "reload crio.service (drain unless only safe registries.conf additions)",
        ),
        # a policy path matches itself and what is below it, never a sibling with a prefix
        ("/etc/containers/policy.json.bak", "reboot"),
        ("/etc/containers/registries.conf.d/x.conf", "reboot"),
        ("/etc/motd", "reboot"),
    ],
)
def test_files_take_the_policy_of_their_closest_path(
    worker: dict[str, Any], path: str, summary: str
) -> None:
    diffs = changed(worker, add_file(path, b"x\n"))
    assert diff.classify(diffs).summary == summary


def test_the_longest_matching_policy_path_wins() -> None:
    policies = {
        "/etc/app": (diff.Action("Restart", "app.service"),),
        "/etc/app/static": (diff.NONE,),
    }
    assert diff.closest_file_policy("/etc/app/static/x", policies) == (
        "/etc/app/static",
        (diff.NONE,),
    )
    assert diff.closest_file_policy("/etc/app/conf", policies) == (
        "/etc/app",
        (diff.Action("Restart", "app.service"),),
    )
    assert diff.closest_file_policy("/etc/apple", policies) is None


def test_ssh_keys_alone_need_nothing_and_actions_combine_without_none(
    worker: dict[str, Any],
) -> None:
    def keys(spec: dict[str, Any]) -> None:
        spec["config"]["passwd"]["users"][0]["sshAuthorizedKeys"].append("ssh-ed25519 AAAA new")

    only_keys = changed(worker, keys)
    assert [d.name for d in only_keys] == ["passwd.users[core].sshAuthorizedKeys"]
    assert diff.classify(only_keys) == diff.Disruption(
        False, (), ("passwd.users[core].sshAuthorizedKeys: none (sshkey policy)",)
    )
    # core's keys are a live setting: our agent applies them without a reboot
    assert diff.node_action(only_keys) == diff.NodeAction(False, ("SSH keys",))

    def keys_and_policy(spec: dict[str, Any]) -> None:
        keys(spec)
        add_file("/etc/containers/policy.json", b"{}\n")(spec)
        add_file("/etc/containers/registries.d/a.yaml", b"a\n")(spec)

    both = diff.classify(changed(worker, keys_and_policy))
    # the same reload twice is one action; "none" next to a real action is dropped (MCO)
    assert both.actions == (diff.Action("Reload", "crio.service"),)
    assert not both.reboot
    # MCO would not reboot; our agent does: the files are a new image
    assert diff.node_action(changed(worker, keys_and_policy)).reboot


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("kernelArguments", ["audit=0"], "kernel arguments changed"),
        ("extensions", ["usbguard"], "extensions changed"),
        ("kernelType", "realtime", "kernel type changed"),
        ("fips", True, "FIPS mode changed"),
        ("osImageURL", "quay.io/other/base:1", "base image changed"),
    ],
)
def test_os_level_changes_always_reboot(
    worker: dict[str, Any], field: str, value: Any, reason: str
) -> None:
    diffs = changed(worker, lambda s: s.__setitem__(field, value))
    result = diff.classify(diffs)
    assert result.reboot
    assert result.summary == "reboot"
    assert any(reason in r for r in result.reasons)


def test_units_and_dropins_have_no_default_policy(worker: dict[str, Any]) -> None:
    def dropin(spec: dict[str, Any]) -> None:
        unit = spec["config"]["systemd"]["units"][0]
        unit["dropins"][0]["contents"] = "[Service]\nMemoryMax=1G\n"

    (d,) = changed(worker, dropin)
    assert d.name == "/etc/systemd/system/node-exporter.service.d/10-limits.conf"
    assert diff.classify([d]).reasons == (
        f"{d.name}: reboot (no disruption policy for node-exporter.service)",
    )
    # a unit policy (MachineConfiguration.spec.nodeDisruptionPolicy) would apply by name
    policy = {"node-exporter.service": (diff.Action("Restart", "node-exporter.service"),)}
    assert diff.classify([d], unit_policies=policy).summary == "restart node-exporter.service"

    def enable(spec: dict[str, Any]) -> None:
        spec["config"]["systemd"]["units"][1]["mask"] = False

    (m,) = changed(worker, enable)
    assert m.lines()[1:2] == ["mask: true → false"]


def test_binary_content_and_password_hashes_are_shown_by_digest_only(
    worker: dict[str, Any],
) -> None:
    (b,) = changed(worker, add_file("/etc/blob.bin", b"\x00\x01\xff" * 10))
    assert "<binary or large content: 30 bytes, sha256 " in b.item.text
    assert len(b.item.text.split("sha256 ")[1].rstrip("…>\n")) == 12  # short: no wrapping
    secret = "$6$rounds=4096$saltsalt$hashhashhash"

    def password(spec: dict[str, Any]) -> None:
        spec["config"]["passwd"]["users"][0]["passwordHash"] = secret

    (p,) = changed(worker, password)
    text = "\n".join(p.lines())
    assert secret not in text
    assert hashlib.sha256(secret.encode()).hexdigest()[:7] not in text
    assert p.lines() == ["diff --rendered passwd.users[core].passwordHash",
                         "new passwordHash (no attributes)",
                         "passwordHash: set, not shown (a password hash)"]  # fmt: skip
    assert diff.node_action([p]) == diff.NodeAction(False, ("password hash",))

    def rotate(spec: dict[str, Any]) -> None:
        spec["config"]["passwd"]["users"][0]["passwordHash"] = secret + "x"

    old = copy.deepcopy(worker)
    password(old)
    new = copy.deepcopy(worker)
    rotate(new)
    (r,) = diff.diff_items(diff.config_items(old), diff.config_items(new))
    assert r.lines()[1:] == ["passwordHash: changed, not shown (a password hash)"]


def test_directories_links_and_push_spec(worker: dict[str, Any]) -> None:
    def dirs(spec: dict[str, Any]) -> None:
        spec["config"]["storage"]["directories"] = [{"path": "/etc/app", "mode": 0o750}]
        spec["config"]["storage"]["links"] = [{"path": "/etc/app/l", "target": "/usr/bin/true"}]

    diffs = changed(worker, dirs)
    assert [(d.name, d.item.kind) for d in diffs] == [("/etc/app/", "directory"),
                                                      ("/etc/app/l", "link")]  # fmt: skip
    assert "+-> /usr/bin/true" in diffs[1].lines()
    assert diff.classify(diffs).reboot  # MCO has no policy for them (and refuses them)


def test_other_ignition_sections_are_shown_and_reboot(worker: dict[str, Any]) -> None:
    def disks(spec: dict[str, Any]) -> None:
        spec["config"]["storage"]["disks"] = [{"device": "/dev/vdb", "wipeTable": True}]

    (d,) = changed(worker, disks)
    assert d.name == "spec.config (storage.disks)"
    assert "+  - device: /dev/vdb" in d.lines()
    assert diff.classify([d]).reboot


def test_diffs_read_files_first_then_units_then_the_rest(worker: dict[str, Any]) -> None:
    def many(spec: dict[str, Any]) -> None:
        spec["kernelArguments"].append("quiet")
        spec["config"]["systemd"]["units"][0]["contents"] += "# x\n"
        add_file("/etc/b", b"b\n")(spec)
        add_file("/etc/a", b"a\n")(spec)

    names = [d.name for d in changed(worker, many)]
    assert names == ["/etc/a", "/etc/b", "/etc/systemd/system/node-exporter.service",
                     "spec.kernelArguments"]  # fmt: skip


def test_a_change_of_the_final_newline_is_still_shown(worker: dict[str, Any]) -> None:
    old = copy.deepcopy(worker)
    add_file("/etc/x", b"a")(old)
    new = copy.deepcopy(worker)
    add_file("/etc/x", b"a\n")(new)
    (d,) = diff.diff_items(diff.config_items(old), diff.config_items(new))
    assert d.lines()[-1] == "\\ only the newline at the end of the file changed"


@pytest.mark.parametrize(
    ("path", "mode", "data", "reason"),
    [
        ("/var/lib/kubelet/config.json", 0o644, b'{"auths": {"r": {"auth": "c2VjcmV0"}}}',
         "a credentials file"),
        ("/etc/ostree/auth.json", 0o644, b'{"auths": {}}', "a credentials file"),
        ("/etc/pki/tls/private/host.key", 0o644, b"key material", "a credentials file"),
        ("/etc/app/tls.pem", 0o644, b"-----BEGIN PRIVATE KEY-----\nMIIE\n", "holds a private key"),
        ("/etc/app/token", 0o600, b"hunter2", "mode 0600: not readable by others"),
    ],
)  # fmt: skip
def test_secret_looking_files_are_hidden_with_no_digest_of_them(
    worker: dict[str, Any], path: str, mode: int, data: bytes, reason: str
) -> None:
    (d,) = changed(worker, add_file(path, data, mode=mode))
    text = "\n".join(d.lines())
    assert data.decode() not in text
    assert f"content: set, not shown ({reason}, {len(data)} bytes)" in text
    # no digest a reader could test guesses against, and no `+` line that looks like content
    assert hashlib.sha256(data).hexdigest()[:7] not in text
    assert not any(line.startswith(("+", "-")) for line in d.lines())
    assert hashlib.sha256(data).hexdigest() not in repr(d)
    # a change is still seen, as metadata
    old, new = copy.deepcopy(worker), copy.deepcopy(worker)
    add_file(path, data, mode=mode)(old)
    add_file(path, data + b"2", mode=mode)(new)
    (e,) = diff.diff_items(diff.config_items(old), diff.config_items(new))
    assert e.lines()[1:] == [
        f"content: changed, not shown ({reason}, {len(data)} bytes → {reason}, "
        f"{len(data) + 1} bytes)"
    ]
    same = diff.diff_items(diff.config_items(old), diff.config_items(copy.deepcopy(old)))
    assert same == []


def test_a_luks_key_file_is_shown_by_digest_only(worker: dict[str, Any]) -> None:
    key = "data:;base64,c2VjcmV0LWx1a3Mta2V5"

    def luks(spec: dict[str, Any]) -> None:
        spec["config"]["storage"]["luks"] = [
            {"name": "data", "device": "/dev/sdb", "keyFile": {"source": key}}
        ]

    (d,) = changed(worker, luks)
    text = "\n".join(d.lines())
    assert key not in text
    assert "keyFile: (not shown)" in text
    assert "storage.luks[data].keyFile: set, not shown (a LUKS key)" in text


def test_one_disruption_line_per_pool_names_each_cause_once(worker: dict[str, Any]) -> None:
    def many(spec: dict[str, Any]) -> None:
        add_file("/etc/a", b"a\n")(spec)
        add_file("/etc/b", b"b\n")(spec)
        spec["kernelArguments"].append("quiet")

    result = diff.classify(changed(worker, many))
    assert len(result.reasons) == 3
    assert result.one_line() == (
        "reboot (no disruption policy for /etc/a, /etc/b; kernel arguments changed)"
    )
