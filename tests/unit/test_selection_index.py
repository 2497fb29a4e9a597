"""A pool's configs found through the label index are exactly those a test of every
config against its selector finds, in the same merge order (issue 13: the index only
narrows the search)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import load, merge, select
from reconciler.errors import ConfigError

KEYS = ["machineconfiguration.openshift.io/role", "zone", "tier"]
VALUES = ["worker", "infra", "a", "b"]
labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
requirement = st.one_of(
    st.fixed_dictionaries({"key": st.sampled_from(KEYS), "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(st.sampled_from(VALUES), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"key": st.sampled_from(KEYS),
                           "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)  # fmt: skip
selectors = st.fixed_dictionaries(
    {}, optional={"matchLabels": labels, "matchExpressions": st.lists(requirement, max_size=2)}
).filter(lambda s: s.get("matchLabels") or s.get("matchExpressions"))  # empty: refused


def _files(config_labels: list[dict[str, str]], selector: dict[str, Any]) -> dict[str, str]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
         "metadata": {"name": "p"}, "spec": {"machineConfigSelector": selector}},
    ]  # fmt: skip
    for i, lab in enumerate(config_labels):
        docs.append({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
                     "metadata": {"name": f"{90 - i:02d}-c", "labels": lab},
                     "spec": {"kernelArguments": [f"c{i}"]}})  # fmt: skip
    return {"machineconfigs/all.yaml": yaml.safe_dump_all(docs)}


@settings(max_examples=200, deadline=None)
@given(st.lists(labels, min_size=1, max_size=8), selectors)
def test_the_index_selects_what_matching_every_config_selects(
    config_labels: list[dict[str, str]], selector: dict[str, Any]
) -> None:
    repo = load.load_repository(_files(config_labels, selector))
    pool_selector = repo.pools["p"].obj.spec.machine_config_selector
    every = [
        (mc.name, mc.labels, mc)
        for mc in repo.machine_configs.values()
        if select.matches(pool_selector, mc.labels)
    ]
    want = [mc.name for mc in select.merge_order(every)]
    if not want:
        with pytest.raises(ConfigError, match="no MachineConfigs found matching selector"):
            merge.select_configs(repo, "p")
        return
    assert [mc.name for mc in merge.select_configs(repo, "p")] == want
