"""What makes loading fast must not change what it means.

- The YAML walk (`yamlsource._Loader`) shortcuts PyYAML's resolver and constructor:
  anchors, aliases, merge keys, explicit tags and repeated scalars must read exactly as
  PyYAML reads them, and YAML it refuses must be refused with the line.
- Loading pauses Python's cycle collector (`load._CollectorPause`): it must be back on
  after every load, however the load ends, and with loads in several threads.
- Generated MachineConfigs, valid or broken in several ways at once, never crash the
  loader, and each is either loaded or refused with problems naming file and fix.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adapters import directory
from reconciler.core import load, model, yamlsource
from reconciler.core.yamlsource import YAMLSyntaxError, parse_documents
from tests.unit import test_bad_input

EXAMPLES = Path(__file__).parent.parent.parent / "examples"


# --- generated MachineConfigs ------------------------------------------------------------

_FILES = st.lists(
    st.fixed_dictionaries(
        {"path": st.sampled_from(["/etc/a.conf", "/etc/b", "etc/relative", "/etc/../x"])},
        optional={
            "mode": st.sampled_from([420, 0o4755, "420", -1]),
            "overwrite": st.sampled_from([True, "yes"]),
            "contents": st.sampled_from(
                [{"source": "data:,x"}, {"source": "data:;base64,!!"}, {"source": ""}, "x"]
            ),
            "append": st.just([{"source": "data:,y"}]),
            "contens": st.just({"source": "data:,typo"}),
            "Mode": st.just(384),
            "filesystem": st.just("root"),
        },
    ),
    max_size=3,
)
_CONFIG = st.fixed_dictionaries(
    {
        "ignition": st.sampled_from(
            [{"version": "3.4.0"}, {"version": "2.2.0"}, {"version": "9.9"}, {}, {"version": 3}]
        )
    },
    optional={
        "storage": st.fixed_dictionaries({}, optional={"files": _FILES}),
        "systemd": st.fixed_dictionaries(
            {},
            optional={
                "units": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["a.service", "bad", "b.timer"])},
                        optional={
                            "enabled": st.sampled_from([True, "on"]),
                            "contents": st.just("[Service]\n"),
                        },
                    ),
                    max_size=2,
                )
            },
        ),
        "passwd": st.just({"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 A"]}]}),
        "networkd": st.just({}),
    },
)
_SPEC = st.fixed_dictionaries(
    {},
    optional={
        "config": st.one_of(_CONFIG, st.sampled_from([None, {}, "text", []])),
        "kernelArguments": st.sampled_from([["quiet"], ["a  - b"], "quiet", None, [1]]),
        "extensions": st.sampled_from([["usbguard"], ["nope"], None]),
        "fips": st.sampled_from([True, "true"]),
        "kernelType": st.sampled_from(["realtime", "rt", ""]),
        "osImageURL": st.sampled_from(["quay.io/x/y:1", 5]),
        "kernelArgument": st.just(["typo"]),
        "unknownField": st.just(1),
    },
)
_MACHINE_CONFIG = st.fixed_dictionaries(
    {
        "apiVersion": st.just(model.MCO_API_VERSION),
        "kind": st.just("MachineConfig"),
        "metadata": st.fixed_dictionaries(
            {"name": st.sampled_from(["50-a", "50-b", "Bad_Name", ""])},
            optional={"labels": st.sampled_from([{model.ROLE_LABEL: "worker"}, {}, {"x": 1}])},
        ),
    },
    optional={"spec": st.one_of(_SPEC, st.just("not a mapping"))},
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    docs=st.lists(
        _MACHINE_CONFIG, min_size=1, max_size=3, unique_by=lambda d: d["metadata"]["name"]
    )
)
def test_generated_machine_configs_are_loaded_or_refused_with_a_fix(
    docs: list[dict[str, Any]],
) -> None:
    files = {
        "machineconfigpools/worker.yaml": test_bad_input.POOL,
        "machineconfigs/all.yaml": yaml.safe_dump_all(docs),
    }
    repo = load.load_repository(files)
    for problem in repo.problems:
        assert problem.file == "machineconfigs/all.yaml"
        assert problem.fix
    refused = {p.name for p in repo.problems}
    for doc in docs:
        name = doc["metadata"]["name"]
        assert (name in repo.machine_configs) != (name in refused) or name in ("Bad_Name", "")
    for loaded in repo.machine_configs.values():
        assert loaded.obj.spec.config is None  # the config is the dict alone
        assert not loaded.ignition or loaded.ignition["ignition"]["version"] == "3.5.0"


# --- the cycle collector -----------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_as_before_after_a_load(enabled: bool) -> None:
    files = directory.read_config_files(EXAMPLES)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load.load_repository(files)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


class _Exploding(dict[str, bytes]):
    def __iter__(self) -> Iterator[str]:
        raise KeyboardInterrupt


def test_the_collector_is_back_on_when_a_load_is_interrupted() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyboardInterrupt):
        load.load_repository(_Exploding())
    assert gc.isenabled()


def test_the_collector_is_paused_during_a_load_and_back_on_after_concurrent_loads() -> None:
    seen: list[bool] = []
    inside = threading.Barrier(2)

    class Files(dict[str, bytes]):
        def __iter__(self) -> Iterator[str]:
            inside.wait(timeout=10)  # both loads have started
            seen.append(gc.isenabled())
            return super().__iter__()

    threads = [threading.Thread(target=load.load_repository, args=(Files(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert seen == [False, False]
    assert gc.isenabled()


# --- the YAML walk: what libyaml composes, read as PyYAML reads it -----------------------


_SCALARS = ("420", "0644", "true", "On", "~", "x", "'420'", "1.5", "2024-01-01", "!!str 12",
            "!!int '7'", '"a\\nb"', "0x1F", "-3", ".inf", "null", "''")  # fmt: skip


@st.composite
def yaml_with_anchors(draw: st.DrawFn) -> str:
    """A flow-style YAML stream with anchors, aliases (of earlier anchors of the same
    document), merge keys (`<<: *m`, `<<: [*m, *n]`, `!!merge <<`), explicit tags, and
    scalars whose implicit types the walk resolves and shares (`420`, `0644`, `true`,
    `~`); keys unique per mapping."""
    anchors: list[tuple[str, bool]] = []  # (name, is a mapping), of this document
    names = iter(range(10**6))

    def node(depth: int) -> str:
        choice = draw(st.integers(6 if depth == 0 else 0, 9 if depth < 3 else 3))
        if choice <= 2 and anchors and draw(st.booleans()):
            return "*" + draw(st.sampled_from(anchors))[0]
        if choice <= 3:
            return draw(st.sampled_from(_SCALARS))
        anchor = f"a{next(names)}"
        if choice <= 5:
            text = "[" + ", ".join(node(depth + 1) for _ in range(draw(st.integers(0, 3)))) + "]"
            is_map = False
        else:
            keys = draw(
                st.lists(st.sampled_from(["a", "b", "c", "10", "x y"]), unique=True, max_size=3)
            )
            maps = [name for name, is_map in anchors if is_map]  # defined before this one
            items = [f"{k}: {node(depth + 1)}" for k in keys]
            if maps and draw(st.booleans()):
                picked = draw(st.lists(st.sampled_from(maps), min_size=1, max_size=2))
                merge = ", ".join(f"*{m}" for m in picked)
                tag = draw(st.sampled_from(["<<", "!!merge <<"]))
                at = draw(st.integers(0, len(items)))
                items.insert(at, f"{tag}: {merge if len(picked) == 1 else f'[{merge}]'}")
            text = "{" + ", ".join(items) + "}"
            is_map = True
        if draw(st.booleans()):
            # usable by what follows, not inside itself (recursion is refused elsewhere)
            anchors.append((anchor, is_map))
            return f"&{anchor} {text}"
        return text

    def document() -> str:
        anchors.clear()
        return node(0)

    return "\n---\n".join(document() for _ in range(draw(st.integers(1, 2)))) + "\n"


@settings(max_examples=400, deadline=None)
@given(text=yaml_with_anchors())
def test_the_walk_reads_anchors_aliases_merges_and_tags_as_pyyaml(text: str) -> None:
    assert parse_documents(text) == list(yaml.load_all(text, Loader=yaml.SafeLoader))


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first at line 1)", 3),
        ("x: 0\n1: a\ny: 2\ntrue: b\n", "duplicate key True (first at line 2)", 4),
        ("'a': 1\n\"a\": 2\n", "duplicate key 'a' (first at line 1)", 2),
        ("a: {b: 1,\n  b: 2}\n", "duplicate key 'b' (first at line 1)", 2),
        ("? [a]\n: 1\n", "a mapping key is a list, which no object can have", 1),
        ("a: !foo bar\n", "could not determine a constructor for the tag '!foo'", 1),
        ("a:\n  b: !foo [1]\n", "could not determine a constructor for the tag '!foo'", 2),
        ("a: !!int abc\n", "'abc' is not a valid !!int", 1),
        ("a:\n  b: !!bool maybe\n", "'maybe' is not a valid !!bool", 2),
        ("a: !!timestamp x\n", "'x' is not a valid !!timestamp", 1),
        ("a: !!set {!!float x: null}\n", "a value in this !!set is not valid", 1),
    ],
    ids=[
        "duplicate",
        "1 and true",
        "quoted",
        "flow",
        "list key",
        "unknown scalar tag",
        "unknown collection tag",
        "not an int",
        "not a bool",
        "not a timestamp",
        "not a float in a set",
    ],
)
def test_yaml_refusals_name_the_line(text: str, problem: str, line: int) -> None:
    with pytest.raises(YAMLSyntaxError) as err:
        parse_documents(text)
    assert problem in err.value.problem
    assert err.value.line == line


def test_an_unknown_tag_is_a_problem_of_its_file_not_a_crash() -> None:
    files = {
        "machineconfigpools/worker.yaml": test_bad_input.POOL,
        "machineconfigs/a.yaml": test_bad_input.mc("a", "kernelArguments: [!foo quiet]"),
    }
    (problem,) = load.load_repository(files).problems
    assert problem.file == "machineconfigs/a.yaml"
    assert problem.line == 8
    assert "could not determine a constructor for the tag '!foo'" in problem.problem
    assert problem.fix


def test_repeated_scalars_mean_what_pyyaml_says() -> None:
    """Equal ints, bools, nulls and floats share one object in the walk."""
    text = "a: [420, 420, true, true, ~, ~, 1.5, 1.5, .nan]\nb: {420: x, '420': y, 0x1F: z}\n"
    assert parse_documents(text) == list(yaml.load_all(text, Loader=yaml.SafeLoader))


def test_the_resolver_shortcuts_hold_for_this_pyyaml() -> None:
    """The walk's resolver answers quoted scalars, mappings and sequences without asking
    PyYAML: right only while the safe loader has no path and no wildcard resolvers."""
    assert not yamlsource._BaseLoader.yaml_path_resolvers
    assert None not in yamlsource._BaseLoader.yaml_implicit_resolvers
