"""The loop's load and verdict caches give what a fresh load and a fresh judgement give
(issue 13: a pass parses only the files that changed and judges only the pools whose
inputs moved). After any sequence of edits — duplicates across files, a second
ReconcilerConfig, a file past the problem limit, YAML errors, files that are not UTF-8,
a MachineOSConfig without its pool, an extension only the settings allow — the cached
repository has the same objects, problems, warnings and blockers in the same order, and
every pool the same verdict, as loading and judging from scratch."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.core import load, verdict
from reconciler.loop.loading import LoadCache

MCO = "apiVersion: machineconfiguration.openshift.io/v1"
OURS = "apiVersion: gitops.bootc.dev/v1alpha1"
ROLE = "machineconfiguration.openshift.io/role"


def pool(name: str, role: str) -> str:
    return (f"{MCO}\nkind: MachineConfigPool\nmetadata: {{name: {name}}}\n"
            f"spec:\n  machineConfigSelector:\n    matchLabels: {{{ROLE}: {role}}}\n")  # fmt: skip


def mosc(name: str, base: str = "quay.io/fedora/fedora-bootc:42") -> str:
    return (f"{MCO}\nkind: MachineOSConfig\nmetadata: {{name: {name}}}\n"
            f"spec:\n  machineConfigPool: {{name: {name}}}\n"
            f"  renderedImagePushSpec: registry.example.com/fleet/{name}:latest\n"
            f"  baseImagePullSpec: {base}\n")  # fmt: skip


def mc(name: str, role: str | None, spec: str) -> str:
    labels = f"\n  labels: {{{ROLE}: {role}}}" if role else ""
    return f"{MCO}\nkind: MachineConfig\nmetadata:\n  name: {name}{labels}\nspec: {spec}\n"


def settings_doc(name: str, spec: str) -> str:
    return f"{OURS}\nkind: ReconcilerConfig\nmetadata: {{name: {name}}}\nspec: {spec}\n"


DOCS = [
    pool("worker", "worker"),
    pool("infra", "infra"),
    pool("worker", "infra"),  # a second pool 'worker'
    pool("Bad_Pool", "worker"),
    mosc("worker"),
    mosc("infra", "quay.io/fedora/fedora-bootc:41"),
    mosc("gone"),  # names a pool nobody defines
    mosc("infra", "not a reference!"),
    mc(
        "50-motd",
        "worker",
        "{config: {ignition: {version: 3.4.0}, storage: {files: "
        "[{path: /etc/motd, mode: 420, contents: {source: 'data:,hi'}}]}}}",
    ),
    mc("50-motd", "infra", "{kernelArguments: [a=1]}"),  # the same name twice
    mc("60-kargs", "worker", "{kernelArguments: [audit=1]}"),
    mc("60-kargs", "infra", "{kernelArguments: [audit=0]}"),
    mc("70-ext", "worker", "{extensions: [custom-tool]}"),  # only with the settings below
    mc("80-bad", "infra", "{kernelArguments: 7}"),
    mc("85-unlabelled", None, "{kernelArguments: [x=1]}"),  # a warning
    mc("90-unused", "worker", "{config: {ignition: {version: 3.4.0}, bogus: 1}}"),  # a warning
    mc("95-typo", "worker", "{kernelArgs: [x]}"),
    settings_doc("a", "{extensions: {custom-tool: [custom-tool]}}"),
    settings_doc("b", "{defaultBaseImage: 'quay.io/fedora/fedora-bootc:40'}"),
    settings_doc("c", "{caBundle: nope}"),
    "- a list, not an object\n",
    f"{MCO}\nkind: KubeletConfig\nmetadata: {{name: k}}\n",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
]
BROKEN = "kind: [unclosed\n"
# Past MAX_PROBLEMS_PER_FILE, with one more document that a duplicate may cut off.
MANY = "---\n".join(
    [mc(f"9{i:02d}-m", "worker", "{kernelArguments: 7}") for i in range(load.MAX_PROBLEMS_PER_FILE - 1)]
    + [pool("worker", "worker"), mc("60-kargs", "worker", "{kernelArguments: [y=1]}"),
       mc("99-after", "worker", "{kernelArguments: [z=1]}")]
)  # fmt: skip
PATHS = ["a.yaml", "m/b.yaml", "m/c.yml", "p/d.yaml", "z.yaml", "pins/x.yaml", ".hidden/y.yaml"]

content = st.one_of(
    st.lists(st.sampled_from(range(len(DOCS))), max_size=4).map(
        lambda picks: "---\n".join(DOCS[i] for i in picks)
    ),
    st.sampled_from([BROKEN, MANY, "", "---\n---\n"]),
    st.just(b"\xff\xfe not utf-8"),
    st.just(load.Unreadable("is a FIFO", "commit a file")),
    st.none(),  # deleted
)
edits = st.lists(st.tuples(st.sampled_from(PATHS), content), min_size=1, max_size=10)


def _object(item: load.Loaded[Any] | load.LoadedConfig) -> tuple[Any, ...]:
    extra = item.ignition if isinstance(item, load.LoadedConfig) else None
    return (item.obj, extra, item.origin.file, item.origin.doc, item.origin.line())


def snapshot(repo: load.Repository) -> dict[str, Any]:
    return {
        "problems": list(repo.problems),
        "warnings": list(repo.warnings),
        "blockers": list(repo.blockers),
        "settings": repo.settings,
        **{
            table: {name: _object(item) for name, item in getattr(repo, table).items()}
            for table in ("pools", "os_configs", "machine_configs")
        },
    }


def judged(verdicts: dict[str, verdict.Verdict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, v in verdicts.items():
        if isinstance(v, verdict.Blocked):
            out[name] = ("blocked", str(v.error), v.problems, v.own)
            continue
        image = v.image
        out[name] = (
            "ready", v.rendered.name, v.rendered.spec, v.rendered.sources, v.architecture,
            v.fingerprint, image and (_object(image.os_config), image.plan,
                                      str(image.push_repository), str(image.base_image)),
        )  # fmt: skip
    return out


@settings(max_examples=150, deadline=None)
@given(edits)
# a duplicate in another file brings MANY to the problem limit one document earlier
@example([("z.yaml", MANY), ("a.yaml", DOCS[0]), ("a.yaml", DOCS[1]), ("a.yaml", MANY)])
# the settings allow an extension; the settings move to a file that does not load
@example([("m/b.yaml", DOCS[12]), ("a.yaml", DOCS[17]), ("a.yaml", BROKEN), ("z.yaml", DOCS[17])])
def test_cached_loads_and_verdicts_equal_fresh_ones_after_any_edits(
    steps: list[tuple[str, str | bytes | load.Unreadable | None]],
) -> None:
    files: dict[str, str | bytes | load.Unreadable] = {}
    loads, verdicts = LoadCache(), verdict.VerdictCache()
    known = ["worker", "infra", "gone"]
    for path, new in steps:
        if new is None:
            files.pop(path, None)
        else:
            files[path] = new
        cached = loads.load(dict(files))
        fresh = load.load_repository(dict(files))
        assert snapshot(cached) == snapshot(fresh)
        assert judged(verdict.judge(cached, known, verdicts)) == judged(verdict.judge(fresh, known))
        # and again with nothing changed: everything is kept, nothing is judged anew
        hits = verdicts.hits
        again = loads.load(dict(files))
        assert loads.parsed == 0
        assert snapshot(again) == snapshot(fresh)
        assert judged(verdict.judge(again, known, verdicts)) == judged(verdict.judge(fresh, known))
        assert verdicts.hits - hits == len(again.pools)


def test_a_pass_parses_only_the_files_that_changed() -> None:
    files = {"pools.yaml": pool("worker", "worker") + "---\n" + mosc("worker"),
             "mc/a.yaml": mc("60-kargs", "worker", "{kernelArguments: [a=1]}"),
             "mc/b.yaml": mc("61-kargs", "worker", "{kernelArguments: [b=1]}")}  # fmt: skip
    loads, verdicts = LoadCache(), verdict.VerdictCache()
    first = loads.load(files)
    assert loads.parsed == 3
    before = verdict.judge(first, (), verdicts)["worker"]
    files["mc/b.yaml"] = mc("61-kargs", "worker", "{kernelArguments: [b=2]}")
    second = loads.load(files)
    assert loads.parsed == 1
    after = verdict.judge(second, (), verdicts)["worker"]
    assert isinstance(before, verdict.Ready)
    assert isinstance(after, verdict.Ready)
    assert after.rendered.spec["kernelArguments"] == ["a=1", "b=2"]
    assert after.fingerprint != before.fingerprint
    assert verdicts.hits == 0


def test_a_duplicate_of_another_files_object_counts_toward_the_problem_limit() -> None:
    # MANY has one problem short of the limit, then a second pool 'worker'
    repo = load.load_repository({"a.yaml": DOCS[0], "z.yaml": MANY})
    assert str(repo.problems[-2]).startswith("z.yaml:346: MachineConfigPool worker: "
                                             "metadata.name: 'worker' is defined twice")  # fmt: skip
    assert str(repo.problems[-1]) == (
        "z.yaml: more than 50 problems; the rest of the file (from document 51) was not "
        "checked; fix the problems above first"
    )
    assert "99-after" not in repo.machine_configs
    assert "99-after" in load.load_repository({"z.yaml": MANY}).machine_configs
