"""Properties that must hold for every repository, checked with Hypothesis:

- the rendered name depends on content only: not on file names, on how documents are
  split across files or ordered, or on YAML key order;
- merge precedence: for every file path, the contents come from the last config in
  MCO's merge order (worker-role configs first, then the rest, each by name) that sets
  them, and the mode from the last that sets a mode;
- our fast YAML loader returns exactly what PyYAML's safe loader returns.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core import load, verdict
from reconciler.core.yamlsource import parse_documents

ROLE = "machineconfiguration.openshift.io/role"
POOLS = {
    "worker": {"matchLabels": {ROLE: "worker"}},
    "infra": {"matchExpressions": [{"key": ROLE, "operator": "In", "values": ["worker", "infra"]}]},
}
PATHS = ["/etc/a.conf", "/etc/b.conf", "/etc/c/d.conf", "/var/lib/x"]

names = st.from_regex(r"[0-9]{2}-[a-z]{1,6}", fullmatch=True)
file_entries = st.fixed_dictionaries(
    {"path": st.sampled_from(PATHS)},
    optional={
        "mode": st.sampled_from([0o600, 0o644, 0o755]),
        "contents": st.builds(lambda t: {"source": "data:," + quote(t)}, st.text(max_size=12)),
    },
)


@st.composite
def machine_configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=6))
    chosen = draw(st.lists(names, min_size=count, max_size=count, unique=True))
    out = []
    for name in chosen:
        role = draw(st.sampled_from(["worker", "infra"]))
        files = draw(st.lists(file_entries, max_size=3, unique_by=lambda f: f["path"]))
        spec: dict[str, Any] = {
            "kernelArguments": draw(
                st.lists(st.sampled_from(["nosmt", "quiet", "a=1"]), max_size=2)
            )
        }
        if files:
            spec["config"] = {"ignition": {"version": "3.2.0"}, "storage": {"files": files}}
        out.append(
            {
                "apiVersion": "machineconfiguration.openshift.io/v1",
                "kind": "MachineConfig",
                "metadata": {"name": name, "labels": {ROLE: role}},
                "spec": spec,
            }
        )
    return out


def pool_docs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "machineconfiguration.openshift.io/v1",
            "kind": "MachineConfigPool",
            "metadata": {"name": name},
            "spec": {"machineConfigSelector": selector},
        }
        for name, selector in POOLS.items()
    ]


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same value with every mapping's key order shuffled (lists keep their order)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def layout(docs: list[dict[str, Any]], rng: random.Random) -> dict[str, str]:
    """Scatter documents over randomly named files, several per file, keys shuffled."""
    docs = [shuffled(d, rng) for d in docs]
    rng.shuffle(docs)
    files: dict[str, str] = {}
    while docs:
        take = rng.randint(1, 3)
        chunk, docs = docs[:take], docs[take:]
        name = f"{rng.choice(['mc', 'pools', 'x/y', 'deep/er'])}/{rng.getrandbits(32):08x}.yaml"
        files[name] = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in chunk)
    return files


def rendered_names(files: dict[str, str]) -> dict[str, str]:
    repo = load.load_repository(files)
    assert repo.problems == []
    rendered, failed = verdict.render_all(repo)
    assert not failed or all("no MachineConfigs found" in str(e) for e in failed.values())
    return {pool: r.name for pool, r in rendered.items()}


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs=machine_configs(), seed_a=st.integers(), seed_b=st.integers())
def test_rendered_name_ignores_file_layout_and_key_order(
    configs: list[dict[str, Any]], seed_a: int, seed_b: int
) -> None:
    docs = pool_docs() + configs
    first = rendered_names(layout(docs, random.Random(seed_a)))
    second = rendered_names(layout(docs, random.Random(seed_b)))
    assert first == second


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs=machine_configs())
def test_rendered_name_changes_with_content(configs: list[dict[str, Any]]) -> None:
    docs = pool_docs() + configs
    before = rendered_names(layout(docs, random.Random(0)))
    changed = [dict(c) for c in configs]
    target = changed[0]
    target["spec"] = {
        **target["spec"],
        "kernelArguments": [*target["spec"]["kernelArguments"], "new=1"],
    }
    after = rendered_names(layout(pool_docs() + changed, random.Random(0)))
    role = target["metadata"]["labels"][ROLE]
    affected = {"worker", "infra"} if role == "worker" else {"infra"}
    for pool in affected:
        assert before[pool] != after[pool]


def expected_files(configs: list[dict[str, Any]], pool: str) -> dict[str, dict[str, Any]]:
    """A model of MCO's precedence: order, then last writer wins per field."""
    roles = {"worker"} if pool == "worker" else {"worker", "infra"}
    selected = [c for c in configs if c["metadata"]["labels"][ROLE] in roles]
    worker = sorted((c for c in selected if c["metadata"]["labels"][ROLE] == "worker"),
                    key=lambda c: c["metadata"]["name"].encode())  # fmt: skip
    other = sorted((c for c in selected if c["metadata"]["labels"][ROLE] != "worker"),
                   key=lambda c: c["metadata"]["name"].encode())  # fmt: skip
    result: dict[str, dict[str, Any]] = {}
    for config in worker + other:
        for entry in config["spec"].get("config", {}).get("storage", {}).get("files", []):
            current = result.setdefault(entry["path"], {})
            if "mode" in entry:
                current["mode"] = entry["mode"]
            if "contents" in entry:
                current["source"] = entry["contents"]["source"]
    return result


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs=machine_configs())
def test_merge_precedence_last_in_mco_order_wins_per_field(configs: list[dict[str, Any]]) -> None:
    repo = load.load_repository(layout(pool_docs() + configs, random.Random(1)))
    rendered, _ = verdict.render_all(repo)
    for pool, result in rendered.items():
        files = {
            f["path"]: {
                **({"mode": f["mode"]} if "mode" in f else {}),
                **(
                    {"source": f["contents"]["source"]} if "source" in f.get("contents", {}) else {}
                ),
            }
            for f in result.ignition.get("storage", {}).get("files", [])
        }
        assert files == expected_files(configs, pool)
        assert all(
            f["overwrite"] is True for f in result.ignition.get("storage", {}).get("files", [])
        )


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["yes", "no", "on", "off", "0644", "0x1f", "~", "null", "1e3", "2024-01-01"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=yaml_values, style=st.sampled_from([None, "flow", "block"]))
def test_fast_loader_equals_pyyaml(value: Any, style: str | None) -> None:
    flow = {None: None, "flow": True, "block": False}[style]
    text = yaml.safe_dump(value, default_flow_style=flow)
    # plain scalars written by hand, so implicit typing (yes/0644/~) is exercised too
    text += "---\n" + "\n".join(f"k{i}: {s}" for i, s in enumerate(["yes", "0644", "~", "1.5"]))
    assert parse_documents(text) == list(yaml.load_all(text, Loader=yaml.SafeLoader))
