"""Pin files: the hand-written emitter writes exactly PyYAML's bytes, and what it writes
reads back as the same pin (issue 13: a pass renders every changed pool's pin)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import model, pins

HEX = "0123456789abcdef"
digests = st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
# names as pools and configs have them, and strings YAML would read as something else
words = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["true", "no", "null", "~", "1.5", "0x1f", "12:30", "1e3", ".inf",
                     "123", "-x", "a: b", "a #b", "", "x:", "é", "'q'", "=", "<<"]),
)  # fmt: skip
references = st.tuples(
    st.sampled_from(["127.0.0.1:5000", "quay.io", "registry.example.com"]),
    st.from_regex(r"[a-z0-9]+(/[a-z0-9]+){0,2}", fullmatch=True),
    st.one_of(st.from_regex(r":[a-z0-9._-]{1,20}", fullmatch=True), digests.map("@{}".format)),
).map("".join)


@st.composite
def pin_objects(draw: Any) -> pins.Pin:
    pool = draw(words.filter(bool))
    repo = draw(st.sampled_from(["127.0.0.1:5000/pools/x", "quay.io/org/fleet"]))
    digest = draw(digests)
    return pins.Pin(
        metadata=model.ObjectMeta(
            name=pool,
            labels=draw(st.dictionaries(words.filter(bool), words, max_size=2)),
            annotations=draw(st.dictionaries(words.filter(bool), words, max_size=2)),
        ),
        spec=pins.PinSpec(
            pool=pool,
            image=f"{repo}@{digest}",
            digest=digest,
            architecture=draw(st.sampled_from(["amd64", "arm64", "ppc64le"])),
            rendered_config=f"rendered-{pool}-{draw(st.text(HEX, min_size=32, max_size=32))}",
            inputs_digest=draw(digests),
            base_image=draw(references),
            source_commit=draw(st.text(HEX, min_size=40, max_size=40)),
            build=pins.BuildFacts(
                builder=draw(st.sampled_from(["native", "buildah", "job", "reused"])),
                base_image_digest=draw(digests),
            ),
            live_config_digest=draw(st.none() | digests),
        ),
    )


def _pyyaml(pin: pins.Pin) -> str:
    doc = pin.model_dump(by_alias=True, mode="json")
    if doc["spec"].get("liveConfigDigest") is None:
        del doc["spec"]["liveConfigDigest"]
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=300, deadline=None)
@given(pin_objects())
def test_a_pin_renders_as_pyyaml_would_and_reads_back(pin: pins.Pin) -> None:
    text = pins.render_pin(pin)
    assert text.split("\n", 2)[2] == _pyyaml(pin)
    assert pins.parse_pin(text) == pin


def test_the_usual_pin_takes_the_fast_path() -> None:
    pin = pins.Pin(
        metadata=model.ObjectMeta(name="worker"),
        spec=pins.PinSpec(
            pool="worker", image="127.0.0.1:5000/pools/worker@sha256:" + "a" * 64,
            digest="sha256:" + "a" * 64, architecture="amd64",
            rendered_config="rendered-worker-" + "0" * 32, inputs_digest="sha256:" + "1" * 64,
            base_image="quay.io/fedora/fedora-bootc:42", source_commit="2" * 40,
            build=pins.BuildFacts(builder="native", base_image_digest="sha256:" + "3" * 64),
        ),
    )  # fmt: skip
    doc = pin.model_dump(by_alias=True, mode="json")
    del doc["spec"]["liveConfigDigest"]
    assert pins._dump_simple(doc) == yaml.safe_dump(doc, sort_keys=False)
    assert "sourceCommit: '2222222222222222222222222222222222222222'\n" in pins.render_pin(pin)
