"""The feature store: entities, feature views, validated ingestion, point-in-time training sets, online lookups.

``store.py`` holds :class:`FeatureStore`; ``checks`` (names, dtypes, validation), ``records`` (the catalog's
records), ``segments`` (the immutable Parquet segments), ``pit`` (point-in-time reads), ``online`` and ``stats``
hold its parts.
"""

from .records import Entity, FeatureView, IngestResult, MaterializeResult, Segment
from .store import ARTIFACT_KINDS, FeatureStore

__all__ = ["ARTIFACT_KINDS", "Entity", "FeatureStore", "FeatureView", "IngestResult", "MaterializeResult", "Segment"]
