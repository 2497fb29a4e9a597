"""Image plan: a rendered config → where each part lands in the pool's image.

Stage: after merge, before identity and build. Input: a `RenderedConfig`, the pool's
MachineOSConfig (or None), the repository settings and the architecture. Output: an
`ImagePlan`: the entries of the one config layer (sorted, parents explicit), the
tmpfiles.d lines, the kernel arguments, the RUN steps and why they are needed. A plan
without reasons is built natively (one layer appended in-process); any reason makes it
a Containerfile build. Bad input raises `ConfigError` with every problem found.

Placement (DESIGN §5; bootc `docs/src/filesystem.md` and `building/guidance.md`, in
`reference/bootc-contract.md` §3):

| rendered config | in the image |
|---|---|
| files, directories, links under `/etc`, `/usr` | layer entries with mode and owner |
| the same under `/var` and the /var-like trees | `/usr/lib/tmpfiles.d/10-gitops-bootc.conf` |
| the `core` user (declared) | sysusers.d entry, tmpfiles `d` lines for its home and `.ssh` |
| core's `sshAuthorizedKeys`, `passwordHash` | nothing: the node agent applies them live |
| units, dropins | `/etc/systemd/system/<unit>`, `<unit>.d/<dropin>` and enable links |
| `kernelArguments` (+ `fips=1`) | `/usr/lib/bootc/kargs.d/50-<pool>.toml` |
| `extensions`, `kernelType`, `fips`, `containerFile` | RUN steps (Containerfile build) |
| always | `/etc/systemd/system/bootc-fetch-apply-updates.timer` → `/dev/null` |

Decisions, with their reasons:
- **Refused paths**: `/run`, `/tmp`, `/var/run`, `/var/lock` (volatile; lint
  `var-run`), `/proc`, `/sys`, `/dev` (API filesystems, bootc filesystem.md "Other
  directories"), `/boot` (owned by the bootloader; lint `nonempty-boot`), `/sysroot`,
  `/ostree` (the physical root), `/usr/etc` (fatal lint `etc-usretc`), `/bin`,
  `/sbin`, `/lib`, `/lib64` (symlinks into `/usr` after UsrMove: write the `/usr`
  path) and any other top-level directory (read-only with composefs, nowhere to put
  it).
- **/var-like paths** live on `/var` on a bootc host (`/home` → `var/home`, `/root` →
  `var/roothome`, `/opt`, `/srv`, `/mnt` → `var/...`, `/usr/local` → `var/usrlocal`);
  image content there lands only at first install (bootc-contract §3). They become
  tmpfiles lines under the canonical `/var/...` path, because systemd-tmpfiles does
  not follow a symlinked parent such as `/root` (bootc PR #407).
- **File contents in tmpfiles** use `f+~` (the `~` modifier, systemd 252 NEWS: the
  argument is base64), so any bytes (newlines, NUL) are written exactly and no `%`
  specifier is expanded (a plain `f` argument is one line of text); `f+`
  rewrites the file at every boot, as MCD rewrites every file on every update.
  `overwrite: false` gives `f` (create only). A copy from `/usr/share` with `C`/`C+`
  was tried and rejected: `C` skips an existing destination, so an updated file would
  never land. systemd reads lines up to 1 MiB, so a /var file's content is limited to
  `MAX_INLINE_BYTES`.
- **Owners** given by id are used as is. By name: `root` is 0; in tmpfiles lines any
  name is written as is (resolved at boot, tmpfiles.d(5) "User, Group"). For `/etc`
  and `/usr` entries another name cannot be resolved without the base image's
  passwd, so the layer carries root and a `chown` RUN step fixes it at build time,
  where the image's own passwd/group resolve the name. Not a tmpfiles `z` line at
  boot: a boot-time chown makes the `/etc` file "locally modified" for bootc's
  three-way merge, and later image updates to it would be silently dropped.
- **Directories** default to 0755 and files to 0644 (Ignition and MCD defaults). The
  layer writes every parent directory explicitly as 0755 root unless the config
  declares it: a parent in a layer replaces the base's metadata for that directory,
  so a restrictive one (e.g. `/etc/sudoers.d` 0750) must be declared in
  `storage.directories` to keep its mode.
- **Links**: symlinks keep their target as written (tmpfiles `L+`, or `L` for
  `overwrite: false`). Hard links must point at a file in the same layer (OCI layer
  changesets); tmpfiles has no hard link type, so they are refused under /var.
- **core's SSH keys and password hash are not in the image** (`RenderedConfig.image_spec`
  leaves them out of the plan and of the identity): the node agent applies them live,
  as MCD does without a reboot, from the rendered config at the pin's commit (the pin
  carries only their `liveConfigDigest`; design in `deploy/README.md`, "Changes without
  a reboot"). So a key-only or password-only change is the same image, the same digest
  and no reboot; and no hash is ever readable by whoever can pull the image. For first
  boot the image carries the user and the place for the keys, not the keys: the user
  from `/usr/lib/sysusers.d/10-gitops-core.conf` (`u core`, `m core wheel`, as RHCOS
  has it; systemd-sysusers creates it at boot on bases without one (Fedora and CentOS
  bootc), leaves an existing `core` alone (RHCOS), and runs before systemd-tmpfiles,
  so the owner resolves; bootc `docs/src/building/users-and-groups.md` recommends
  sysusers.d over useradd in a build), and tmpfiles `d` lines for `/var/home/core` and
  its `.ssh` (0700, core:core). The agent writes `.ssh/authorized_keys` at its first
  run and on every change, the whole file (Git stays authoritative, as MCD is for its
  key file). Access before the agent first runs is the installer's:
  `bootc install --root-ssh-authorized-keys` (root's keys, a tmpfiles line bootc writes
  at install, crates/lib/src/install/osconfig.rs). All of this only when a config
  declares `core` at all (so adding a second key or rotating one never changes the
  image; declaring the first `core` entry does, once).
- **Units** go to `/etc/systemd/system/` (where MCD writes them, so a unit overrides
  a shipped one of the same name), dropins to `<unit>.d/`. `enabled: true` creates the
  links `systemctl enable` would: `<target>.wants/`, `.requires/`, `.upholds/` from
  `WantedBy=`, `RequiredBy=`, `UpheldBy=`, plus `Alias=` links; templates need
  `DefaultInstance=`. A unit without contents (enabling a shipped unit) has its
  `[Install]` section in the base image, which the pure plan cannot read, and a preset
  file would only apply on a first boot, never on an update: it becomes a `systemctl
  enable` RUN step. `enabled: false` becomes a `systemctl disable` RUN step for the
  same reason (the links to remove may be in the base); `mask: true` needs no build
  step (a `/dev/null` link in `/etc` wins over everything), so prefer it for a native
  build. Empty dropins are not written (MCD skips them).
- **Kernel arguments** are split as MCD splits them (whitespace outside double quotes,
  `daemon/update.go` `splitKernelArguments`) into a TOML `kargs` list. The file is
  written even when empty: bootc keeps the previous image's kargs.d arguments when the
  new image has no kargs.d directory at all (bootc-contract §4).
- **FIPS** needs `fips=1` and the FIPS crypto policy (Fedora bootc docs, "FIPS and
  cryptographic policies"): `fips=1` goes into the kargs file and
  `update-crypto-policies --set FIPS` is a RUN step.
- **Packages** (extensions, kernel swap, FIPS) are installed with `dnf`, as the bootc
  docs build images; MCO's template uses `rpm-ostree install` from an extensions
  image, which bootc bases need not carry. The kernel package sets are MCD's
  (`daemon/update.go` `switchKernel`). `kernelType: 64k-pages` is refused off arm64
  (MCO `buildrequestopts.go`).
- **bootc-fetch-apply-updates.timer** is masked in every image: it would run `bootc
  upgrade --apply` and reboot behind the node agent's back (bootc
  `docs/src/building/management-services.md`). A config that sets that unit is
  refused.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.core import contents, identity, layer, model
from reconciler.core.layer import Entry
from reconciler.core.merge import RenderedConfig
from reconciler.errors import ConfigError, ConfigProblem

UNIT_DIR = "/etc/systemd/system"
TMPFILES_PATH = "/usr/lib/tmpfiles.d/10-gitops-bootc.conf"
KARGS_DIR = "/usr/lib/bootc/kargs.d"
UPDATES_TIMER = "bootc-fetch-apply-updates.timer"
CORE_HOME = "/var/home/core"
CORE_KEYS = f"{CORE_HOME}/.ssh/authorized_keys"
"""Where the node agent writes core's keys (`reconciler/agent/live.py`); not in images."""
CORE_SYSUSERS = "/usr/lib/sysusers.d/10-gitops-core.conf"
CORE_SYSUSERS_TEXT = (
    b"# core: the user MachineConfigs give SSH keys to (generated by the reconciler).\n"
    b"# Created at boot where the base has none; an existing core is left as it is.\n"
    b'u core - "CoreOS Admin" /var/home/core /bin/bash\n'
    b"m core wheel\n"
)
# systemd reads config lines up to LONG_LINE_MAX (1 MiB); base64 grows data by 4/3.
MAX_INLINE_BYTES = 512 * 1024

# Top-level trees that live on /var on a bootc host → their canonical /var path.
VAR_ALIASES = (
    ("/home", "/var/home"),
    ("/root", "/var/roothome"),
    ("/opt", "/var/opt"),
    ("/srv", "/var/srv"),
    ("/mnt", "/var/mnt"),
    ("/usr/local", "/var/usrlocal"),
)
_REFUSED: dict[str, str] = {
    "/var/run": "/var/run is /run, recreated at every boot; use RuntimeDirectory= in a unit",
    "/var/lock": "/var/lock is in /run, recreated at every boot; use RuntimeDirectory=",
    "/usr/etc": "bootc refuses images with /usr/etc (lint etc-usretc); write the /etc path",
    "/run": "/run is recreated at every boot; use RuntimeDirectory= or a tmpfiles.d "
    "file under /usr/lib/tmpfiles.d/",
    "/tmp": "/tmp is cleared at every boot; use a tmpfiles.d file",  # noqa: S108
    "/proc": "/proc is an API filesystem; set sysctls with a file in /etc/sysctl.d/",
    "/sys": "/sys is an API filesystem; use a udev rule or a tmpfiles.d 'w' line",
    "/dev": "/dev is an API filesystem; use a udev rule",
    "/boot": "/boot belongs to the bootloader; use kernelArguments for boot options",
    "/sysroot": "/sysroot is the physical root, not part of the image",
    "/ostree": "/ostree is the physical root's repository, not part of the image",
}
_USRMOVE = ("/bin", "/sbin", "/lib", "/lib64")

# MCD `switchKernel` package sets (daemon/update.go).
KERNEL_PACKAGES: dict[str, tuple[str, ...]] = {
    "default": (
        "kernel",
        "kernel-core",
        "kernel-modules",
        "kernel-modules-core",
        "kernel-modules-extra",
    ),
    "realtime": ("kernel-rt-core", "kernel-rt-modules", "kernel-rt-modules-extra", "kernel-rt-kvm"),
    "64k-pages": (
        "kernel-64k-core",
        "kernel-64k-modules",
        "kernel-64k-modules-core",
        "kernel-64k-modules-extra",
    ),
}
_LINK_KEYS = (("WantedBy", ".wants"), ("RequiredBy", ".requires"), ("UpheldBy", ".upholds"))

Stage = Literal["packages", "config"]


@dataclass(frozen=True)
class RunStep:
    """A shell command for a Containerfile `RUN`. `packages` steps run before the
    config layer is added (so config files win over package defaults), `config` steps
    after it (they act on the layer's files or on units the packages installed).
    A newline in `command` is a line break inside one RUN (joined with `\\`)."""

    stage: Stage
    command: str
    reason: str


@dataclass(frozen=True)
class ImagePlan:
    pool: str
    rendered_name: str
    """The rendered config planned (provenance, for the Containerfile's header): never
    in the image's bytes, since it also hashes the live settings."""
    architecture: str
    base_image: str
    """The base image as written (osImageURL, else the MachineOSConfig's or default)."""
    entries: tuple[Entry, ...]
    """The config layer, complete: sorted, every parent directory explicit."""
    tmpfiles: tuple[str, ...]
    """The lines of `TMPFILES_PATH` (also one of `entries`), sorted by path."""
    kargs: tuple[str, ...]
    extensions: tuple[str, ...]
    packages: tuple[str, ...]
    """Extension packages, sorted and unique."""
    kernel_type: str
    fips: bool
    run_steps: tuple[RunStep, ...]
    containerfile_arch: str | None
    """Which MachineOSConfig `containerFile` entry applies (`AMD64`, ..., `NoArch`)."""
    containerfile_content: str
    labels: Mapping[str, str]
    reasons: tuple[str, ...] = field(default=())
    """Why this plan needs a Containerfile build; empty for the native builder."""
    ca_bundle: bytes | None = None
    """`ReconcilerConfig.spec.caBundle`, trusted in the image (a Containerfile step)."""

    @property
    def needs_containerfile(self) -> bool:
        return bool(self.reasons)


# --- helpers: paths, owners, tmpfiles syntax ---------------------------------------------


def place(path: str) -> tuple[Literal["image", "var"], str] | tuple[Literal["refused"], str]:
    """`("image", path)`, `("var", canonical /var path)` or `("refused", fix)`."""
    if not path.startswith("/"):
        return "refused", f"write an absolute path, e.g. '/{path}'"
    for prefix, fix in _REFUSED.items():
        if path == prefix or path.startswith(prefix + "/"):
            return "refused", fix
    for prefix in _USRMOVE:
        if path == prefix or path.startswith(prefix + "/"):
            return "refused", f"{prefix} is a symlink to /usr{prefix}; write /usr{path}"
    for alias, real in VAR_ALIASES:
        if path == alias or path.startswith(alias + "/"):
            return "var", real + path[len(alias) :]
    if path == "/var" or path.startswith("/var/"):
        return "var", path
    if path.startswith(("/etc/", "/usr/")):
        return "image", path
    top = "/" + path.split("/")[1]
    return "refused", (
        f"{top} is read-only on a bootc host and not carried by the image; put the file "
        "under /etc or /usr, or under /var (created at boot)"
    )


@dataclass(frozen=True)
class _Owner:
    uid: int | None
    user: str | None
    gid: int | None
    group: str | None

    @property
    def needs_name_lookup(self) -> bool:
        by_name_user = self.uid is None and self.user not in (None, "root")
        by_name_group = self.gid is None and self.group not in (None, "root")
        return by_name_user or by_name_group

    def numeric(self) -> tuple[int, int]:
        """(uid, gid) for a layer entry: names other than root come later via chown."""
        return (self.uid or 0, self.gid or 0)

    def names(self) -> tuple[str, str]:
        """(user, group) as tmpfiles and chown write them."""
        user = str(self.uid) if self.uid is not None else self.user or "root"
        group = str(self.gid) if self.gid is not None else self.group or "root"
        return user, group


def _owner(node: Mapping[str, Any]) -> _Owner:
    user = node.get("user") or {}
    group = node.get("group") or {}
    return _Owner(user.get("id"), user.get("name"), group.get("id"), group.get("name"))


def tmpfiles_path(path: str) -> str:
    """A path as a tmpfiles.d field: `%` doubled (specifiers); quoted when it holds
    whitespace, quotes or backslashes (inside quotes only `\\"` and `\\\\` are escapes)."""
    escaped = path.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def tmpfiles_argument(text: str) -> str:
    """An argument field (C escapes and specifiers apply): `%` doubled, backslashes
    and every whitespace or control character written as `\\xNN`."""
    out = []
    for c in text.replace("%", "%%"):
        if c == "\\":
            out.append("\\\\")
        elif c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def split_kernel_arguments(args: str) -> list[str]:
    """MCD's `splitKernelArguments`: split on whitespace outside double quotes (the
    kernel's own `next_arg` rule; a quote cannot be escaped)."""
    out: list[str] = []
    current: list[str] = []
    in_quote = False
    for c in args:
        if c in " \f\n\r\t\v" and not in_quote:
            if current:
                out.append("".join(current))
                current = []
            continue
        if c == '"':
            in_quote = not in_quote
        current.append(c)
    if current:
        out.append("".join(current))
    return out


def toml_string(value: str) -> str:
    """A TOML basic string (TOML 1.0 "String"): `"` and `\\` escaped, control
    characters as `\\uXXXX`."""
    out = ['"']
    for c in value:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def kargs_toml(kargs: Sequence[str], pool: str) -> bytes:
    """bootc's kargs.d file: `kargs = [...]` and nothing else (deny_unknown_fields)."""
    items = ", ".join(toml_string(k) for k in kargs)
    return f"# pool {pool} (generated by the reconciler)\nkargs = [{items}]\n".encode()


def parse_install_section(unit_text: str) -> dict[str, list[str]]:
    """The `[Install]` settings of a unit file (systemd.syntax(7): `#`/`;` comments,
    a trailing backslash continues the line, lists accumulate over repeated keys and an
    empty assignment resets them)."""
    logical: list[str] = []
    pending = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not pending and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    section = ""
    settings: dict[str, list[str]] = {}
    for line in logical:
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != "Install" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not value:
            settings[key] = []
        else:
            settings.setdefault(key, []).extend(value.split())
    return settings


def _split_unit(name: str) -> tuple[str, str | None, str]:
    """`foo@bar.service` → ('foo', 'bar', '.service'); `foo.service` → ('foo', None, ...)."""
    stem, dot, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return prefix, (instance if at else None), dot + suffix


# --- the plan ----------------------------------------------------------------------------


class _Planner:
    def __init__(self, rendered: RenderedConfig) -> None:
        self.pool = rendered.pool
        self.problems: list[ConfigProblem] = []
        self.entries: dict[str, tuple[Entry, str]] = {}
        self.tmpfiles: dict[str, tuple[str, str]] = {}
        self.private_tmpfiles = False
        self.run_steps: list[RunStep] = []
        self.reasons: list[str] = []

    def problem(self, field: str, problem: str, fix: str) -> None:
        self.problems.append(
            ConfigProblem(problem, kind="MachineConfigPool", name=self.pool, field=field, fix=fix)
        )

    def add_entry(self, entry: Entry, origin: str) -> None:
        known = self.entries.get(entry.path)
        if known is not None and known[0] != entry:
            self.problem(
                origin,
                f"{entry.path} is also written by {known[1]}",
                "keep one definition of each path",
            )
            return
        self.entries[entry.path] = (entry, origin)

    def add_tmpfile(self, path: str, line: str, origin: str) -> None:
        known = self.tmpfiles.get(path)
        if known is not None and known[0] != line:
            self.problem(
                origin,
                f"{path} is also created by {known[1]}",
                "keep one definition of each path",
            )
            return
        self.tmpfiles[path] = (line, origin)

    def step(self, stage: Stage, command: str, reason: str) -> None:
        self.run_steps.append(RunStep(stage, command, reason))
        if reason not in self.reasons:
            self.reasons.append(reason)

    # storage ------------------------------------------------------------------------

    def place_node(self, section: str, node: Mapping[str, Any]) -> tuple[str, str] | None:
        path = node["path"]
        origin = f"spec.config.storage.{section}[path={path}]"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            self.problem(origin, f"{path!r} contains a control character", "rename the path")
            return None
        where, value = place(path)
        if where == "refused":
            self.problem(origin, f"{path} cannot be part of a bootc image", value)
            return None
        return where, value

    def owner_fields(self, origin: str, owner: _Owner) -> tuple[str, str] | None:
        user, group = owner.names()
        for what, value in (("user", user), ("group", group)):
            if not value or any(c.isspace() or ord(c) < 0x20 for c in value):
                self.problem(origin, f"{what} {value!r} is not a valid name", "use a plain name")
                return None
        return user, group

    def chown_later(self, path: str, owner: _Owner, origin: str) -> None:
        names = self.owner_fields(origin, owner)
        if names is None:
            return
        user, group = names
        self.step(
            "config",
            f"chown -h {shlex.quote(f'{user}:{group}')} {shlex.quote(path)}",
            f"{path} is owned by name ({user}:{group}): resolved in the image at build time",
        )

    def file(self, node: Mapping[str, Any]) -> None:
        placed = self.place_node("files", node)
        if placed is None:
            return
        where, path = placed
        origin = f"spec.config.storage.files[path={node['path']}]"
        try:
            data = contents.decode_resource(dict(node.get("contents") or {}))
        except contents.ContentsError as exc:
            self.problem(f"{origin}.contents.{exc.field}", exc.problem, exc.fix)
            return
        mode = node.get("mode")
        mode = 0o644 if mode is None else mode
        owner = _owner(node)
        if where == "image":
            uid, gid = owner.numeric()
            self.add_entry(Entry(path, "file", mode, uid, gid, data=data), origin)
            if owner.needs_name_lookup:
                self.chown_later(path, owner, origin)
            return
        if len(data) > MAX_INLINE_BYTES:
            self.problem(
                origin,
                f"{path} is {len(data)} bytes; a file created at boot under /var may be at "
                f"most {MAX_INLINE_BYTES} bytes",
                "ship it under /usr (image content) and point to it, or create it in a "
                "containerFile step",
            )
            return
        names = self.owner_fields(origin, owner)
        if names is None:
            return
        kind = "f+" if node.get("overwrite", True) else "f"
        if (mode & 0o004) == 0 and data:
            self.private_tmpfiles = True
        self.add_tmpfile(path, _file_line(kind, path, mode, names, data), origin)

    def directory(self, node: Mapping[str, Any]) -> None:
        placed = self.place_node("directories", node)
        if placed is None:
            return
        where, path = placed
        origin = f"spec.config.storage.directories[path={node['path']}]"
        mode = node.get("mode")
        mode = 0o755 if mode is None else mode
        owner = _owner(node)
        if where == "image":
            uid, gid = owner.numeric()
            self.add_entry(Entry(path, "dir", mode, uid, gid), origin)
            if owner.needs_name_lookup:
                self.chown_later(path, owner, origin)
            return
        names = self.owner_fields(origin, owner)
        if names is not None:
            line = f"d {tmpfiles_path(path)} {mode:04o} {names[0]} {names[1]} -"
            self.add_tmpfile(path, line, origin)

    def link(self, node: Mapping[str, Any]) -> None:
        placed = self.place_node("links", node)
        if placed is None:
            return
        where, path = placed
        origin = f"spec.config.storage.links[path={node['path']}]"
        target = node.get("target") or ""
        hard = bool(node.get("hard"))
        owner = _owner(node)
        if where == "image":
            uid, gid = owner.numeric()
            if hard:
                target_where, target_path = place(target)
                if target_where != "image":
                    self.problem(
                        origin,
                        f"hard link {path} points to {target!r}, "
                        "not an absolute path under /etc or /usr",
                        "link to a file written by this config under /etc or /usr, or use "
                        "a symlink",
                    )
                    return
                self.add_entry(Entry(path, "hardlink", 0o644, uid, gid, target=target_path), origin)
            else:
                self.add_entry(Entry(path, "symlink", 0o777, uid, gid, target=target), origin)
                if owner.needs_name_lookup:
                    self.chown_later(path, owner, origin)
            return
        if hard:
            self.problem(
                origin,
                f"hard link {path} cannot be created under /var at boot (tmpfiles.d has no "
                "hard link type)",
                "use a symlink (hard: false)",
            )
            return
        kind = "L+" if node.get("overwrite", True) else "L"
        line = f"{kind} {tmpfiles_path(path)} - - - - {tmpfiles_argument(target)}"
        self.add_tmpfile(path, line, origin)

    # passwd -------------------------------------------------------------------------

    def users(self, users: Sequence[Mapping[str, Any]]) -> None:
        for user in users:
            origin = f"spec.config.passwd.users[name={user.get('name')}]"
            if user.get("name") != "core":
                continue  # load refuses other users, as MCO does
            # The keys and the password hash are applied live by the node agent (see
            # the module docstring); the image only makes the user and its ~/.ssh.
            self.add_entry(Entry(CORE_SYSUSERS, "file", 0o644, data=CORE_SYSUSERS_TEXT), origin)
            self.add_tmpfile(CORE_HOME, f"d {CORE_HOME} 0700 core core -", origin)
            self.add_tmpfile(f"{CORE_HOME}/.ssh", f"d {CORE_HOME}/.ssh 0700 core core -", origin)

    # systemd ------------------------------------------------------------------------

    def units(self, units: Sequence[Mapping[str, Any]]) -> None:
        by_name = {u["name"]: u for u in units}
        for unit in units:
            name = unit["name"]
            origin = f"spec.config.systemd.units[name={name}]"
            if name == UPDATES_TIMER:
                self.problem(
                    origin,
                    f"{UPDATES_TIMER} is masked in every image so it never reboots a node "
                    "behind the node agent's back",
                    "remove this unit from the config; the node agent applies updates",
                )
                continue
            unit_path = f"{UNIT_DIR}/{name}"
            text = unit.get("contents")
            if unit.get("mask"):
                self.add_entry(Entry(unit_path, "symlink", 0o777, target="/dev/null"), origin)
            elif text is not None:
                self.add_entry(Entry(unit_path, "file", 0o644, data=text.encode()), origin)
            for dropin in unit.get("dropins") or []:
                if dropin.get("contents"):
                    self.add_entry(
                        Entry(
                            f"{UNIT_DIR}/{name}.d/{dropin['name']}",
                            "file",
                            0o644,
                            data=dropin["contents"].encode(),
                        ),
                        f"{origin}.dropins[name={dropin['name']}]",
                    )
            if unit.get("mask"):
                continue  # MCD masks and neither enables nor disables
            if unit.get("enabled") is True:
                self.enable(name, by_name, origin, set())
            elif unit.get("enabled") is False:
                self.step(
                    "config",
                    f"systemctl disable {shlex.quote(name)}",
                    f"disable {name}: links to remove may come from the base image "
                    "(mask: true needs no build step)",
                )

    def enable(
        self, name: str, by_name: Mapping[str, Mapping[str, Any]], origin: str, seen: set[str]
    ) -> None:
        if name in seen:
            return
        seen.add(name)
        prefix, instance, suffix = _split_unit(name)
        unit = by_name.get(name) or {}
        source_name = name
        text = unit.get("contents")
        if text is None and instance:
            template = f"{prefix}@{suffix}"
            text = (by_name.get(template) or {}).get("contents")
            source_name = template
        if text is None or (by_name.get(source_name) or {}).get("mask"):
            self.step(
                "config",
                f"systemctl enable {shlex.quote(name)}",
                f"enable {name}: its [Install] section is in the base image or a package",
            )
            return
        install = parse_install_section(text)
        link_name = name
        if instance == "":  # a template enabled by its own name
            default = install.get("DefaultInstance") or []
            if not default:
                self.problem(
                    origin,
                    f"template unit {name} is enabled but has no DefaultInstance=",
                    f"add DefaultInstance= to its [Install] section, or enable an "
                    f"instance such as {prefix}@NAME{suffix}",
                )
                return
            link_name = f"{prefix}@{default[-1]}{suffix}"
        unit_file = f"{UNIT_DIR}/{source_name}"
        for key, dir_suffix in _LINK_KEYS:
            for target in install.get(key, []):
                if "/" in target or "%" in target or "." not in target:
                    self.problem(
                        origin,
                        f"{key}={target} in {source_name} is not a unit name this plan can "
                        "link (specifiers are not expanded)",
                        "write the target unit's full name, e.g. multi-user.target",
                    )
                    continue
                self.add_entry(
                    Entry(
                        f"{UNIT_DIR}/{target}{dir_suffix}/{link_name}",
                        "symlink",
                        0o777,
                        target=unit_file,
                    ),
                    origin,
                )
        for alias in install.get("Alias", []):
            if "/" in alias or "%" in alias:
                self.problem(origin, f"Alias={alias} is not a unit name", "write a unit name")
                continue
            self.add_entry(Entry(f"{UNIT_DIR}/{alias}", "symlink", 0o777, target=unit_file), origin)
        for also in install.get("Also", []):
            self.enable(also, by_name, origin, seen)


def _file_line(kind: str, path: str, mode: int, owner: tuple[str, str], data: bytes) -> str:
    head = f"{kind}{'~' if data else ''} {tmpfiles_path(path)} {mode:04o} {owner[0]} {owner[1]} -"
    return f"{head} {base64.b64encode(data).decode()}" if data else head


def pool_architecture(
    os_config: model.MachineOSConfig | None, settings: model.ReconcilerConfigSpec
) -> str:
    """The pool's machine architecture: its MachineOSConfig's, else the repository's."""
    if os_config is not None and os_config.spec.architecture:
        return os_config.spec.architecture
    return settings.architecture


def kernel_swap_command(kernel_type: str) -> str:
    """The RUN command swapping the default kernel for `kernel_type` (MCO's template:
    detect the installed kernel, remove the default set, install the new set).
    The new kernel's initramfs is generated by the base's kernel-install plugins."""
    new = KERNEL_PACKAGES[kernel_type]
    old = " ".join(KERNEL_PACKAGES["default"])
    return "\n".join(
        [
            "set -eu;",
            f"if rpm -q {new[0]} >/dev/null 2>&1; then echo '{new[0]} is already installed';",
            "else old='';",
            f"for p in {old}; do",
            'if rpm -q "$p" >/dev/null 2>&1; then old="$old $p"; fi; done;',
            'if [ -n "$old" ]; then rpm -e --nodeps $old; fi;',
            f"dnf -y install {' '.join(new)};",
            "dnf clean all; fi",
        ]
    )


def plan_image(
    rendered: RenderedConfig,
    os_config: model.MachineOSConfig | None,
    settings: model.ReconcilerConfigSpec,
    architecture: str,
    *,
    inputs_digest: str | None = None,
) -> ImagePlan:
    """Plan the pool's image; raises `ConfigError` listing every problem found."""
    if architecture not in identity.CONTAINERFILE_ARCH:
        raise ValueError(f"unknown architecture {architecture!r}")
    # Images are made of the rendered config without the settings nodes apply live, and
    # every byte below comes from that and the pool name: never `rendered.name`, which
    # hashes the live settings too (one image serves all such rendered configs).
    spec = rendered.image_spec()
    ign = spec.get("config") or {}
    planner = _Planner(rendered)
    storage = ign.get("storage") or {}
    for node in storage.get("directories") or []:
        planner.directory(node)
    for node in storage.get("files") or []:
        planner.file(node)
    for node in storage.get("links") or []:
        planner.link(node)
    planner.users((ign.get("passwd") or {}).get("users") or [])
    planner.units((ign.get("systemd") or {}).get("units") or [])

    # Always: the timer that would race the node agent.
    planner.add_entry(
        Entry(f"{UNIT_DIR}/{UPDATES_TIMER}", "symlink", 0o777, target="/dev/null"),
        f"the {UPDATES_TIMER} mask",
    )

    fips = bool(spec.get("fips"))
    kargs = [
        a for entry in spec.get("kernelArguments") or [] for a in split_kernel_arguments(entry)
    ]
    if fips:
        kargs.insert(0, "fips=1")
    planner.add_entry(
        Entry(
            f"{KARGS_DIR}/50-{rendered.pool}.toml",
            "file",
            0o644,
            data=kargs_toml(kargs, rendered.pool),
        ),
        "spec.kernelArguments",
    )

    extensions = list(spec.get("extensions") or [])
    table = identity.extension_packages(extensions, settings)
    packages = sorted({p for name in table for p in table[name]})
    for name, pkgs in table.items():
        if not pkgs:
            known = settings.extensions if settings.extensions is not None else model.MCO_EXTENSIONS
            planner.problem(
                "spec.extensions",
                f"extension {name!r} has no packages",
                "add it with its packages to ReconcilerConfig spec.extensions; known: "
                + ", ".join(sorted(known)),
            )
    if packages:
        planner.step(
            "packages",
            f"dnf -y install {' '.join(shlex.quote(p) for p in packages)} && dnf clean all",
            f"extensions: {', '.join(sorted(set(extensions)))}",
        )

    kernel_type = spec.get("kernelType") or "default"
    if kernel_type == "64k-pages" and architecture != "arm64":
        planner.problem(
            "spec.kernelType",
            f"kernelType 64k-pages is only available on arm64, and this pool is {architecture}",
            "drop kernelType: 64k-pages or set the pool's architecture to arm64",
        )
    elif kernel_type in ("realtime", "64k-pages"):
        planner.step("packages", kernel_swap_command(kernel_type), f"kernelType: {kernel_type}")

    if fips:
        planner.step(
            "packages",
            "dnf -y install crypto-policies-scripts && dnf clean all && "
            "update-crypto-policies --no-reload --set FIPS",
            "fips: the FIPS crypto policy",
        )

    if not spec.get("osImageURL"):
        planner.problem(
            "spec.osImageURL",
            "the pool has no base image",
            f"set osImageURL in a MachineConfig, baseImagePullSpec in "
            f"machineosconfigs/{rendered.pool}.yaml, or defaultBaseImage in the "
            "ReconcilerConfig",
        )

    ca_bundle = identity.ca_bundle_of(settings)
    if ca_bundle:
        # `update-ca-trust` regenerates /etc/pki/ca-trust/extracted: only a build can
        # run it (containerfile.py emits the COPY and the RUN).
        planner.reasons.append("ReconcilerConfig caBundle (update-ca-trust)")

    cf = identity.containerfile_for(os_config, architecture)
    if cf is not None and cf.content.strip():
        planner.reasons.append(f"MachineOSConfig containerFile ({cf.containerfile_arch})")

    if planner.tmpfiles:
        lines = [planner.tmpfiles[p][0] for p in sorted(planner.tmpfiles)]
        body = (
            f"# pool {rendered.pool}: paths that live on /var (generated by the reconciler)\n"
            + "\n".join(lines)
            + "\n"
        )
        planner.add_entry(
            Entry(
                TMPFILES_PATH,
                "file",
                0o600 if planner.private_tmpfiles else 0o644,
                data=body.encode(),
            ),
            "files under /var",
        )
    else:
        lines = []

    try:
        entries = layer.complete(e for e, _ in planner.entries.values())
    except layer.LayerError as exc:
        planner.problem("spec.config.storage", str(exc), "give each path one type")
        entries = []
    if planner.problems:
        raise ConfigError(planner.problems)
    return ImagePlan(
        pool=rendered.pool,
        rendered_name=rendered.name,
        architecture=architecture,
        base_image=str(spec.get("osImageURL") or ""),
        entries=tuple(entries),
        tmpfiles=tuple(lines),
        kargs=tuple(kargs),
        extensions=tuple(extensions),
        packages=tuple(packages),
        kernel_type=kernel_type,
        fips=fips,
        run_steps=tuple(planner.run_steps),
        containerfile_arch=cf.containerfile_arch if cf is not None else None,
        containerfile_content=cf.content if cf is not None else "",
        labels=identity.image_labels(rendered, inputs_digest),
        reasons=tuple(planner.reasons),
        ca_bundle=ca_bundle,
    )
