"""Artifact store: every serializer round-trips, content addressing, atomic writes, verification, URIs."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_nb import ArtifactCorruptedError, ArtifactNotFoundError, ArtifactStore, UnsupportedArtifactError
from mlops_nb.store.artifacts import Serializer, serializers


def _frame(n=50):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "cat": pd.Categorical(rng.choice(["a", "b"], n)),
            "ts": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "s": [f"row{i}" for i in range(n)],
        }
    )


def _equal(a, b):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    elif isinstance(a, float) and a != a:
        assert b != b and type(b) is float
    else:
        assert a == b
        assert type(a) is type(b)


class _Point:  # a class defined in a test module (as in a notebook)
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, _Point) and other.x == self.x


@pytest.mark.parametrize(
    ("obj", "kind", "summary"),
    [
        (_frame(), "parquet", "DataFrame 50x5"),
        (_frame().set_index("s"), "parquet", "DataFrame 50x4"),
        (pd.DataFrame({0: [1, 2], 1: [3.0, 4.0]}), "parquet", "DataFrame 2x2"),
        (pd.Series([1.5, 2.5], name="price"), "series", "Series 2"),
        (pd.Series([1, 2]), "series", "Series 2"),
        (np.arange(12, dtype="float32").reshape(3, 4), "npy", "ndarray 3x4"),
        (np.array(["a", "bc"]), "npy", "ndarray 2"),
        ({"accuracy": 0.9, "labels": ["a", "b"], "n": 3, "ok": True, "none": None}, "json", "dict len 5"),
        ([1, 2.5, "x"], "json", "list len 3"),
        ("hello", "json", "'hello'"),
        (42, "json", "42"),
        (b"\x00\x01raw", "bytes", "bytes 5"),
        ((1, 2), "pickle", "tuple len 2"),
        ({1: "int keys"}, "pickle", "dict len 1"),
        (float("nan"), "pickle", "float"),
        (np.array([{"a": 1}], dtype=object), "pickle", "ndarray 1"),
        (pd.DataFrame({"mixed": [1, "x"]}), "pickle", "DataFrame 2x1"),
        (_Point(3), "pickle", "_Point"),
        (np.float64(1.5), "pickle", "float64"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_round_trip(artifacts, obj, kind, summary):
    ref = artifacts.put(obj, name="thing")
    assert ref.kind == kind
    assert ref.summary == summary
    assert ref.name == "thing"
    assert len(ref.hash) == 64 and ref.size > 0
    assert Path(ref.uri).name == f"{ref.hash}.{kind}"
    _equal(obj, artifacts.get(ref))
    _equal(obj, artifacts.get(ref.hash))
    _equal(obj, artifacts.get(ref.hash[:8]))


def test_model_round_trip(artifacts):
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    ref = artifacts.put(model, name="model")
    assert ref.kind == "pickle" and ref.summary == "LogisticRegression"
    np.testing.assert_array_equal(artifacts.get(ref).predict(X), model.predict(X))


def test_notebook_round_trip(artifacts):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# t")])
    ref = artifacts.put(nb)
    assert ref.kind == "ipynb" and ref.summary == "notebook 2 cells"
    back = artifacts.get(ref)
    assert [c.source for c in back.cells] == ["x = 1", "# t"]


def test_put_path_file_and_folder(artifacts, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("a,b\n1,2\n")
    (data / "sub" / "b.txt").write_bytes(b"bee")
    file_ref = artifacts.put_path(data / "a.csv")
    assert file_ref.kind == "bytes" and file_ref.name == "a.csv"
    assert file_ref.hash == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert artifacts.get(file_ref) == b"a,b\n1,2\n"

    dir_ref = artifacts.put_path(data)
    assert dir_ref.kind == "dir" and dir_ref.name == "data"
    copy = artifacts.get(dir_ref)
    assert (copy / "a.csv").read_text() == "a,b\n1,2\n" and (copy / "sub" / "b.txt").read_bytes() == b"bee"
    dest = artifacts.get_path(dir_ref, tmp_path / "restored")
    assert (dest / "sub" / "b.txt").read_bytes() == b"bee"
    # A folder's hash depends on content only, not on times.
    (data / "a.csv").touch()
    assert artifacts.put_path(data).hash == dir_ref.hash
    with pytest.raises(ArtifactNotFoundError, match="no such file or folder"):
        artifacts.put_path(tmp_path / "missing.csv")


def test_equal_frames_give_equal_hashes(artifacts):
    a = _frame()
    b = pd.DataFrame({c: a[c].copy() for c in a.columns})  # built differently, same content
    assert artifacts.put(a).hash == artifacts.put(b).hash
    assert artifacts.put(a).hash != artifacts.put(a.assign(x=a.x + 1)).hash


def test_identical_content_stored_once(artifacts):
    ref1 = artifacts.put({"a": 1}, name="first")
    ref2 = artifacts.put({"a": 1}, name="second")
    assert ref1 == ref2 and ref1.name != ref2.name
    files = [p for p in Path(artifacts.root).rglob("*") if p.is_file()]
    assert len(files) == 1 and not any(p.name.startswith(".tmp-") for p in files)


def test_concurrent_puts_of_same_object(artifacts):
    frame = _frame(2000)
    refs = []
    threads = [threading.Thread(target=lambda: refs.append(artifacts.put(frame))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.hash for r in refs}) == 1
    pd.testing.assert_frame_equal(artifacts.get(refs[0]), frame)


def test_corrupted_artifact_is_never_deserialized(artifacts):
    ref = artifacts.put(_Point(1))
    path = Path(ref.uri)
    path.write_bytes(path.read_bytes()[:-3] + b"\x00\x00\x00")
    with pytest.raises(ArtifactCorruptedError) as info:
        artifacts.get(ref)
    message = str(info.value)
    assert str(path) in message and "is corrupted" in message and "re-run the step" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("0" * 64, "no artifact 0000000000000000000000000000000000000000000000000000000000000000 in"),
        ("abc", "'abc' is not an artifact hash; give the hash or at least 6"),
        ("not-a-hash!", "is not an artifact hash"),
    ],
)
def test_unknown_hash(artifacts, key, message):
    with pytest.raises(ArtifactNotFoundError, match=message.replace("(", r"\(")):
        artifacts.get(key)


def test_deleted_artifact_file(artifacts):
    ref = artifacts.put([1, 2])
    Path(ref.uri).unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"is missing from .*; re-run the step that made it"):
        artifacts.get(ref)


def test_unsupported_type(artifacts):
    lock = threading.Lock()
    with pytest.raises(UnsupportedArtifactError) as info:
        artifacts.put(lock, name="lock")
    message = str(info.value)
    assert message.startswith("cannot store 'lock' of type _thread.lock as an artifact (pickle: TypeError:")
    assert "register a serializer" in message and "\n" not in message
    assert not [p for p in Path(artifacts.root).rglob("*") if p.is_file()]


def test_registered_serializer_wins_and_reset(artifacts):
    class Upper(Serializer):
        kind = "upper"

        def matches(self, obj):
            return isinstance(obj, str) and obj.isupper()

        def dumps(self, obj):
            return obj.lower().encode()

        def loads(self, data):
            return data.decode().upper()

    serializers.register(Upper())
    try:
        ref = artifacts.put("SHOUT")
        assert ref.kind == "upper" and Path(ref.uri).read_bytes() == b"shout"
        assert artifacts.get(ref) == "SHOUT"
        assert artifacts.put("quiet").kind == "json"
    finally:
        serializers.reset()
    assert artifacts.put("SHOUT").kind == "json"
    with pytest.raises(ArtifactNotFoundError, match="no serializer for artifact kind 'upper'"):
        artifacts.get(ref)


@pytest.mark.parametrize("uri", ["memory://mlops-test-root", "file://{tmp}/second-root"])
def test_fsspec_roots(uri, tmp_path):
    store = ArtifactStore(uri.format(tmp=tmp_path))
    frame = _frame()
    ref = store.put(frame, name="frame")
    assert store.exists(ref) and store.exists(ref.hash[:10])
    pd.testing.assert_frame_equal(store.get(ref.hash), frame)
    assert store.put(frame).hash == ref.hash
    if uri.startswith("file://"):
        assert (tmp_path / "second-root" / ref.hash[:2] / f"{ref.hash}.parquet").is_file()
    else:
        assert ref.uri == f"memory:///mlops-test-root/{ref.hash[:2]}/{ref.hash}.parquet"
        import fsspec

        fs = fsspec.filesystem("memory")
        fs.pipe_file(ref.uri, b"tampered")
        with pytest.raises(ArtifactCorruptedError):
            store.get(ref)


def test_stale_temp_files_are_removed(artifacts):
    import os
    import time

    ref = artifacts.put({"a": 1})
    folder = Path(ref.uri).parent
    old, new = folder / ".tmp-old", folder / ".tmp-new"
    old.write_bytes(b"partial")
    new.write_bytes(b"being written")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert artifacts.remove_stale_temp() == 1
    assert not old.exists() and new.exists() and artifacts.get(ref) == {"a": 1}
