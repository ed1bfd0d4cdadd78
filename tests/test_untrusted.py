"""Opening a store never runs code it names and is no crash or memory surface (issues 9.9-9.11, 10.2, 10.6).

Crafted objects are written the way an attacker would: well-hashed objects
put straight into the store, pickles signed with someone else's key.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

import terra
from terra import config
from terra.cli import cli
from terra.errors import CorruptObject, PickleRefused, SerializationError, TerraError, UntrustedObject
from terra.fsck import fsck
from terra.objects import CHUNK_SIZE, Blob, Chunked, Tree, canonical_pack, digest, encode, split_payload
from terra.serialize import load_value, set_scratch_dir, store_value, summarize



class Exploit:
    """Unpickling calls ``os.system`` (would create the marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def foreign(tmp_path):
    """Writes done inside ``with foreign():`` are signed with someone else's key."""
    from contextlib import contextmanager

    @contextmanager
    def as_someone_else():
        with config.overriding(pickle_key=str(tmp_path / "colleague" / "pickle.key")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield

    return as_someone_else


# -- 9.10: class paths are data, not instructions --------------------------------------


def _crafted(marker) -> dict[str, object]:
    touch = f"touch {marker}"
    return {
        "enum": Tree("enum", (touch,), {"class": "os:system", "name": "X"}),
        "enum-popen": Tree("enum", (["sh", "-c", touch],), {"class": "subprocess:Popen", "name": "X"}),
        "dataclass": Tree("dataclass", (("args", touch),), {"class": "subprocess:Popen"}),
        "namedtuple": Tree("namedtuple", (touch,), {"class": "os:system"}),
        "defaultdict": Tree("defaultdict", (), {"factory": "subprocess:Popen"}),
        "defaultdict-fn": Tree("defaultdict", (), {"factory": "os:getcwd"}),
        "terra_read": Tree("dir", (), {"class": "os:system", "path_kind": "dir"}),
    }


@pytest.mark.parametrize("kind", list(_crafted("m")))
def test_crafted_class_path_is_refused_not_called(store, tmp_path, kind):
    marker = tmp_path / "marker"
    oid = store.put(_crafted(marker)[kind]).id
    with pytest.raises(UntrustedObject, match=oid.hex()) as e:
        load_value(store, oid)
    assert ("os:" in str(e.value) or "subprocess:Popen" in str(e.value)) and "refusing" in str(e.value)
    assert not marker.exists()


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_dataclass_fields_must_be_the_class_fields(store):
    assert load_value(store, store_value(store, Point(1, 2))) == Point(1, 2)
    oid = store.put(Tree("dataclass", (("__class__", 1),), {"class": f"{Point.__module__}:Point"})).id
    with pytest.raises(CorruptObject, match="not a field"):
        load_value(store, oid)


def test_defaultdict_factories_terra_can_build_round_trip(store):
    for factory in (list, int, collections.Counter):
        d = collections.defaultdict(factory, {"a": factory()})
        back = load_value(store, store_value(store, d))
        assert back == d and back.default_factory is factory


# -- 9.10: pickles written by someone else do not run -----------------------------------


def test_own_pickles_load_foreign_ones_are_refused(store, tmp_path, foreign):
    marker = tmp_path / "marker"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = store_value(store, collections.deque([1, 2]))  # deque: pickled
    assert load_value(store, mine) == collections.deque([1, 2])
    with foreign():
        theirs = store_value(store, Exploit(marker))
        signed_by_them = store_value(store, collections.deque([3]))
    with pytest.raises(UntrustedObject, match=theirs.hex()):
        load_value(store, theirs)
    with pytest.raises(UntrustedObject, match="--trust"):
        load_value(store, signed_by_them)
    assert not marker.exists()
    with config.overriding(allow_foreign_pickles=True):  # the opt-in
        assert load_value(store, signed_by_them) == collections.deque([3])


def test_store_copied_from_a_colleague(tmp_path, python, subprocess_env):
    """A store written in another process with another key: its pickles are foreign here."""
    marker = tmp_path / "marker"
    src = tmp_path / "theirs"
    code = f"""
import os, sys, warnings, terra
warnings.simplefilter("ignore")
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_untrusted import Exploit
terra.configure(storage_dir={str(src)!r}, quiet=True)
@terra.task
def evil():
    return {{"x": Exploit({str(marker)!r})}}
evil()
"""
    env = {**subprocess_env, "TERRA_PICKLE_KEY": str(tmp_path / "colleague.key")}
    subprocess.run([python, "-c", code], env=env, check=True)
    assert not marker.exists()
    import shutil

    dst = tmp_path / "mine"
    shutil.copytree(src, dst)
    runner = CliRunner()
    res = runner.invoke(cli, ["--store", str(dst), "out", "1"])
    assert res.exit_code == 0 and "Exploit" in res.stdout, res.output
    terra.configure(storage_dir=str(dst))
    art = terra.out(1)["x"]
    with pytest.raises(UntrustedObject):
        art.load()
    res = runner.invoke(cli, ["--store", str(dst), "cat", art.id])
    assert res.exit_code == 0 and "not loaded" in res.stdout
    res = runner.invoke(cli, ["--store", str(dst), "cat", art.id, "-o", str(tmp_path / "x.pkl")])
    assert res.exit_code == 1 and "--trust" in res.output
    assert not marker.exists()


_LOADS: list = []


class Counted:
    def __init__(self, log):
        self.log = log

    def __reduce__(self):
        return (_count_load, ())


def _count_load():
    _LOADS.append(1)
    return Counted(_LOADS)


def test_cat_never_unpickles_without_trust(store, tmp_path):
    """Even this user's own pickles: `terra cat` is for looking."""
    _LOADS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oid = store_value(store, Counted(_LOADS)).hex()
    res = CliRunner().invoke(cli, ["--store", store.root, "cat", oid])
    assert res.exit_code == 0 and "not loaded" in res.stdout and _LOADS == []
    res = CliRunner().invoke(cli, ["--store", store.root, "cat", oid, "-o", str(tmp_path / "v.pkl")])
    assert res.exit_code == 1 and "--trust" in res.output and _LOADS == []
    res = CliRunner().invoke(cli, ["--store", store.root, "cat", oid, "--trust"])
    assert res.exit_code == 0 and "not loaded" not in res.stdout and _LOADS == [1]
    assert terra.get_config().allow_pickle  # the command's narrowing did not leak into this process


def test_output_view_never_loads_a_pickle_claiming_a_primitive_type(store, tmp_path, foreign):
    import pickle

    from terra.runs import output_view

    marker = tmp_path / "marker"
    for signer in (foreign, None):
        ctx = signer() if signer else config.overriding()
        with ctx:  # even a pickle signed by this user is not run by a view
            oid = store.put(Blob("pickle", {"type": "int"}, pickle.dumps(Exploit(marker)))).id
        view = output_view(store, oid, None)
        assert isinstance(view, terra.Artifact) and not marker.exists()
    assert output_view(store, store_value(store, 7), None) == 7  # real primitives stay inline


def test_crafted_summary_and_meta_are_terra_errors(store):
    crafted = [
        Blob("datetime", {"type": "datetime.date"}, canonical_pack([0, 0, 0])),
        Blob("path", {"type": "pathlib.Nope"}, b"/x"),
        Blob("py", {"type": "int"}, b"\xc1"),
        Blob("user", {"codec": 5}, b""),
        Tree("enum", (), {"class": 3}),
        Tree("dict", (1, 2, 3)),
        Tree("namedtuple", (1,), {"class": "collections:OrderedDict"}),
        Tree("dataclass", (), {}),
    ]
    for obj in crafted:
        oid = store.put(obj).id
        with pytest.raises(TerraError, match=oid.hex()):
            load_value(store, oid)
        try:
            summarize(store, oid)
        except TerraError as e:  # a summary reads meta only; at worst a terra error naming the object
            assert oid.hex() in str(e)


# -- 9.9: scratch copies and chunked objects ---------------------------------------------


class Eager:
    """Reads its file at once on load."""

    def __init__(self, text):
        self.text = text

    def __terra_write__(self, path):
        with open(path, "w") as f:
            f.write(self.text)

    @classmethod
    def __terra_read__(cls, path):
        with open(path) as f:
            return cls(f.read())


class Lazy:
    """Keeps only the path and reads it when asked (like a memory map)."""

    def __init__(self, path=None, text=""):
        self.path, self.text = path, text

    def __terra_write__(self, path):
        with open(path, "w") as f:
            f.write(self.text)

    @classmethod
    def __terra_read__(cls, path):
        return cls(path)

    def read(self):
        with open(self.path) as f:
            return f.read()


def test_scratch_copies_are_removed_when_no_longer_needed(store, tmp_path):
    scratch = tmp_path / "scratch"
    set_scratch_dir(scratch)
    try:
        oid = store_value(store, Eager("x" * 1000))
        for _ in range(5):
            assert load_value(store, oid).text == "x" * 1000
        gc.collect()
        assert [p for p in scratch.iterdir() if p.name.startswith("terra-read-")] == []
        lazy = load_value(store, store_value(store, Lazy(text="later")))
        gc.collect()
        assert lazy.read() == "later"  # still there while the value lives
        del lazy
        gc.collect()
        assert [p for p in scratch.iterdir() if p.name.startswith("terra-read-")] == []
    finally:
        set_scratch_dir(None)


def _crafted_chunked(store, size: int, nchunks: int):
    payload = np.arange(CHUNK_SIZE + 10, dtype=np.uint8)
    pairs = split_payload("bytes", {"type": "bytes"}, payload)
    chunk_ids = [oid for oid, _ in pairs[:-1]]
    store.put_many(pairs[:-1])
    chunks = (chunk_ids[0],) * nchunks  # a full chunk, repeated: every slice gets written but the tail
    return store.put(Chunked("bytes", {"type": "bytes"}, size, tuple(chunks))).id


@pytest.mark.parametrize("size,nchunks", [(3 * CHUNK_SIZE, 2), (2 * CHUNK_SIZE + 5, 2), (CHUNK_SIZE, 2),
                                          (10, 0), (CHUNK_SIZE + 1, 1)])
def test_chunked_must_fit_its_chunk_count(store, size, nchunks):
    oid = _crafted_chunked(store, size, nchunks)
    with pytest.raises(CorruptObject, match=oid.hex()):
        load_value(store, oid)
    with pytest.raises(CorruptObject):
        store.read_payload(oid)
    rep = fsck(store)
    assert oid.hex() in rep.corrupt and not rep.ok


def test_chunked_claiming_more_than_its_chunks_hold_allocates_nothing(store, monkeypatch):
    """A chunk list claiming 4 GiB of 10-byte chunks is refused from the chunks' stored sizes,
    before a buffer of the claimed size is asked for."""
    pairs = split_payload("bytes", {"type": "bytes"}, np.arange(CHUNK_SIZE + 10, dtype=np.uint8))
    store.put_many(pairs[:-1])
    small = pairs[1][0]  # the 10-byte tail chunk
    oid = store.put(Chunked("bytes", {"type": "bytes"}, 1024 * CHUNK_SIZE, (small,) * 1024)).id
    asked = []
    real_empty = np.empty

    def empty(n, *a, **kw):
        asked.append(n)
        if isinstance(n, int) and n >= 1 << 30:
            raise MemoryError("the test refuses to allocate this")
        return real_empty(n, *a, **kw)

    monkeypatch.setattr(np, "empty", empty)
    with pytest.raises(CorruptObject, match=str(small)):
        store.read_payload(oid)
    with pytest.raises(CorruptObject, match=oid.hex()):
        load_value(store, oid)
    assert max([n for n in asked if isinstance(n, int)], default=0) < 1 << 30


def test_frame_column_pointing_at_a_large_buffer_allocates_nothing(store, monkeypatch):
    """An 8-row column whose data entry names a 16 MB buffer is refused from the buffer's
    header, before 16 MB are allocated for it."""
    pd = pytest.importorskip("pandas")
    from terra.objects import Tree

    big = store.get(store_value(store, pd.DataFrame({"f": np.arange(2_000_000.0)})))
    large = store.get(big.entries[2]).entries[1]  # the 16 MB float64 buffer
    small = store.get(store_value(store, pd.DataFrame({"f": np.arange(8.0)})))
    col = store.get(small.entries[2])
    crafted = store.put(Tree(col.type, (col.entries[0], large), col.meta)).id
    oid = store.put(Tree(small.type, small.entries[:2] + (crafted,), small.meta)).id
    asked = []
    real_empty = np.empty

    def empty(n, *a, **kw):
        asked.append(n)
        return real_empty(n, *a, **kw)

    monkeypatch.setattr(np, "empty", empty)
    with pytest.raises(CorruptObject, match="has 16000000 bytes, the array needs 64"):
        load_value(store, oid)
    assert max([n for n in asked if isinstance(n, int)], default=0) < 16_000_000


# -- 10.2: bombs and lengths ---------------------------------------------------------------


def _zstd_bomb(nbytes: int) -> bytes:
    """A zstd frame of ``nbytes`` zeros, declaring that size, made without holding them."""
    c = zstandard.ZstdCompressor(level=3, write_content_size=True).compressobj(size=nbytes)
    zeros = bytes(1 << 20)
    parts = [c.compress(zeros) for _ in range(nbytes >> 20)]
    return b"".join(parts) + c.flush()


def _frame_claiming(size: int, body: bytes = b"x" * 10) -> bytes:
    """A syntactically valid zstd frame whose header claims ``size`` bytes of content."""
    magic = (0xFD2FB528).to_bytes(4, "little")
    descriptor = bytes([(3 << 6) | (1 << 5)])  # 8-byte content size, single segment
    block = ((len(body) << 3) | 1).to_bytes(3, "little")  # last block, raw
    return magic + descriptor + size.to_bytes(8, "little") + block + body


_LIMITED = """
import json, resource, sys
import terra
from terra.objects import ObjectId
from terra.serialize import load_value
from terra.session import current_store
terra.configure(storage_dir={root!r})
current_store()
import terra.serialize.codecs
# The store's map is address space already reserved: allow {limit} bytes more than now.
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + {limit}, vm + {limit}))
out = {{}}
for hex_ in {ids!r}:
    try:
        load_value(current_store(), ObjectId.from_hex(hex_))
        out[hex_] = "loaded"
    except terra.TerraError as e:
        out[hex_] = type(e).__name__ + ": " + str(e)
    except BaseException as e:
        out[hex_] = "RAW " + type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""


def test_bombs_and_huge_claims_are_refused_in_bounded_memory(store, python, subprocess_env):
    bomb = _zstd_bomb(768 << 20)  # ~24 KiB that would expand to 768 MiB
    ids = {}
    for name, raw in [("bomb", b"\x01" + bomb), ("tebibyte", b"\x01" + _frame_claiming(1 << 40)),
                      ("short", b"\x01" + _frame_claiming(100))]:
        key = digest((name.encode(),))
        store.backend.put_many([(key, raw)], durable=True)
        ids[name] = key.hex()
    big = _crafted_chunked(store, 256 * CHUNK_SIZE, 256)  # consistent, but 1 GiB: beyond the limit below
    ids["chunked"] = big.hex()
    res = subprocess.run([python, "-c", _LIMITED.format(limit=600 << 20, root=store.root, ids=list(ids.values()))],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    for name in ("bomb", "tebibyte", "short"):
        assert out[ids[name]].startswith("CorruptObject") and ids[name] in out[ids[name]], (name, out[ids[name]])
    assert "claims" in out[ids["tebibyte"]]
    assert out[ids["chunked"]].startswith("SerializationError") and "too large" in out[ids["chunked"]]


def test_decompression_checks_declared_size_both_ways():
    from terra.store import _framing

    key = bytes(16)
    good = zstandard.ZstdCompressor(write_content_size=True).compress(b"a" * 1000)
    assert bytes(_framing.decompress_into(key, good)) == b"a" * 1000
    too_long = _frame_claiming(5, b"x" * 10)  # more data than declared
    with pytest.raises(CorruptObject):
        _framing.decompress_into(key, too_long)


# -- 10.6: sets inside pickles -------------------------------------------------------------

_SEED_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import terra
from test_untrusted import Tagged
print(terra.hash(Tagged()))
"""


class Tagged:
    """Pickled (a plain class) and holding sets of strings: hash-seed dependent iteration order."""

    def __init__(self):
        self.tags = {f"tag-{i}" for i in range(20)}
        self.frozen = frozenset({("a", frozenset({"p", "q", "r"})), "b", "c", b"d"})
        self.nested = [{"x", "y", "z"}, {"x", "y", "z"}]

    def __eq__(self, other):
        return type(other) is Tagged and vars(self) == vars(other)


def test_pickled_sets_hash_the_same_in_every_process(python, store, subprocess_env):
    ids = set()
    for seed in ("0", "1", "2", "3", "4"):
        env = {**subprocess_env, "PYTHONHASHSEED": seed}
        res = subprocess.run([python, "-c", _SEED_SCRIPT.format(tests=os.path.dirname(__file__))],
                             env=env, capture_output=True, text=True, check=True)
        ids.add(res.stdout.strip())
    assert len(ids) == 1, ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oid = store_value(store, Tagged())
    assert oid.hex() in ids
    back = load_value(store, oid)
    assert back == Tagged() and back.nested[0] is not back.nested[1]


def test_canonical_pickle_keeps_shared_and_recursive_sets():
    import pickle

    from terra.serialize.codecs.pickle import canonical_dumps

    s = {"a", "b"}
    value = [s, s, frozenset({"z", "y"})]
    back = pickle.loads(canonical_dumps(value))
    assert back == value and back[0] is back[1]


# -- 9.11: secrets -------------------------------------------------------------------------


def test_secrets_stay_out_of_reprs_and_child_environments(python, monkeypatch):
    monkeypatch.delenv("TERRA_CONFIG_OVERRIDES", raising=False)
    config.reset()
    try:
        cfg = terra.configure(slack_web_client_id="xoxb-very-secret", slack_channel="#runs")
        assert "xoxb-very-secret" not in repr(cfg) and "xoxb-very-secret" not in str(terra.get_config())
        assert "slack_web_client_id=<set>" in repr(cfg) and "#runs" in repr(cfg)
        assert "xoxb-very-secret" not in json.dumps(dict(os.environ))
        child = subprocess.run(
            [python, "-c", "import terra; print(terra.get_config().slack_web_client_id, terra.get_config().slack_channel)"],
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
            capture_output=True, text=True, check=True)
        assert child.stdout.split() == ["None", "#runs"]  # other settings still reach children
    finally:
        config.reset()


# -- the signing key -----------------------------------------------------------------------


def test_key_is_made_once_outside_the_store_with_mode_0600(store, tmp_path):
    key = tmp_path / "cfg" / "terra" / "pickle.key"
    with config.overriding(pickle_key=str(key)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oid = store_value(store, collections.deque([1]))
        assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
        first = key.read_bytes()
        assert load_value(store, oid) == collections.deque([1])
        store_value(store, collections.deque([2]))
        assert key.read_bytes() == first
        os.chmod(key, 0o644)
        from terra import trust

        trust._keys.clear()
        with pytest.raises(terra.TerraError, match="0600"):
            load_value(store, oid)
        os.chmod(key, 0o600)


def test_default_key_lives_in_the_user_config_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TERRA_PICKLE_KEY")
    config.reset()
    try:
        assert terra.get_config().pickle_key_path == str(tmp_path / "xdg" / "terra" / "pickle.key")
    finally:
        monkeypatch.undo()
        config.reset()


def test_same_value_same_id_whoever_pickles_it(store, foreign):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = store_value(store, collections.deque(["same"]))
    with foreign():
        theirs = store_value(store, collections.deque(["same"]))
    assert mine == theirs  # the signature is beside the object, not in its id


def test_allow_pickle_off_still_refuses(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oid = store_value(store, collections.deque([1]))
    with config.overriding(allow_pickle=False, allow_foreign_pickles=True):
        with pytest.raises(PickleRefused):
            load_value(store, oid)


def test_unpickling_errors_are_terra_errors(store):
    import pickle

    oid = store.put(Blob("pickle", {"type": "x"}, pickle.dumps(1)[:-3])).id
    with pytest.raises(SerializationError, match="cannot be unpickled"):
        load_value(store, oid)


def test_foreign_class_path_does_not_import_a_new_module(store, tmp_path, foreign, monkeypatch):
    """Importing runs a module's code: a foreign object may name only modules already imported."""
    marker = tmp_path / "imported"
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "terra_side_effect_mod.py").write_text(
        f"import enum, pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "class Colour(enum.Enum):\n    RED = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    crafted = Tree("enum", (1,), {"class": "terra_side_effect_mod:Colour", "name": "RED"})
    with foreign():
        oid = store.put(crafted).id
    with pytest.raises(UntrustedObject, match="not imported"):
        load_value(store, oid)
    assert not marker.exists() and "terra_side_effect_mod" not in sys.modules
    try:
        with config.overriding(allow_foreign_pickles=True):
            assert load_value(store, oid).name == "RED" and marker.exists()
        marker.unlink()
        assert load_value(store, oid).name == "RED"  # now imported by the program: no opt-in needed
    finally:
        sys.modules.pop("terra_side_effect_mod", None)


def test_own_objects_import_their_modules(store, tmp_path, monkeypatch):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "terra_own_mod.py").write_text("import enum\nclass Size(enum.Enum):\n    BIG = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    import terra_own_mod

    oid = store_value(store, terra_own_mod.Size.BIG)
    sys.modules.pop("terra_own_mod")
    try:
        assert load_value(store, oid).name == "BIG"  # signed by this user: imported again
    finally:
        sys.modules.pop("terra_own_mod", None)


def test_figure_png_claiming_huge_size_is_refused_before_decoding(store):
    png = bytearray(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (1 << 20).to_bytes(4, "big") * 2 + b"\x08\x06\x00\x00\x00")
    png_id = store.put(Blob("png", {"type": "image/png"}, bytes(png))).id
    oid = store.put(Tree("figure", (None, png_id), {"type": "matplotlib.figure.Figure", "size": [1.0, 1.0],
                                                     "dpi": 100.0})).id
    with pytest.raises(CorruptObject, match="pixels"):
        load_value(store, oid)


_DEQUES = []


@terra.task
def _deque_task(n):
    _DEQUES.append(n)
    return collections.deque(range(n))  # pickled


def test_pickles_pulled_from_a_remote_are_foreign_unless_yours(tmp_path, foreign):
    pytest.importorskip("obstore")
    from terra.remote import add_remote, pull, push

    url = f"file://{tmp_path / 'remote'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        terra.configure(storage_dir=str(tmp_path / "colleague"), quiet=True)
        with foreign():
            _deque_task(3)
            add_remote("team", url)
            push(all=True)
        terra.configure(storage_dir=str(tmp_path / "mine"))
        _deque_task(4)  # one of mine, pushed too
        add_remote("team", url)
        push(all=True)
        terra.configure(storage_dir=str(tmp_path / "clone"))
        add_remote("team", url)
        pull(all=True)
    loaded, refused = [], []
    for art in (terra.out(1), terra.out(2)):
        try:
            loaded.append(art.load())
        except UntrustedObject:
            refused.append(art)
    assert loaded == [collections.deque(range(4))] and len(refused) == 1
    with config.overriding(allow_foreign_pickles=True):
        assert refused[0].load() == collections.deque(range(3))
    terra.configure(quiet=False)
