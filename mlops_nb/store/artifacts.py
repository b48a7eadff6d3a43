"""The artifact store: immutable, content-addressed, typed.

An artifact is the serialized bytes of a Python object (a DataFrame as Parquet, an array as ``.npy``, a model
as a pickle, ...), stored once under the sha256 of those bytes at ``<root>/<hash[:2]>/<hash>.<kind>``. Writes go
to a temporary name in the same folder, are fsynced and renamed, so a reader never sees half an artifact. Every
read verifies the hash before deserializing: a pickle is never loaded unverified.

The root is a local folder or any fsspec URI (``memory://``, ``file://``, ``s3://`` ...).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.files import fsync_dir, full_disk_as
from ..core.hashing import sha256_file
from ..core.records import ArtifactRef
from ..exceptions import (
    ArtifactCorruptedError,
    ArtifactError,
    ArtifactNotFoundError,
    UnsupportedArtifactError,
)

HASH_LEN = 64
MIN_PREFIX = 6


# Serializers ---------------------------------------------------------------------------------------------------
class Serializer:
    """How one family of objects becomes bytes and back. Subclass it to teach the store a new type.

    Attributes:
        kind: a short name, also the file extension; recorded in every :class:`ArtifactRef` it writes.
    """

    kind: str = ""

    def matches(self, obj: Any) -> bool:
        """Whether this serializer handles ``obj``. Checked in registry order; keep it cheap."""
        raise NotImplementedError  # pragma: no cover - abstract

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``; equal objects must give equal bytes. Raise to let the next serializer try."""
        raise NotImplementedError  # pragma: no cover - abstract

    def loads(self, data: bytes) -> Any:
        """Deserialize bytes written by :meth:`dumps` (already verified against their hash)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def describe(self, obj: Any) -> str:
        """A short human description of ``obj`` (type and shape)."""
        shape = getattr(obj, "shape", None)
        name = type(obj).__name__
        if isinstance(shape, tuple) and shape:
            return f"{name} {'x'.join(str(n) for n in shape)}"
        try:
            return f"{name} len {len(obj)}"
        except TypeError:
            return name


def _module_of(obj: Any) -> str:
    return type(obj).__module__ or ""


class ParquetSerializer(Serializer):
    """pandas DataFrames as Parquet (pyarrow, zstd): deterministic bytes for equal frames."""

    kind = "parquet"

    def matches(self, obj):
        if not _module_of(obj).startswith("pandas"):
            return False
        import pandas as pd

        return isinstance(obj, pd.DataFrame)

    def _write(self, frame, extra: dict | None = None) -> bytes:
        import warnings

        import pyarrow as pa
        import pyarrow.parquet as pq

        # pyarrow reads tz-aware columns through Series.values, which pandas 3 warns about (the data is exact);
        # warning filters are process-wide, hence the lock while this one is in place
        with _warnings_lock, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops timezone")
            table = pa.Table.from_pandas(frame)
        if extra:
            meta = dict(table.schema.metadata or {})
            meta[b"mlops_nb"] = json.dumps(extra, sort_keys=True).encode()
            table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()

    def dumps(self, obj):
        return self._write(obj)

    def loads(self, data):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pandas()


class SeriesSerializer(ParquetSerializer):
    """pandas Series as one-column Parquet, keeping the Series' name."""

    kind = "series"
    _COLUMN = "__series__"

    def matches(self, obj):
        if not _module_of(obj).startswith("pandas"):
            return False
        import pandas as pd

        return isinstance(obj, pd.Series)

    def dumps(self, obj):
        json.dumps(obj.name)  # a name JSON cannot hold falls through to pickle
        return self._write(obj.to_frame(self._COLUMN), {"series_name": obj.name})

    def loads(self, data):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        extra = json.loads(table.schema.metadata[b"mlops_nb"])
        series = table.to_pandas()[self._COLUMN]
        series.name = extra["series_name"]
        return series


class NumpySerializer(Serializer):
    """numpy arrays (not of object dtype) as ``.npy``."""

    kind = "npy"

    def matches(self, obj):
        if _module_of(obj) != "numpy":
            return False
        import numpy as np

        return isinstance(obj, np.ndarray) and obj.dtype != object

    def dumps(self, obj):
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return buf.getvalue()

    def loads(self, data):
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)


def _is_plain_json(obj: Any) -> bool:
    """True when canonical JSON round-trips ``obj`` exactly (same types, no NaN, no tuples)."""
    kind = type(obj)
    if obj is None or kind in (str, bool, int):
        return True
    if kind is float:
        return obj == obj and obj not in (float("inf"), float("-inf"))
    if kind is list:
        return all(_is_plain_json(v) for v in obj)
    if kind is dict:
        return all(type(k) is str and _is_plain_json(v) for k, v in obj.items())
    return False


class JsonSerializer(Serializer):
    """Plain JSON values (dict with str keys, list, str, int, float, bool, None) as canonical JSON."""

    kind = "json"

    def matches(self, obj):
        return _is_plain_json(obj)

    def dumps(self, obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def loads(self, data):
        return json.loads(data)

    def describe(self, obj):
        if isinstance(obj, (dict, list)):
            return f"{type(obj).__name__} len {len(obj)}"
        text = repr(obj)
        return text if len(text) <= 40 else text[:37] + "..."


class BytesSerializer(Serializer):
    """``bytes`` as they are; also the kind of files stored with :meth:`ArtifactStore.put_path`."""

    kind = "bytes"

    def matches(self, obj):
        return isinstance(obj, (bytes, bytearray, memoryview))

    def dumps(self, obj):
        return bytes(obj)

    def loads(self, data):
        return data

    def describe(self, obj):
        return f"bytes {len(obj)}"


class NotebookSerializer(Serializer):
    """Jupyter notebooks (``nbformat.NotebookNode`` with cells) as ``.ipynb``."""

    kind = "ipynb"

    def matches(self, obj):
        return _module_of(obj).startswith("nbformat") and "cells" in obj and "nbformat" in obj

    def dumps(self, obj):
        import nbformat

        if obj.get("nbformat") == 4:  # what nbformat.writes writes, without validating it first (~ms a notebook)
            from nbformat.v4.nbjson import writes

            return writes(obj).encode()
        return nbformat.writes(obj).encode()

    def loads(self, data):
        import nbformat

        return nbformat.reads(data.decode(), as_version=4)

    def describe(self, obj):
        return f"notebook {len(obj.cells)} cells"


class DirSerializer(Serializer):
    """Folders as a deterministic tar (sorted entries, zeroed times and owners); see ``put_path``.

    ``get`` extracts the folder into a new temporary folder and returns its path.
    """

    kind = "dir"

    def matches(self, obj):
        return False  # only put_path stores folders

    def dumps(self, obj: Path) -> bytes:
        buf = io.BytesIO()
        import tarfile  # ~20 ms to import; folders are rare artifacts

        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(p for p in Path(obj).rglob("*")):
                info = tar.gettarinfo(str(path), arcname=path.relative_to(obj).as_posix())
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                elif info.isdir():
                    tar.addfile(info)
        return buf.getvalue()

    def loads(self, data):
        dest = Path(tempfile.mkdtemp(prefix="mlops_nb-dir-"))
        self.extract(data, dest)
        return dest

    @staticmethod
    def extract(data: bytes, dest: Path) -> None:
        """Unpack the tar into ``dest`` (refusing links and paths outside it)."""
        import tarfile  # ~20 ms to import; folders are rare artifacts

        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")


class PickleSerializer(Serializer):
    """Any other picklable object (scikit-learn estimators, functions, classes defined in a notebook) with
    cloudpickle. Loaded only after the hash check."""

    kind = "pickle"

    def matches(self, obj):
        return True

    def dumps(self, obj):
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)

    def loads(self, data):
        import pickle

        return pickle.loads(data)


def _builtin_serializers() -> list[Serializer]:
    return [
        NotebookSerializer(),
        ParquetSerializer(),
        SeriesSerializer(),
        NumpySerializer(),
        BytesSerializer(),
        JsonSerializer(),
        DirSerializer(),
        PickleSerializer(),
    ]


_warnings_lock = threading.Lock()


class SerializerRegistry:
    """The serializers the store tries, in order: user-registered ones first, then the built-ins.

    Serializers published by other packages under the entry point group ``mlops_nb.serializers`` are
    registered on first use.
    """

    ENTRY_POINT_GROUP = "mlops_nb.serializers"

    def __init__(self):
        self._user: list[Serializer] | None = None
        self._builtin = _builtin_serializers()

    def load_plugins(self) -> None:
        """Register the entry point serializers now (a kernel template does it once for the kernels it forks)."""
        self._ensure()

    def _ensure(self) -> list[Serializer]:
        if self._user is None:
            self._user = []
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.ENTRY_POINT_GROUP):
                self._user.append(ep.load()())
        return self._user

    def register(self, serializer: Serializer) -> None:
        """Add a serializer tried before the built-ins (and before those registered earlier).

        Example::

            class PolarsSerializer(Serializer):
                kind = "polars"
                def matches(self, obj): return type(obj).__module__.startswith("polars")
                ...
            serializers.register(PolarsSerializer())
        """
        if not serializer.kind or not serializer.kind.isidentifier():
            raise ValueError(f"serializer kind {serializer.kind!r} must be a non-empty identifier")
        user = self._ensure()
        user[:] = [s for s in user if s.kind != serializer.kind]
        user.insert(0, serializer)

    def reset(self) -> None:
        """Forget registered serializers (entry points load again on next use)."""
        self._user = None

    def candidates(self, obj: Any) -> Iterator[Serializer]:
        """The serializers that match ``obj``, best first."""
        for serializer in (*self._ensure(), *self._builtin):
            if serializer.matches(obj):
                yield serializer

    def by_kind(self, kind: str) -> Serializer:
        """The serializer for a stored kind."""
        for serializer in (*self._ensure(), *self._builtin):
            if serializer.kind == kind:
                return serializer
        known = ", ".join(s.kind for s in (*self._ensure(), *self._builtin))
        raise ArtifactNotFoundError(
            f"no serializer for artifact kind {kind!r} (known: {known}); register the serializer that wrote it"
        )


serializers = SerializerRegistry()


def _same_bytes(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (read back: cheaper than writing it again)."""
    with open(path, "rb") as handle:
        return handle.read() == data


def describe(obj: Any) -> str:
    """A short human description of any object, as the serializer that would store it puts it."""
    for serializer in serializers.candidates(obj):
        return serializer.describe(obj)
    return type(obj).__name__  # pragma: no cover - pickle matches everything


# The store ------------------------------------------------------------------------------------------------------
class ArtifactStore:
    """Immutable, content-addressed storage of typed objects.

    Args:
        root: a local folder or an fsspec URI (``memory://bucket``, ``file:///data/art``, ``s3://...``).

    Example::

        store = ArtifactStore(".mlops/artifacts")
        ref = store.put(df, name="raw")
        assert store.get(ref).equals(df)
    """

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        self._local = "://" not in root
        if self._local:
            self.root = str(Path(root).expanduser().resolve())
            self._fs = None
        else:
            import fsspec

            self._fs, self.root = fsspec.core.url_to_fs(root)
            self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri_root!r})"

    @property
    def uri_root(self) -> str:
        """The root as a URI or local path."""
        return self.root if self._local else self._fs.unstrip_protocol(self.root)

    # paths -------------------------------------------------------------------------------------------------
    def _dir(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}"

    def _path(self, digest: str, kind: str) -> str:
        return f"{self._dir(digest)}/{digest}.{kind}"

    def uri(self, ref: ArtifactRef) -> str:
        """Where an artifact's bytes live."""
        path = self._path(ref.hash, ref.kind)
        return path if self._local else self._fs.unstrip_protocol(path)

    # writing -----------------------------------------------------------------------------------------------
    def put(self, obj: Any, name: str | None = None) -> ArtifactRef:
        """Store ``obj`` with the first serializer that accepts it and return its reference.

        Identical content is stored once. Raises :class:`UnsupportedArtifactError` when nothing can store it.
        """
        errors = []
        for serializer in serializers.candidates(obj):
            try:
                data = serializer.dumps(obj)
            except Exception as exc:  # noqa: BLE001 - a serializer refusing lets the next one try
                errors.append(f"{serializer.kind}: {type(exc).__name__}: {exc}")
                continue
            return self._write(data, serializer.kind, name, serializer.describe(obj))
        where = f" {name!r}" if name else ""
        reason = errors[-1] if errors else "no serializer matches"
        error = UnsupportedArtifactError(
            f"cannot store{where} of type {type(obj).__module__}.{type(obj).__qualname__} as an artifact "
            f"({reason}); convert it to a DataFrame, array, dict or picklable object, "
            "or register a serializer with mlops_nb.store.artifacts.serializers.register()"
        )
        error.reason = reason
        raise error

    def put_bytes(self, data: bytes, kind: str, name: str | None = None, summary: str = "") -> ArtifactRef:
        """Store bytes already serialized as ``kind`` (for serializers that run elsewhere)."""
        serializers.by_kind(kind)
        return self._write(bytes(data), kind, name, summary)

    def put_path(self, path: str | os.PathLike, name: str | None = None) -> ArtifactRef:
        """Store a file (kind ``bytes``; ``get`` returns its bytes) or a folder (kind ``dir``; ``get`` returns
        the path of a fresh copy). ``name`` defaults to the file or folder name."""
        path = Path(path)
        name = name or path.name
        if path.is_dir():
            return self._write(DirSerializer().dumps(path), "dir", name, f"folder {name}")
        if not path.is_file():
            raise ArtifactNotFoundError(f"cannot store {path}: no such file or folder; check the path")
        return self._write(path.read_bytes(), "bytes", name, f"file {name}")

    def _write(self, data: bytes, kind: str, name: str | None, summary: str) -> ArtifactRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = ArtifactRef(digest, kind, len(data), name, summary)
        final = self._path(digest, kind)
        if self._local:
            with full_disk_as(ArtifactError, f"artifact {name or digest[:12]!r} ({len(data) / 1e6:.1f} MB)", self.root):
                self._write_local(final, data)
        else:
            self._write_remote(final, data)
        return ArtifactRef(digest, kind, len(data), name, summary, self.uri(ref))

    def _write_local(self, final: str, data: bytes) -> None:
        try:
            if os.path.getsize(final) == len(data) and _same_bytes(final, data):
                return  # identical content is stored once (a damaged copy of equal size is replaced)
        except OSError:
            pass
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        fsync_dir(folder)

    def _write_remote(self, final: str, data: bytes) -> None:
        fs = self._fs
        if fs.exists(final) and fs.size(final) == len(data):
            return
        tmp = f"{os.path.dirname(final)}/.tmp-{uuid.uuid4().hex}"
        fs.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            fs.pipe_file(tmp, data)
            fs.mv(tmp, final)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)

    def remove_stale_temp(self, max_age: float = 3600.0) -> int:
        """Delete ``.tmp-*`` files older than ``max_age`` seconds (left by a writer that was killed); return how
        many. They are never visible as artifacts; this only frees their space. Local roots only."""
        if not self._local or not os.path.isdir(self.root):
            return 0
        import time

        removed, cutoff = 0, time.time() - max_age
        for folder in os.scandir(self.root):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder.path):
                if entry.name.startswith(".tmp-") and entry.stat().st_mtime < cutoff:
                    try:
                        os.unlink(entry.path)
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    # reading -----------------------------------------------------------------------------------------------
    def _listdir(self, folder: str) -> list[str]:
        if self._local:
            try:
                return os.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            return [p.rsplit("/", 1)[-1] for p in self._fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []

    def resolve(self, ref_or_hash: ArtifactRef | str) -> ArtifactRef:
        """The full reference for a ref, a hash or a unique hash prefix (at least 6 characters)."""
        if isinstance(ref_or_hash, ArtifactRef):
            return ref_or_hash
        text = str(ref_or_hash).strip().lower()
        kind = None
        if "." in text:
            text, kind = text.split(".", 1)
        if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text):
            raise ArtifactNotFoundError(
                f"{ref_or_hash!r} is not an artifact hash; give the hash or at least {MIN_PREFIX} of its first "
                "hex characters"
            )
        matches = []
        for entry in self._listdir(self._dir(text)):
            if entry.startswith(".tmp-") or "." not in entry:
                continue
            digest, entry_kind = entry.split(".", 1)
            if digest.startswith(text) and (kind is None or entry_kind == kind):
                matches.append((digest, entry_kind))
        if not matches:
            raise ArtifactNotFoundError(
                f"no artifact {ref_or_hash} in {self.uri_root}; list artifacts with `mlops-nb show RUN`"
            )
        digests = {digest for digest, _ in matches}
        if len(digests) > 1:
            raise ArtifactNotFoundError(
                f"artifact prefix {text!r} is ambiguous ({len(digests)} artifacts); give more characters"
            )
        digest, kind = sorted(matches)[0]
        ref = ArtifactRef(digest, kind)
        size = self._size(self._path(digest, kind))
        return ArtifactRef(digest, kind, size, uri=self.uri(ref))

    def _size(self, path: str) -> int:
        return os.path.getsize(path) if self._local else self._fs.size(path)

    def exists(self, ref_or_hash: ArtifactRef | str) -> bool:
        """Whether the artifact is stored."""
        try:
            ref = self.resolve(ref_or_hash)
        except ArtifactNotFoundError:
            return False
        path = self._path(ref.hash, ref.kind)
        return os.path.exists(path) if self._local else self._fs.exists(path)

    def touch(self, ref: ArtifactRef) -> None:
        """Mark a stored artifact as just used (its file time: ``mlops-nb gc`` never removes a file younger than
        its grace period), before a cache hit reuses it. A missing file is left missing. Local roots only."""
        if self._local:
            try:
                os.utime(self._path(ref.hash, ref.kind))
            except OSError:
                pass

    def damage(self, ref: ArtifactRef, full: bool = False) -> str | None:
        """What is wrong with a stored artifact, or None when it is whole: missing, a size other than recorded,
        or (with ``full``: reads it all) bytes whose sha256 is not its hash. A cache hit asks for the size (a
        stat); :meth:`read_bytes` always checks the hash."""
        path = self._path(ref.hash, ref.kind)
        try:
            size = self._size(path)
        except (FileNotFoundError, OSError):
            return "missing"
        if ref.size and size != ref.size:  # 0: not recorded (nothing we store is empty)
            return f"damaged ({size} bytes, {ref.size} when stored)"
        if full:
            actual = sha256_file(path) if self._local else hashlib.sha256(self._fs.cat_file(path)).hexdigest()
            if actual != ref.hash:
                return f"damaged (its sha256 is {actual[:12]})"
        return None

    def read_bytes(self, ref_or_hash: ArtifactRef | str) -> bytes:
        """The verified bytes of an artifact. Raises :class:`ArtifactCorruptedError` on a hash mismatch."""
        ref = self.resolve(ref_or_hash)
        path = self._path(ref.hash, ref.kind)
        try:
            if self._local:
                with open(path, "rb") as handle:
                    data = handle.read()
            else:
                data = self._fs.cat_file(path)
        except FileNotFoundError:
            raise ArtifactNotFoundError(
                f"artifact {ref.short} ({ref.kind}) is missing from {self.uri_root}; re-run the step that made it"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.hash:
            raise ArtifactCorruptedError(
                f"artifact file {self.uri(ref)} is corrupted (its sha256 is {actual[:12]}, not {ref.short}); "
                "delete the file and re-run the step that produced it"
            )
        return data

    def get(self, ref_or_hash: ArtifactRef | str) -> Any:
        """Load an artifact after verifying its hash.

        Files stored with :meth:`put_path` come back as ``bytes``; folders as the path of a fresh copy.
        """
        ref = self.resolve(ref_or_hash)
        serializer = serializers.by_kind(ref.kind)
        return serializer.loads(self.read_bytes(ref))

    def get_path(self, ref_or_hash: ArtifactRef | str, dest: str | os.PathLike) -> Path:
        """Write a file or folder artifact to ``dest`` (a folder is extracted into it) and return ``dest``."""
        ref = self.resolve(ref_or_hash)
        dest = Path(dest)
        data = self.read_bytes(ref)
        if ref.kind == "dir":
            dest.mkdir(parents=True, exist_ok=True)
            DirSerializer.extract(data, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return dest
