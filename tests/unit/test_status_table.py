"""`reconciler status` for a terminal: an aligned table like `oc get mcp` (pool, ready,
state, pin as a short digest, source commit, age of the state), then one line per pool
that needs a word; colour only when asked (on a TTY without NO_COLOR)."""

from __future__ import annotations

from typing import Any

from reconciler.cli.loop import _status_text

NOW = 1_800_000_000.0
DIGEST = "sha256:" + "ab12" * 16


def condition(status: bool, reason: str, message: str, age: float) -> dict[str, Any]:
    return {"status": status, "reason": reason, "message": message, "since": NOW - age}


DOC = {
    "head": "0123456789abcdef",
    "observedHead": "0123456789abcdef",
    "statusIsCurrent": True,
    "lastPass": NOW - 30,
    "pools": {
        "worker": {
            "pin": f"registry.example.com/fleet/worker@{DIGEST}",
            "sourceCommit": "fedcba9876543210",
            "conditions": {"Ready": condition(True, "Pinned", "pinned", 3 * 3600 + 5)},
            "lastError": None,
        },
        "infra": {
            "pin": None,
            "conditions": {
                "Ready": condition(False, "ConfigError", "x", 90),
                "Stalled": condition(True, "ConfigError", "machineconfigs/a.yaml: bad\nmore", 90),
            },
            "lastError": "machineconfigs/a.yaml: bad",
        },
        "edge": {"pin": None, "pinError": "pins/edge.yaml: not a pin"},
    },
}


def test_status_is_an_aligned_table_with_short_digests_and_ages() -> None:
    lines = _status_text(DOC, now=NOW).splitlines()
    assert lines[0] == "head 0123456789"
    table = lines[1:5]
    assert table == [
        "POOL     READY     STATE     PIN                   SOURCE       AGE",
        "edge     Unknown   -         invalid               -            -",
        "infra    False     Stalled   none                  -            1m",
        "worker   True      Pinned    sha256:ab12ab12ab12   fedcba9876   3h",
    ]
    # the pin column starts at the same place in every row
    assert {row.index(row.split()[3]) for row in table} == {table[0].index("PIN")}
    assert DIGEST not in "\n".join(lines)  # the full digest is in -o json
    assert lines[5:] == [
        "edge: pins/edge.yaml: not a pin",
        "infra: stalled: machineconfigs/a.yaml: bad",
    ]


def test_colour_only_when_asked() -> None:
    assert "\x1b[" not in _status_text(DOC, now=NOW)
    coloured = _status_text(DOC, now=NOW, color=True)
    assert "\x1b[31m" in coloured  # the stalled pool in red


def test_the_repositorys_warnings_follow_the_table() -> None:
    doc = {**DOC, "warnings": ["machineconfigs/b.yaml:9: MachineConfig b: colour: unknown key"]}
    lines = _status_text(doc, now=NOW).splitlines()
    assert lines[-1] == "warning: machineconfigs/b.yaml:9: MachineConfig b: colour: unknown key"
    assert lines[:-1] == _status_text(DOC, now=NOW).splitlines()  # nothing else moves


def test_warnings_survive_a_save_and_a_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from reconciler.loop.status import Status, StatusStore

    store = StatusStore(tmp_path / "status.json")
    store.save(Status(warnings=["a.yaml:1: colour: unknown key"]))
    assert store.load().warnings == ["a.yaml:1: colour: unknown key"]


def test_read_from_the_cluster_the_table_counts_machines_and_names_a_paused_rollout() -> None:
    fleet = {"machineCount": 10, "updatedMachineCount": 1, "readyMachineCount": 1,
             "unavailableMachineCount": 0, "degradedMachineCount": 1}  # fmt: skip
    doc = {
        **DOC,
        "recordedIn": "cluster",
        "pools": {
            "worker": {
                **DOC["pools"]["worker"],
                "fleet": fleet,
                "rollout": {"phase": "Paused", "reason": "rollout of sha256:ab12 paused: "
                            "canary node n0 failed; resume with a new pin"},
            },
        },
    }  # fmt: skip
    lines = _status_text(doc, now=NOW).splitlines()
    assert "recorded in the cluster (BootcPools)" in lines
    header = next(line for line in lines if line.startswith("POOL"))
    assert header.split()[-1] == "MACHINES"
    row = next(line for line in lines if line.startswith("worker"))
    assert row.endswith("1/10 updated, 1 degraded")
    assert (
        "worker: rollout of sha256:ab12 paused: canary node n0 failed; resume with a new pin"
        in lines
    )
