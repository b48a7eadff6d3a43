"""Records every layer passes around: :class:`ArtifactRef`, the pointer to one stored artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .hashing import hash_path


@dataclass(frozen=True)
class ArtifactRef:
    """A pointer to one stored artifact.

    Attributes:
        hash: sha256 of the stored bytes (hex); the artifact's identity.
        kind: the serializer that wrote it (``parquet``, ``series``, ``npy``, ``json``, ``bytes``, ``dir``,
            ``ipynb``, ``pickle`` or a user-registered kind), or the store that holds it (``feature_view``,
            ``feature_segment``, ``external`` for a file a step reads).
        size: bytes stored.
        name: the name it was stored under (a variable or file name); not part of its identity.
        summary: a short description of the object (``DataFrame 1000x5``); not part of its identity.
        uri: where the bytes live.
    """

    hash: str
    kind: str
    size: int = field(default=0, compare=False)
    name: str | None = field(default=None, compare=False)
    summary: str = field(default="", compare=False)
    uri: str = field(default="", compare=False)

    @property
    def short(self) -> str:
        """The first 12 characters of the hash, as shown to people."""
        return self.hash[:12]

    def to_dict(self) -> dict:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArtifactRef:
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def external(cls, path: str | Path, name: str | None = None, digest: str | None = None) -> ArtifactRef:
        """A file or folder outside the store that a step reads, as it enters lineage (hashed, not copied).

        Args:
            path: the file or folder.
            name: how the step names it (default: the file name).
            digest: its content hash, when already known.
        """
        path = Path(path)
        name = name or path.name
        digest = digest or hash_path(path)
        return cls(digest, "external", name=name, summary=f"file {name}", uri=path.resolve().as_uri())


FEATURE_ARTIFACT_KINDS = ("feature_view", "feature_segment")
"""Kinds of the artifacts the feature store holds itself (a view's state, a segment): see
:meth:`~mlops_nb.store.features.FeatureStore.current_hash`. Here, so that telling them apart imports no store."""

RUN_KINDS = ("pipeline", "promotion", "build", "deploy", "monitor")
"""What a run is: a notebook's pipeline, or lifecycle work around a model (DESIGN "Runs of every kind")."""

TRIGGERS = ("manual", "cli", "api", "rest", "schedule", "data", "drift", "approval", "watch")
"""What started a run."""

STATUS_COLOURS = {
    "succeeded": ("#4caf50", "#c8e6c9"),
    "cached": ("#64b5f6", "#bbdefb"),
    "failed": ("#e53935", "#ffcdd2"),
    "skipped": ("#bdbdbd", "#eeeeee"),
    "running": ("#fdd835", "#fff9c4"),
    "interrupted": ("#fb8c00", "#ffe0b2"),
}
"""Status of a run or step run -> (colour, its light shade): bars in plots, node fills in diagrams."""
