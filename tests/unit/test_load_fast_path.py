"""The loader's fast paths against its careful ones: the same repository either way.

Loading validates a MachineConfig once as a whole and takes the careful path (the object
without its Ignition config and the config each on their own, so both sets of errors are
reported) only when that fails. A fast path that let through what the careful one
refuses, or reported other words, would make `validate` and `run` disagree with what
was tested; so every repository here is loaded both ways and compared in full: objects,
Ignition dicts, problems, warnings and blockers. Inputs: every golden and bad-input
repository, the real MachineConfigs of the corpus, the examples, and generated
MachineConfigs that are valid or broken in one or several ways at once.

Loading also pauses Python's cycle collector (`load._CollectorPause`): it must be back
on after every load, however the load ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adapters import directory
from reconciler.core import load, model, yamlsource
from reconciler.core.yamlsource import YAMLSyntaxError, parse_documents
from tests.unit import test_bad_input, test_corpus

UNIT = Path(__file__).parent
ROOT = UNIT.parent.parent


def snapshot(repo: load.Repository) -> dict[str, Any]:
    """Everything a later stage can see of a loaded repository, comparable with ==."""

    def origin(o: load.Origin) -> tuple[str, int]:
        return (o.file, o.doc)

    return {
        "machine_configs": {
            name: (mc.obj, mc.ignition, origin(mc.origin))
            for name, mc in repo.machine_configs.items()
        },
        "pools": {n: (p.obj, origin(p.origin)) for n, p in repo.pools.items()},
        "os_configs": {n: (m.obj, origin(m.origin)) for n, m in repo.os_configs.items()},
        "settings": repo.settings,
        "problems": repo.problems,
        "warnings": repo.warnings,
        "blockers": repo.blockers,
    }


def careful(files: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> load.Repository:
    """The repository loaded without the fast path (every MachineConfig the careful way)."""
    with monkeypatch.context() as patch:
        patch.setattr(load, "_valid_or_none", lambda cls, doc: None)
        return load.load_repository(files)


def assert_same_both_ways(files: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = load.load_repository(files)
    assert snapshot(fast) == snapshot(careful(files, monkeypatch))


def _repositories() -> Iterator[tuple[str, dict[str, Any]]]:
    for case_dir in sorted((UNIT / "golden").iterdir()):
        if (case_dir / "repo").is_dir():
            yield f"golden-{case_dir.name}", dict(directory.read_config_files(case_dir / "repo"))
    for case in [*test_bad_input.CASES, *test_bad_input.WARNING_CASES]:
        yield f"bad-input-{case.id}", test_bad_input.repo_with(case)
    for name in test_corpus.FILES:
        text = (test_corpus.CORPUS / name).read_text()
        yield f"corpus-{name}", test_corpus.minimal_repo(text)[0]
    yield "examples", dict(directory.read_config_files(ROOT / "examples"))
    for i, spec in enumerate(_INVALID_SPECS):
        yield (
            f"invalid-{i}",
            {
                "machineconfigpools/worker.yaml": test_bad_input.POOL,
                "machineconfigs/a.yaml": test_bad_input.mc("a", spec),
            },
        )


_FILE = "storage:\n  files:\n    - {path: /etc/x, mode: 420, contents: {source: 'data:,x'}}"
# MachineConfigs that do not validate as a whole: wrong types in spec, in the Ignition
# config, in both, and with an MCO check failing beside a type error elsewhere.
_INVALID_SPECS = [
    "kernelArguments: quiet",
    "fips: 'true'",
    "kernelType: rt",
    "osImageURL: 5",
    "extensions: usbguard",
    "unknownField: 1",
    "kernelArgument: [quiet]",
    test_bad_input.ign(_FILE.replace("mode: 420", "mode: '420'")),
    test_bad_input.ign(_FILE.replace("/etc/x", "etc/x")) + "\nfips: 'yes'",
    test_bad_input.ign(_FILE.replace("mode: 420", "mode: '420'")) + "\nkernelType: rt",
    test_bad_input.ign("systemd:\n  units: [{name: a.service, enabled: 'on'}]"),
    test_bad_input.ign("passwd:\n  users: [{name: core, sshAuthorizedKeys: ssh-ed25519 A}]"),
    test_bad_input.ign(_FILE) + "\nkernelArguments: [1]",
    test_bad_input.ign(_FILE.replace("/etc/x", "/etc/../x")) + "\nextensions: [1]",
]


REPOSITORIES = dict(_repositories())


def test_the_inputs_take_both_paths_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison below is only worth something if both paths are taken often."""
    results: list[bool] = []
    fast = load._valid_or_none

    def spy(cls: Any, doc: dict[str, Any]) -> Any:
        found = fast(cls, doc)
        results.append(found is not None)
        return found

    monkeypatch.setattr(load, "_valid_or_none", spy)
    for files in REPOSITORIES.values():
        load.load_repository(files)
    assert results.count(True) >= 100
    assert results.count(False) >= len(_INVALID_SPECS)


@pytest.mark.parametrize("name", sorted(REPOSITORIES))
def test_fast_and_careful_loads_are_the_same(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_both_ways(REPOSITORIES[name], monkeypatch)


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
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(docs=st.lists(_MACHINE_CONFIG, min_size=1, max_size=3))
def test_generated_machine_configs_load_the_same_both_ways(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "machineconfigpools/worker.yaml": test_bad_input.POOL,
        "machineconfigs/all.yaml": yaml.safe_dump_all(docs),
    }
    assert_same_both_ways(files, monkeypatch)


# --- the cycle collector -----------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_as_before_after_a_load(enabled: bool) -> None:
    files = REPOSITORIES["examples"]
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
    ],
    ids=[
        "duplicate",
        "1 and true",
        "quoted",
        "flow",
        "list key",
        "unknown scalar tag",
        "unknown collection tag",
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
