"""systemd: unit files, dropins, and the links `systemctl enable` would make.

Stage: part of the image plan. Input: the `systemd.units` of a rendered config.
Output: entries under `/etc/systemd/system/` (units, dropins, enablement links from the
`[Install]` section) and `systemctl` RUN steps where the base image holds the unit.
Reasons: `docs/design/image.md`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.core.image.layer import Entry

if TYPE_CHECKING:
    from reconciler.core.image.layout import Planner

UNIT_DIR = "/etc/systemd/system"
UPDATES_TIMER = "bootc-fetch-apply-updates.timer"
LINK_KEYS = (("WantedBy", ".wants"), ("RequiredBy", ".requires"), ("UpheldBy", ".upholds"))


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


def split_unit(name: str) -> tuple[str, str | None, str]:
    """`foo@bar.service` → ('foo', 'bar', '.service'); `foo.service` → ('foo', None, ...)."""
    stem, dot, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return prefix, (instance if at else None), dot + suffix


def plan_units(planner: Planner, units: Sequence[Mapping[str, Any]]) -> None:
    """Units, dropins and enablement (links, or `systemctl` RUN steps) into the plan."""
    by_name = {u["name"]: u for u in units}
    for unit in units:
        name = unit["name"]
        origin = f"spec.config.systemd.units[name={name}]"
        if name == UPDATES_TIMER:
            planner.problem(
                origin,
                f"{UPDATES_TIMER} is masked in every image so it never reboots a node "
                "behind the node agent's back",
                "remove this unit from the config; the node agent applies updates",
            )
            continue
        unit_path = f"{UNIT_DIR}/{name}"
        text = unit.get("contents")
        if unit.get("mask"):
            planner.add_entry(Entry(unit_path, "symlink", 0o777, target="/dev/null"), origin)
        elif text is not None:
            planner.add_entry(Entry(unit_path, "file", 0o644, data=text.encode()), origin)
        for dropin in unit.get("dropins") or []:
            if dropin.get("contents"):
                planner.add_entry(
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
            _enable(planner, name, by_name, origin, set())
        elif unit.get("enabled") is False:
            planner.step(
                "config",
                f"systemctl disable {shlex.quote(name)}",
                f"disable {name}: links to remove may come from the base image "
                "(mask: true needs no build step)",
            )


def _enable(
    planner: Planner,
    name: str,
    by_name: Mapping[str, Mapping[str, Any]],
    origin: str,
    seen: set[str],
) -> None:
    if name in seen:
        return
    seen.add(name)
    prefix, instance, suffix = split_unit(name)
    unit = by_name.get(name) or {}
    source_name = name
    text = unit.get("contents")
    if text is None and instance:
        template = f"{prefix}@{suffix}"
        text = (by_name.get(template) or {}).get("contents")
        source_name = template
    if text is None or (by_name.get(source_name) or {}).get("mask"):
        planner.step(
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
            planner.problem(
                origin,
                f"template unit {name} is enabled but has no DefaultInstance=",
                f"add DefaultInstance= to its [Install] section, or enable an "
                f"instance such as {prefix}@NAME{suffix}",
            )
            return
        link_name = f"{prefix}@{default[-1]}{suffix}"
    unit_file = f"{UNIT_DIR}/{source_name}"
    for key, dir_suffix in LINK_KEYS:
        for target in install.get(key, []):
            if "/" in target or "%" in target or "." not in target:
                planner.problem(
                    origin,
                    f"{key}={target} in {source_name} is not a unit name this plan can "
                    "link (specifiers are not expanded)",
                    "write the target unit's full name, e.g. multi-user.target",
                )
                continue
            planner.add_entry(
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
            planner.problem(origin, f"Alias={alias} is not a unit name", "write a unit name")
            continue
        planner.add_entry(Entry(f"{UNIT_DIR}/{alias}", "symlink", 0o777, target=unit_file), origin)
    for also in install.get("Also", []):
        _enable(planner, also, by_name, origin, seen)
