"""The deterministic config layer: same entries, same bytes; read back with `tarfile`
and `gzip` exactly as written."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.image import layer
from reconciler.core.image.layer import Entry, LayerError, build_layer

ENTRIES = [
    Entry("/etc/chrony.conf", "file", 0o644, data=b"server ntp1\n"),
    Entry("/etc/app/secret.conf", "file", 0o600, uid=1001, gid=1002, data=b"token\n"),
    Entry("/etc/app", "dir", 0o750, gid=1002),
    Entry("/etc/systemd/system/rpcbind.socket", "symlink", 0o777, target="/dev/null"),
    Entry("/etc/app/alias.conf", "symlink", target="secret.conf"),
    Entry("/etc/app/again.conf", "hardlink", target="/etc/app/secret.conf"),
    Entry("/usr/lib/bootc/kargs.d/50-worker.toml", "file", data=b'kargs = ["quiet"]\n'),
    Entry("/usr/share/ünïcode/" + "long-name-" * 12, "file", data=b"pax\n"),
]


def read_back(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_same_entries_give_the_same_bytes() -> None:
    first, second = build_layer(ENTRIES), build_layer(list(ENTRIES))
    assert first.blob == second.blob
    assert first.tar == second.tar


def test_input_order_does_not_matter() -> None:
    shuffled = ENTRIES[:]
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert build_layer(shuffled).digest == build_layer(ENTRIES).digest


def test_digests_and_size_describe_the_bytes() -> None:
    built = build_layer(ENTRIES)
    assert built.diff_id == "sha256:" + hashlib.sha256(built.tar).hexdigest()
    assert built.digest == "sha256:" + hashlib.sha256(built.blob).hexdigest()
    assert built.size == len(built.blob)
    assert gzip.decompress(built.blob) == built.tar


def test_gzip_header_is_fixed() -> None:
    blob = build_layer(ENTRIES).blob
    # magic, deflate, no flags (so no file name), mtime 0, XFL 0, OS unknown
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def test_a_content_change_changes_the_digest() -> None:
    changed = [*ENTRIES[1:], Entry("/etc/chrony.conf", "file", 0o644, data=b"server ntp2\n")]
    assert build_layer(changed).digest != build_layer(ENTRIES).digest
    new_mode = [*ENTRIES[1:], Entry("/etc/chrony.conf", "file", 0o640, data=b"server ntp1\n")]
    assert build_layer(new_mode).diff_id != build_layer(ENTRIES).diff_id


def test_tarfile_reads_back_modes_owners_links_and_mtime_zero() -> None:
    members = read_back(build_layer(ENTRIES).tar)
    secret = members["etc/app/secret.conf"]
    assert (secret.mode, secret.uid, secret.gid, secret.uname, secret.gname) == (
        0o600,
        1001,
        1002,
        "",
        "",
    )
    assert members["etc/app"].isdir()
    assert (members["etc/app"].mode, members["etc/app"].gid) == (0o750, 1002)
    assert members["etc/systemd/system/rpcbind.socket"].issym()
    assert members["etc/systemd/system/rpcbind.socket"].linkname == "/dev/null"
    assert members["etc/app/alias.conf"].linkname == "secret.conf"
    assert members["etc/app/again.conf"].islnk()
    assert members["etc/app/again.conf"].linkname == "etc/app/secret.conf"
    # one inode: the link header repeats the target's metadata (buildah applies it)
    again = members["etc/app/again.conf"]
    assert (again.mode, again.uid, again.gid) == (0o600, 1001, 1002)
    assert all(m.mtime == 0 for m in members.values())
    assert all(not {"atime", "ctime", "mtime"} & set(m.pax_headers) for m in members.values())


def test_parents_are_explicit_and_sorted_before_children() -> None:
    tar = build_layer(ENTRIES).tar
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        names = tf.getnames()
    for parent in ("etc", "etc/systemd", "etc/systemd/system", "usr", "usr/lib", "usr/lib/bootc"):
        assert parent in names
        info = read_back(tar)[parent]
        assert (info.mode, info.uid, info.gid) == (0o755, 0, 0)
    regular = [n for n in names if n != "etc/app/again.conf"]
    assert regular == sorted(regular)
    assert names[-1] == "etc/app/again.conf"  # hard links after their targets
    for i, name in enumerate(names):
        for parent in layer.parent_dirs("/" + name):
            assert names.index(parent.lstrip("/")) < i


def test_long_and_unicode_names_survive() -> None:
    name = "usr/share/ünïcode/" + "long-name-" * 12
    with tarfile.open(fileobj=io.BytesIO(build_layer(ENTRIES).tar)) as tf:
        member = tf.getmember(name)
        extracted = tf.extractfile(member)
        assert extracted is not None
        assert extracted.read() == b"pax\n"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry("/etc/a", "file", data=b"1"), Entry("/etc/a", "file", data=b"2")], "given twice"),
        ([Entry("/etc/a", "file"), Entry("/etc/a/b", "file")], "/etc/a is a file"),
        ([Entry("/etc/l", "hardlink", target="/etc/none")], "not a file in this layer"),
        ([Entry("etc/relative", "file")], "not an absolute path"),
    ],
)
def test_inconsistent_entries_are_refused(entries: list[Entry], message: str) -> None:
    with pytest.raises(LayerError, match=message):
        build_layer(entries)


def test_identical_duplicates_are_merged() -> None:
    twice = [ENTRIES[0], ENTRIES[0]]
    assert build_layer(twice).tar == build_layer(ENTRIES[:1]).tar


_names = st.lists(
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,11}", fullmatch=True), min_size=1, max_size=3
).map(lambda parts: "/etc/" + "/".join(parts))


@st.composite
def _entry_sets(draw: st.DrawFn) -> list[Entry]:
    paths = draw(st.sets(_names, min_size=1, max_size=15))
    # a path that is another's parent must be a directory
    entries = []
    for path in sorted(paths):
        if any(other.startswith(path + "/") for other in paths):
            entries.append(Entry(path, "dir", draw(st.sampled_from([0o700, 0o755]))))
        else:
            entries.append(
                Entry(
                    path,
                    "file",
                    draw(st.sampled_from([0o600, 0o644, 0o755])),
                    uid=draw(st.integers(0, 70000)),
                    data=draw(st.binary(max_size=64)),
                )
            )
    return entries


@settings(max_examples=60, deadline=None)
@given(_entry_sets(), st.randoms(use_true_random=False))
def test_property_digest_ignores_order_and_tar_round_trips(
    entries: list[Entry], rnd: random.Random
) -> None:
    built = build_layer(entries)
    shuffled = entries[:]
    rnd.shuffle(shuffled)
    assert build_layer(shuffled).digest == built.digest
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(built.blob))) as tf:
        for e in entries:
            info = tf.getmember(e.path.lstrip("/"))
            assert (info.mode, info.uid, info.mtime) == (e.mode, e.uid, 0)
            if e.kind == "file":
                extracted = tf.extractfile(info)
                assert extracted is not None
                assert extracted.read() == e.data
