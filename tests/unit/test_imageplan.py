"""The image plan: where each part of a rendered config lands in the pool's image.

Rendered configs are built with the real Ignition merge (`merge.merge_ignition`), so
they have the shape `render_pool` produces (e.g. `overwrite: true` on every file).
What the tmpfiles lines do on a real system is checked by
`tests/integration/test_tmpfiles.py` with systemd-tmpfiles itself.
"""

from __future__ import annotations

import base64
import gzip
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters import directory
from reconciler.core import load, merge, model
from reconciler.core.image import kargs, layer, layout, systemd, tmpfiles
from reconciler.core.image.layer import Entry
from reconciler.core.image.layout import ImagePlan, plan_image
from reconciler.core.merge import RenderedConfig
from reconciler.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = model.ReconcilerConfigSpec()
BASE = "quay.io/fedora/fedora-bootc:42"


def data_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


def rendered(
    config: dict[str, Any] | None = None,
    *,
    pool: str = "worker",
    kargs: list[str] | None = None,
    extensions: list[str] | None = None,
    kernel_type: str = "default",
    fips: bool = False,
    base: str = BASE,
) -> RenderedConfig:
    spec = {
        "config": merge.merge_ignition([{"ignition": {"version": "3.4.0"}, **(config or {})}]),
        "kernelArguments": kargs or [],
        "extensions": extensions or [],
        "fips": fips,
        "kernelType": kernel_type,
        "osImageURL": base,
        "baseOSExtensionsContainerImage": "",
    }
    return RenderedConfig(pool=pool, name=f"rendered-{pool}-{'0' * 32}", spec=spec, sources=())


def plan(config: dict[str, Any] | None = None, **kw: Any) -> ImagePlan:
    arch = kw.pop("architecture", "amd64")
    os_config = kw.pop("os_config", None)
    settings = kw.pop("settings", SETTINGS)
    return plan_image(rendered(config, **kw), os_config, settings, arch)


def files(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"storage": {"files": list(nodes)}}


def entry(p: ImagePlan, path: str) -> Entry:
    found = [e for e in p.entries if e.path == path]
    assert found, f"{path} not in the layer: {[e.path for e in p.entries]}"
    return found[0]


def tmpfile_line(p: ImagePlan, path: str) -> list[str]:
    """The fields of the tmpfiles line for `path` (path field unquoted, plain paths)."""
    for line in p.tmpfiles:
        fields = line.split(" ", 6)
        if fields[1] == path:
            return fields
    raise AssertionError(f"no tmpfiles line for {path}: {p.tmpfiles}")


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return "\n".join(str(p) for p in exc.value.problems)


# --- placement -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/chrony.conf", "/etc/chrony.conf"),
        ("/etc/ssh/sshd_config.d/50-fleet.conf", "/etc/ssh/sshd_config.d/50-fleet.conf"),
        ("/usr/lib/sysctl.d/50-fleet.conf", "/usr/lib/sysctl.d/50-fleet.conf"),
        ("/usr/share/fleet/motd", "/usr/share/fleet/motd"),
    ],
)
def test_files_under_etc_and_usr_are_layer_entries(path: str, expected: str) -> None:
    p = plan(files({"path": path, "mode": 0o640, "contents": {"source": data_url(b"x=1\n")}}))
    got = entry(p, expected)
    assert (got.kind, got.mode, got.uid, got.gid, got.data) == ("file", 0o640, 0, 0, b"x=1\n")
    assert not p.needs_containerfile
    assert all(expected not in line for line in p.tmpfiles)


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/var/lib/node-exporter/role.prom", "/var/lib/node-exporter/role.prom"),
        ("/var/tmp/keep", "/var/tmp/keep"),
        ("/home/core/notes.txt", "/var/home/core/notes.txt"),
        ("/root/.bashrc", "/var/roothome/.bashrc"),
        ("/opt/app/config.yaml", "/var/opt/app/config.yaml"),
        ("/srv/www/index.html", "/var/srv/www/index.html"),
        ("/mnt/data/README", "/var/mnt/data/README"),
        ("/usr/local/bin/tool", "/var/usrlocal/bin/tool"),
    ],
)
def test_var_like_files_become_tmpfiles_lines_under_var(path: str, canonical: str) -> None:
    content = b"line one\nline two\n\x00binary"
    p = plan(files({"path": path, "mode": 0o640, "contents": {"source": data_url(content)}}))
    kind, _, mode, user, group, age, arg = tmpfile_line(p, canonical)
    assert (kind, mode, user, group, age) == ("f+~", "0640", "root", "root", "-")
    assert base64.b64decode(arg, validate=True) == content
    assert all(e.path not in (path, canonical) for e in p.entries)
    conf = entry(p, tmpfiles.TMPFILES_PATH)
    assert conf.data.decode().splitlines()[1:] == list(p.tmpfiles)


@pytest.mark.parametrize(
    "path",
    [
        "/run/fleet.conf",
        "/tmp/x",
        "/proc/sys/vm/swappiness",
        "/sys/kernel/mm/x",
        "/dev/fleet",
        "/boot/loader/entries/x.conf",
        "/sysroot/x",
        "/ostree/repo/config",
        "/usr/etc/chrony.conf",
        "/var/run/fleet.pid",
        "/var/lock/fleet",
        "/bin/tool",
        "/lib64/libx.so",
        "/media/usb/x",
        "/fleet/config",
    ],
)
def test_paths_that_cannot_be_in_an_image_are_refused(path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        plan(files({"path": path, "contents": {"source": "data:,x"}}))
    (problem,) = exc.value.problems
    assert problem.kind == "MachineConfigPool"
    assert problem.name == "worker"
    assert problem.field == f"spec.config.storage.files[path={path}]"
    assert path in problem.problem
    assert problem.fix


def test_every_refused_path_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(files({"path": "/run/a"}, {"path": "/boot/b"}, {"path": "/etc/fine"}))
    assert [p.field for p in exc.value.problems] == [
        "spec.config.storage.files[path=/run/a]",
        "spec.config.storage.files[path=/boot/b]",
    ]


def test_usrmove_paths_say_which_usr_path_to_write() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(files({"path": "/bin/tool"}))
    assert "/usr/bin/tool" in problems(exc)


def test_defaults_are_ignitions_file_0644_dir_0755() -> None:
    p = plan(
        {
            "storage": {
                "files": [{"path": "/etc/a/b.conf"}, {"path": "/var/lib/c"}],
                "directories": [{"path": "/etc/d"}, {"path": "/var/lib/e"}],
            }
        }
    )
    assert entry(p, "/etc/a/b.conf").mode == 0o644
    assert entry(p, "/etc/d").mode == 0o755
    assert tmpfile_line(p, "/var/lib/c")[:3] == ["f+", "/var/lib/c", "0644"]
    assert tmpfile_line(p, "/var/lib/e") == ["d", "/var/lib/e", "0755", "root", "root", "-"]


def test_gzip_compressed_contents_are_decompressed() -> None:
    packed = gzip.compress(b"compressed content\n")
    p = plan(
        files(
            {"path": "/etc/z.conf", "contents": {"source": data_url(packed), "compression": "gzip"}}
        )
    )
    assert entry(p, "/etc/z.conf").data == b"compressed content\n"


def test_overwrite_false_creates_only_if_missing() -> None:
    p = plan(
        files({"path": "/var/lib/seed", "overwrite": False, "contents": {"source": "data:,s"}})
    )
    assert tmpfile_line(p, "/var/lib/seed")[0] == "f~"


def test_empty_var_file_has_no_argument() -> None:
    p = plan(files({"path": "/var/lib/empty"}))
    assert tmpfile_line(p, "/var/lib/empty") == [
        "f+",
        "/var/lib/empty",
        "0644",
        "root",
        "root",
        "-",
    ]


def test_var_file_too_large_for_a_tmpfiles_line_is_refused() -> None:
    big = b"x" * (tmpfiles.MAX_INLINE_BYTES + 1)
    with pytest.raises(ConfigError) as exc:
        plan(files({"path": "/var/lib/big", "contents": {"source": data_url(big)}}))
    text = problems(exc)
    assert "/var/lib/big" in text
    assert str(len(big)) in text


def test_tmpfiles_conf_is_private_when_it_carries_private_content() -> None:
    public = plan(files({"path": "/var/lib/p", "mode": 0o644, "contents": {"source": "data:,p"}}))
    secret = plan(files({"path": "/var/lib/s", "mode": 0o600, "contents": {"source": "data:,s"}}))
    assert entry(public, tmpfiles.TMPFILES_PATH).mode == 0o644
    assert entry(secret, tmpfiles.TMPFILES_PATH).mode == 0o600


# --- owners ----------------------------------------------------------------------------------


def test_numeric_owner_goes_into_the_layer() -> None:
    p = plan(files({"path": "/etc/app.conf", "user": {"id": 1001}, "group": {"id": 1002}}))
    got = entry(p, "/etc/app.conf")
    assert (got.uid, got.gid) == (1001, 1002)
    assert not p.needs_containerfile


def test_root_by_name_is_zero_and_needs_no_step() -> None:
    p = plan(files({"path": "/etc/app.conf", "user": {"name": "root"}, "group": {"name": "root"}}))
    assert (entry(p, "/etc/app.conf").uid, entry(p, "/etc/app.conf").gid) == (0, 0)
    assert not p.run_steps


@pytest.mark.parametrize("path", ["/etc/chrony.keys", "/usr/share/chrony/keys"])
def test_owner_by_name_in_the_image_is_a_chown_step(path: str) -> None:
    p = plan(files({"path": path, "mode": 0o640, "group": {"name": "chrony"}}))
    assert (entry(p, path).uid, entry(p, path).gid) == (0, 0)
    (step,) = p.run_steps
    assert step.stage == "config"
    assert step.command == f"chown -h root:chrony {path}"
    assert p.needs_containerfile
    assert "chrony" in p.reasons[0]


def test_symlink_owned_by_name_is_chowned_without_following_it() -> None:
    p = plan({"storage": {"links": [{"path": "/etc/l", "target": "x", "user": {"name": "app"}}]}})
    assert [s.command for s in p.run_steps] == ["chown -h app:root /etc/l"]


def test_owner_by_name_under_var_is_resolved_by_tmpfiles_at_boot() -> None:
    p = plan(
        {
            "storage": {
                "files": [{"path": "/var/lib/app/db", "user": {"name": "app"}}],
                "directories": [{"path": "/var/lib/app", "mode": 0o750, "group": {"id": 42}}],
            }
        }
    )
    assert tmpfile_line(p, "/var/lib/app/db")[3:5] == ["app", "root"]
    assert tmpfile_line(p, "/var/lib/app") == ["d", "/var/lib/app", "0750", "root", "42", "-"]
    assert not p.needs_containerfile


# --- links -----------------------------------------------------------------------------------


def test_symlinks_and_hard_links() -> None:
    p = plan(
        {
            "storage": {
                "files": [{"path": "/etc/real.conf", "contents": {"source": "data:,r"}}],
                "links": [
                    {"path": "/etc/alias.conf", "target": "real.conf"},
                    {"path": "/etc/hard.conf", "target": "/etc/real.conf", "hard": True},
                    {"path": "/var/lib/current", "target": "/var/lib/v2"},
                    {"path": "/var/lib/keep", "target": "/x", "overwrite": False},
                ],
            }
        }
    )
    assert entry(p, "/etc/alias.conf") == Entry(
        "/etc/alias.conf", "symlink", 0o777, target="real.conf"
    )
    assert entry(p, "/etc/hard.conf").kind == "hardlink"
    assert entry(p, "/etc/hard.conf").target == "/etc/real.conf"
    assert tmpfile_line(p, "/var/lib/current") == [
        "L+",
        "/var/lib/current",
        "-",
        "-",
        "-",
        "-",
        "/var/lib/v2",
    ]
    assert tmpfile_line(p, "/var/lib/keep")[0] == "L"


@pytest.mark.parametrize(
    ("link", "expect"),
    [
        ({"path": "/var/lib/h", "target": "/var/lib/x", "hard": True}, "hard link"),
        (
            {"path": "/etc/h", "target": "/var/lib/x", "hard": True},
            "not an absolute path under /etc or /usr",
        ),
        ({"path": "/etc/h", "target": "/etc/missing", "hard": True}, "not a file in this layer"),
        (
            {"path": "/etc/h", "target": "relative.conf", "hard": True},
            "not an absolute path under /etc or /usr",
        ),
    ],
)
def test_hard_links_that_cannot_be_made_are_refused(link: dict[str, Any], expect: str) -> None:
    with pytest.raises(ConfigError) as exc:
        plan({"storage": {"links": [link]}})
    assert expect in problems(exc)


def test_a_path_written_twice_is_refused() -> None:
    config = {
        "storage": {
            "files": [{"path": "/etc/systemd/system/a.service", "contents": {"source": "data:,x"}}]
        },
        "systemd": {"units": [{"name": "a.service", "contents": "[Unit]\n"}]},
    }
    with pytest.raises(ConfigError) as exc:
        plan(config)
    assert "/etc/systemd/system/a.service is also written by" in problems(exc)


def test_a_file_inside_a_linked_directory_is_refused() -> None:
    config = {
        "storage": {
            "links": [{"path": "/etc/app", "target": "/usr/share/app"}],
            "files": [{"path": "/etc/app/x.conf"}],
        }
    }
    with pytest.raises(ConfigError) as exc:
        plan(config)
    assert "/etc/app is a symlink" in problems(exc)


# --- systemd units ---------------------------------------------------------------------------

SERVICE = """\
[Unit]
Description=Fleet agent

[Service]
ExecStart=/usr/bin/fleet-agent

[Install]
WantedBy=multi-user.target \\
  network-online.target
RequiredBy=fleet.target
UpheldBy=default.target
Alias=fleet-agent-alias.service
"""


def units(*unit: dict[str, Any]) -> dict[str, Any]:
    return {"systemd": {"units": list(unit)}}


def links_in(p: ImagePlan) -> dict[str, str]:
    return {e.path: e.target for e in p.entries if e.kind == "symlink"}


def test_enabled_unit_gets_the_links_systemctl_enable_makes() -> None:
    p = plan(units({"name": "fleet.service", "enabled": True, "contents": SERVICE}))
    unit_file = "/etc/systemd/system/fleet.service"
    assert entry(p, unit_file).data == SERVICE.encode()
    assert links_in(p) == {
        "/etc/systemd/system/multi-user.target.wants/fleet.service": unit_file,
        "/etc/systemd/system/network-online.target.wants/fleet.service": unit_file,
        "/etc/systemd/system/fleet.target.requires/fleet.service": unit_file,
        "/etc/systemd/system/default.target.upholds/fleet.service": unit_file,
        "/etc/systemd/system/fleet-agent-alias.service": unit_file,
        "/etc/systemd/system/bootc-fetch-apply-updates.timer": "/dev/null",
    }
    assert not p.needs_containerfile


def test_unit_without_enabled_gets_no_links() -> None:
    p = plan(units({"name": "fleet.service", "contents": SERVICE}))
    assert set(links_in(p)) == {"/etc/systemd/system/bootc-fetch-apply-updates.timer"}


def test_masked_unit_is_a_link_to_dev_null_and_never_enabled() -> None:
    p = plan(units({"name": "rpcbind.socket", "mask": True, "enabled": True, "contents": SERVICE}))
    assert links_in(p)["/etc/systemd/system/rpcbind.socket"] == "/dev/null"
    assert not any(".wants/" in path for path in links_in(p))
    assert not p.run_steps


def test_dropins_go_next_to_the_unit_and_empty_ones_are_skipped() -> None:
    p = plan(
        units(
            {
                "name": "chronyd.service",
                "dropins": [
                    {"name": "10-limits.conf", "contents": "[Service]\nMemoryMax=64M\n"},
                    {"name": "20-empty.conf", "contents": ""},
                ],
            }
        )
    )
    assert entry(p, "/etc/systemd/system/chronyd.service.d/10-limits.conf").data.startswith(
        b"[Service]"
    )
    assert all(not e.path.endswith("20-empty.conf") for e in p.entries)
    assert all(e.path != "/etc/systemd/system/chronyd.service" for e in p.entries)


def test_enabling_a_shipped_unit_is_a_systemctl_step() -> None:
    p = plan(units({"name": "kdump.service", "enabled": True}))
    (step,) = p.run_steps
    assert (step.stage, step.command) == ("config", "systemctl enable kdump.service")
    assert p.needs_containerfile


def test_disabling_is_a_systemctl_step() -> None:
    p = plan(units({"name": "fleet.service", "enabled": False, "contents": SERVICE}))
    assert [s.command for s in p.run_steps] == ["systemctl disable fleet.service"]
    assert not any(".wants/" in path for path in links_in(p))


def test_template_unit_uses_default_instance() -> None:
    template = "[Service]\nExecStart=/bin/true %i\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=eth0\n"
    p = plan(units({"name": "probe@.service", "enabled": True, "contents": template}))
    assert links_in(p)["/etc/systemd/system/multi-user.target.wants/probe@eth0.service"] == (
        "/etc/systemd/system/probe@.service"
    )


def test_instance_of_a_template_in_the_config_links_to_the_template() -> None:
    template = "[Service]\nExecStart=/bin/true %i\n[Install]\nWantedBy=multi-user.target\n"
    p = plan(
        units(
            {"name": "probe@.service", "contents": template},
            {"name": "probe@eth1.service", "enabled": True},
        )
    )
    assert links_in(p)["/etc/systemd/system/multi-user.target.wants/probe@eth1.service"] == (
        "/etc/systemd/system/probe@.service"
    )
    assert not p.run_steps


def test_template_without_default_instance_cannot_be_enabled() -> None:
    template = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    with pytest.raises(ConfigError) as exc:
        plan(units({"name": "probe@.service", "enabled": True, "contents": template}))
    assert exc.value.problems[0].field == "spec.config.systemd.units[name=probe@.service]"
    assert "DefaultInstance" in problems(exc)


def test_also_enables_the_other_unit() -> None:
    sock = "[Socket]\nListenStream=9000\n[Install]\nWantedBy=sockets.target\nAlso=fleet.service\n"
    p = plan(
        units(
            {"name": "fleet.socket", "enabled": True, "contents": sock},
            {"name": "fleet.service", "contents": SERVICE},
        )
    )
    assert "/etc/systemd/system/sockets.target.wants/fleet.socket" in links_in(p)
    assert "/etc/systemd/system/multi-user.target.wants/fleet.service" in links_in(p)


def test_install_section_parsing_follows_systemd_syntax() -> None:
    text = (
        "[Install]\n# comment\n; comment\nWantedBy=a.target\nWantedBy=b.target c.target\n"
        "RequiredBy=x.target\nRequiredBy=\nRequiredBy=y.target\nAlias=one.service \\\n two.service\n"
        "[Service]\nWantedBy=not-install.target\n"
    )
    assert systemd.parse_install_section(text) == {
        "WantedBy": ["a.target", "b.target", "c.target"],
        "RequiredBy": ["y.target"],
        "Alias": ["one.service", "two.service"],
    }


def test_update_timer_is_always_masked_and_cannot_be_configured() -> None:
    p = plan()
    assert links_in(p)["/etc/systemd/system/bootc-fetch-apply-updates.timer"] == "/dev/null"
    with pytest.raises(ConfigError) as exc:
        plan(units({"name": "bootc-fetch-apply-updates.timer", "enabled": True}))
    assert "node agent" in problems(exc)


# --- SSH keys, passwords ---------------------------------------------------------------------

KEYS = ["ssh-ed25519 AAAAC3Nza admin@example.com", "ssh-ed25519 AAAAC3Nzb oncall@example.com"]


def test_core_ssh_keys_are_not_in_the_image_but_core_and_its_ssh_dir_are() -> None:
    # Issue 12: nodes apply the keys live (no reboot); the image makes the user and the
    # place for the keys, so the agent's first run (or a later one) only writes the file.
    p = plan({"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": KEYS}]}})
    assert tmpfile_line(p, "/var/home/core") == ["d", "/var/home/core", "0700", "core", "core", "-"]
    assert tmpfile_line(p, "/var/home/core/.ssh") == [
        "d",
        "/var/home/core/.ssh",
        "0700",
        "core",
        "core",
        "-",
    ]
    assert not any(layout.CORE_KEYS in line for line in p.tmpfiles)
    image_bytes = layer.write_tar(p.entries)
    assert all(k.split()[1].encode() not in image_bytes for k in KEYS)
    # the owner exists at boot even on bases without core (sysusers.d(5) syntax)
    sysusers = entry(p, layout.CORE_SYSUSERS).data.decode().splitlines()
    rules = [line.split() for line in sysusers if line and not line.startswith("#")]
    assert rules[0][:3] == ["u", "core", "-"]
    assert rules[0][-2:] == ["/var/home/core", "/bin/bash"]
    assert ["m", "core", "wheel"] in rules


def test_a_key_or_password_change_is_the_same_image_byte_for_byte() -> None:
    def image(core: dict[str, Any]) -> tuple[bytes, tuple[str, ...], dict[str, str]]:
        p = plan({"passwd": {"users": [{"name": "core", **core}]}})
        return layer.write_tar(p.entries), p.tmpfiles, dict(p.labels)

    one = image({"sshAuthorizedKeys": KEYS[:1]})
    assert image({"sshAuthorizedKeys": KEYS}) == one
    assert image({"sshAuthorizedKeys": KEYS[::-1], "passwordHash": "$6$x$y"}) == one
    assert image({}) == one  # core declared without keys: the same user and ~/.ssh
    a = rendered({"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": KEYS[:1]}]}})
    b = rendered({"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": KEYS}]}})
    assert a.spec != b.spec  # the rendered configs differ ...
    assert a.image_spec() == b.image_spec()  # ... their image part does not
    assert b.ssh_authorized_keys == tuple(KEYS)


def test_no_core_user_unless_a_config_declares_core() -> None:
    p = plan({"storage": {"files": [{"path": "/etc/motd", "contents": {"source": "data:,hi"}}]}})
    assert all(e.path != layout.CORE_SYSUSERS for e in p.entries)


def test_password_hash_is_rendered_but_never_in_the_image() -> None:
    # Issue 11: accepted (MCO applies it live), carried by the rendered config for the
    # node agent, and in no layer file, RUN step, label or Containerfile line.
    from reconciler.core.image import containerfile

    secret = "$6$rounds=4096$salt$Zx9Secret"
    config = {"passwd": {"users": [{"name": "core", "passwordHash": secret,
                                    "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}]}}  # fmt: skip
    p = plan(config)
    assert rendered(config).password_hash == secret
    assert secret not in str(rendered(config).image_spec())
    assert secret.encode() not in layer.write_tar(p.entries)
    assert all(secret not in s.command for s in p.run_steps)
    assert all(secret not in v for v in p.labels.values())
    cf = containerfile.generate(p)
    assert secret not in cf.text
    assert all(secret.encode() not in data for data in cf.context.values())


# --- kernel arguments ------------------------------------------------------------------------


def kargs_file(p: ImagePlan) -> dict[str, Any]:
    return tomllib.loads(entry(p, f"{kargs.KARGS_DIR}/50-{p.pool}.toml").data.decode())


def test_kargs_are_split_like_mcd_and_parse_back_as_toml() -> None:
    p = plan(kargs=["audit=1 nosmt", 'dyndbg="file drivers/usb/* +p"', "  quiet  ", 'a\\b="x"'])
    assert kargs_file(p) == {
        "kargs": ["audit=1", "nosmt", 'dyndbg="file drivers/usb/* +p"', "quiet", 'a\\b="x"']
    }


def test_kargs_file_is_written_even_when_empty() -> None:
    assert kargs_file(plan()) == {"kargs": []}


def test_duplicate_kargs_are_kept() -> None:
    assert kargs_file(plan(kargs=["a=1", "a=1"])) == {"kargs": ["a=1", "a=1"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b\tc\n d", ["a", "b", "c", "d"]),
        ('x="1 2" y', ['x="1 2"', "y"]),
        ('"unterminated quote', ['"unterminated quote']),
        ("", []),
    ],
)
def test_split_kernel_arguments(text: str, expected: list[str]) -> None:
    assert kargs.split_kernel_arguments(text) == expected


# --- things that need a Containerfile build ---------------------------------------------------


def test_extensions_install_their_packages() -> None:
    p = plan(extensions=["usbguard", "kerberos", "usbguard"])
    assert p.packages == ("krb5-workstation", "libkadm5", "usbguard")
    (step,) = p.run_steps
    assert step.stage == "packages"
    assert step.command == "dnf -y install krb5-workstation libkadm5 usbguard && dnf clean all"
    assert p.reasons == ("extensions: kerberos, usbguard",)


def test_extension_packages_come_from_the_settings() -> None:
    settings = model.ReconcilerConfigSpec(extensions={"tools": ["htop", "tcpdump"]})
    assert plan(extensions=["tools"], settings=settings).packages == ("htop", "tcpdump")
    with pytest.raises(ConfigError) as exc:
        plan(extensions=["sysstat"], settings=settings)
    assert "'sysstat'" in problems(exc)
    assert "tools" in problems(exc)


def test_realtime_kernel_swaps_mcds_package_sets() -> None:
    p = plan(kernel_type="realtime")
    (step,) = p.run_steps
    assert step.stage == "packages"
    assert "rpm -q kernel-rt-core" in step.command
    assert (
        "kernel kernel-core kernel-modules kernel-modules-core kernel-modules-extra" in step.command
    )
    assert (
        "dnf -y install kernel-rt-core kernel-rt-modules kernel-rt-modules-extra kernel-rt-kvm"
        in step.command
    )
    assert p.reasons == ("kernelType: realtime",)


def test_64k_pages_only_on_arm64() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(kernel_type="64k-pages", architecture="amd64")
    assert exc.value.problems[0].field == "spec.kernelType"
    p = plan(kernel_type="64k-pages", architecture="arm64")
    assert "kernel-64k-core" in p.run_steps[0].command


def test_fips_adds_the_karg_and_the_crypto_policy_step() -> None:
    p = plan(fips=True, kargs=["quiet"])
    assert kargs_file(p) == {"kargs": ["fips=1", "quiet"]}
    assert "update-crypto-policies --no-reload --set FIPS" in p.run_steps[0].command
    assert p.needs_containerfile


def os_config(*entries: tuple[str, str]) -> model.MachineOSConfig:
    return model.MachineOSConfig.model_validate(
        {
            "apiVersion": "machineconfiguration.openshift.io/v1",
            "kind": "MachineOSConfig",
            "metadata": {"name": "worker"},
            "spec": {
                "machineConfigPool": {"name": "worker"},
                "renderedImagePushSpec": "registry.example.com/fleet/worker:latest",
                "containerFile": [{"containerfileArch": a, "content": c} for a, c in entries],
            },
        }
    )


@pytest.mark.parametrize(
    ("entries", "arch", "expected"),
    [
        ((("NoArch", "RUN echo all"),), "amd64", ("NoArch", "RUN echo all")),
        (
            (("NoArch", "RUN echo all"), ("AMD64", "RUN echo x86")),
            "amd64",
            ("AMD64", "RUN echo x86"),
        ),
        (
            (("NoArch", "RUN echo all"), ("AMD64", "RUN echo x86")),
            "arm64",
            ("NoArch", "RUN echo all"),
        ),
        ((("ARM64", "RUN echo arm"),), "amd64", (None, "")),
    ],
)
def test_containerfile_content_for_the_arch_with_noarch_fallback(
    entries: tuple[tuple[str, str], ...], arch: str, expected: tuple[str | None, str]
) -> None:
    p = plan(os_config=os_config(*entries), architecture=arch)
    assert (p.containerfile_arch, p.containerfile_content) == expected
    assert p.needs_containerfile == bool(expected[1])


def test_pool_without_base_image_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(base="")
    assert exc.value.problems[0].field == "spec.osImageURL"
    assert "baseImagePullSpec" in (exc.value.problems[0].fix or "")


# --- the examples and determinism --------------------------------------------------------------


def example_plan(pool: str) -> ImagePlan:
    repo = load.load_repository(directory.read_config_files(EXAMPLES))
    loaded = repo.os_configs.get(pool)
    mosc = loaded.obj if loaded else None
    arch = layout.pool_architecture(mosc, repo.settings)
    return plan_image(merge.render_pool(repo, pool), mosc, repo.settings, arch)


def test_example_worker_pool_is_config_only() -> None:
    p = example_plan("worker")
    assert not p.needs_containerfile
    assert entry(p, "/etc/chrony.conf").data.startswith(b"# Managed by the fleet config repo")
    assert "/etc/systemd/system/multi-user.target.wants/node-exporter.service" in links_in(p)
    assert links_in(p)["/etc/systemd/system/rpcbind.socket"] == "/dev/null"
    assert base64.b64decode(tmpfile_line(p, "/var/lib/node-exporter/textfile/role.prom")[6]) == (
        b'node_role{role="worker"} 1\n'
    )
    assert kargs_file(p)["kargs"] == [
        "audit=1",
        "audit_backlog_limit=8192",
        "systemd.unified_cgroup_hierarchy=1",
    ]


def test_example_infra_pool_needs_realtime_kernel_and_sysstat() -> None:
    p = example_plan("infra")
    assert p.reasons == ("extensions: sysstat", "kernelType: realtime")
    assert p.base_image == "quay.io/fedora/fedora-bootc:42"
    assert kargs_file(p)["kargs"][-2:] == ["isolcpus=2-3", "nohz_full=2-3"]
    # infra's later config replaces the contents and keeps worker's mode
    assert tmpfile_line(p, "/var/lib/node-exporter/textfile/role.prom")[2] == "0644"


def test_plan_does_not_depend_on_the_order_of_files() -> None:
    nodes = [
        {"path": f"/etc/app/{i}.conf", "contents": {"source": f"data:,{i}"}, "mode": 0o600 + i}
        for i in range(12)
    ] + [{"path": f"/var/lib/app/{i}", "contents": {"source": f"data:,{i}"}} for i in range(12)]
    first = plan(files(*nodes))
    shuffled = nodes[:]
    random.Random(7).shuffle(shuffled)
    second = plan(files(*shuffled))
    assert first.entries == second.entries
    assert first.tmpfiles == second.tmpfiles
    paths = [e.path for e in first.entries]
    assert paths == sorted(paths)


def test_the_lint_helper_catches_what_bootc_would(tmp_path: Path) -> None:
    # tests/fixtures/bootc_lint.py is applied to built images; it must fail bad roots
    from tests.fixtures import bootc_lint

    root = tmp_path / "root"
    for d in ("dev", "proc", "sys", "run", "tmp", "var", "sysroot", "usr/etc", "etc",
              "usr/lib/bootc/kargs.d"):  # fmt: skip
        (root / d).mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "usr/lib/bootc/kargs.d/1.toml").write_text('kargs = ["a"]\nextra = 1\n')
    found = {p.split(":")[0] for p in bootc_lint.lint_rootfs(root)}
    assert found == {"etc-usretc", "baseimage-root", "baseimage-composefs", "bootc-kargs",
                     "buildah-injected"}  # fmt: skip
