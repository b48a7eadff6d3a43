"""The composition root: a project home, the layout of its ``.mlops/`` folder, and its stores.

Only this module knows where each store lives; the stores take explicit paths. ``Project()`` finds its home with
:func:`~mlops_nb.settings.find_home` and reads its settings; ``.artifacts``, ``.metadata``, ``.features`` and
``.registry`` open the stores on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .settings import MLOPS_DIR, Settings, find_home


class Project:
    """A project home and the paths of its stores.

    Args:
        home: the project folder; discovered with :func:`find_home` when omitted.
        environ: environment to read ``MLOPS_NB_*`` from (default ``os.environ``); for tests.

    Example::

        project = Project()            # discover from the current folder
        project.init()                 # create .mlops/ (idempotent)
        ref = project.artifacts.put(df)
    """

    def __init__(self, home: str | os.PathLike | None = None, environ: dict[str, str] | None = None):
        if home is None:
            self.home = find_home(environ=environ)
        else:
            self.home = Path(home).expanduser().resolve()
            if self.home.exists() and not self.home.is_dir():
                raise ConfigError(f"project home {self.home} is a file, not a folder; pass a folder")
        self.settings = Settings.load(self.home, environ)
        self._artifacts = None
        self._metadata = None
        self._features = None
        self._registry = None
        self._predictions = None

    def __repr__(self) -> str:
        return f"Project({str(self.home)!r})"

    @classmethod
    def discover(cls, start: str | os.PathLike | None = None) -> Project:
        """The project that ``start`` (default: the current folder) belongs to."""
        return cls(find_home(start))

    # Layout -------------------------------------------------------------------------------------------------
    @property
    def mlops_dir(self) -> Path:
        """``<home>/.mlops``: every store of the project lives here."""
        return self.home / MLOPS_DIR

    @property
    def metadata_path(self) -> Path:
        """The metadata store's DuckDB file."""
        return self.mlops_dir / "metadata.duckdb"

    @property
    def features_path(self) -> Path:
        """The feature store's DuckDB catalog."""
        return self.mlops_dir / "features.duckdb"

    @property
    def artifact_root(self) -> str:
        """Where artifacts live: a local folder or an fsspec URI (setting ``artifact_root``)."""
        root = self.settings.artifact_root
        if root is None:
            return str(self.mlops_dir / "artifacts")
        if "://" in root:
            return root
        return str((self.home / root).resolve())

    @property
    def mlflow_db(self) -> Path:
        """The MLflow SQLite database of the embedded registry."""
        return self.mlops_dir / "mlflow.db"

    @property
    def mlartifacts_dir(self) -> Path:
        """MLflow's artifact folder."""
        return self.mlops_dir / "mlartifacts"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI (setting ``tracking_uri``, default the embedded SQLite file)."""
        return self.settings.tracking_uri or f"sqlite:///{self.mlflow_db}"

    @property
    def builds_dir(self) -> Path:
        """App bundles built from registered models."""
        return self.mlops_dir / "builds"

    @property
    def predictions_dir(self) -> Path:
        """The prediction logs of served models."""
        return self.mlops_dir / "predictions"

    # Set-up -------------------------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        """Whether ``.mlops/`` exists."""
        return self.mlops_dir.is_dir()

    def init(self, registry: bool = False) -> Project:
        """Create ``.mlops/`` and its stores (idempotent); add ``.mlops/`` to ``.gitignore`` in a git repo.

        Args:
            registry: also create and migrate the MLflow store (seconds: it imports mlflow), or check that the
                tracking server answers; otherwise that happens on first use.
        """
        for folder in (self.mlops_dir, self.mlartifacts_dir, self.builds_dir, self.predictions_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
            self.artifacts.remove_stale_temp()  # what killed writers left behind
        self.metadata  # noqa: B018 - opening creates and migrates metadata.duckdb
        if (self.home / ".git").exists():
            self._ignore_in_git()
        if registry:
            self.registry.client  # noqa: B018 - opening creates and migrates it, under its lock
        return self

    def _ignore_in_git(self) -> None:
        gitignore = self.home / ".gitignore"
        lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
        if any(line.strip().rstrip("/") in (MLOPS_DIR, "/" + MLOPS_DIR) for line in lines):
            return
        text = "\n".join(lines)
        if text and not text.endswith("\n"):
            text += "\n"
        gitignore.write_text(text + f"{MLOPS_DIR}/\n", encoding="utf-8")

    # Stores ---------------------------------------------------------------------------------------------------
    def store_paths(self, store: str) -> dict[str, Any]:
        """The constructor arguments of one of the project's stores (``metadata`` or ``features``)."""
        timeout = self.settings.lock_timeout
        if store == "metadata":
            return {"path": self.metadata_path, "lock_timeout": timeout}
        if store == "features":
            return {"root": self.mlops_dir / "features", "catalog": self.features_path, "lock_timeout": timeout}
        raise ValueError(f"unknown store {store!r}")

    @property
    def artifacts(self):
        """The project's :class:`~mlops_nb.store.artifacts.ArtifactStore`."""
        if self._artifacts is None:
            from .store.artifacts import ArtifactStore

            self._artifacts = ArtifactStore(self.artifact_root)
        return self._artifacts

    @property
    def metadata(self):
        """The project's :class:`~mlops_nb.store.metadata.MetadataStore` (``metadata.duckdb``; created on first
        use)."""
        if self._metadata is None:
            from .store.metadata import MetadataStore

            self._metadata = MetadataStore(**self.store_paths("metadata"))
        return self._metadata

    @property
    def features(self):
        """The project's :class:`~mlops_nb.store.features.FeatureStore` (``features.duckdb``; created on first
        use)."""
        if self._features is None:
            from .store.features import FeatureStore

            self._features = FeatureStore(**self.store_paths("features"))
        return self._features

    @property
    def registry(self):
        """The project's model registry (:class:`~mlops_nb.store.registry.MlflowRegistry` at
        :attr:`tracking_uri`; the embedded SQLite store is created and migrated on first use, under a lock)."""
        if self._registry is None:
            from .store.registry import MlflowRegistry

            embedded = self.settings.tracking_uri is None
            self._registry = MlflowRegistry(
                self.tracking_uri,
                artifact_location=self.mlartifacts_dir if embedded else None,
                lock_timeout=max(self.settings.lock_timeout, 60.0),
                create_folder=embedded,
            )
        return self._registry

    @property
    def predictions(self):
        """The project's prediction log (:class:`~mlops_nb.store.predictions.PredictionLog` at
        ``.mlops/predictions``)."""
        if self._predictions is None:
            from .store.predictions import PredictionLog

            self._predictions = PredictionLog(
                self.predictions_dir, self.settings.prediction_retention_days, self.settings.lock_timeout
            )
        return self._predictions

    def artifact_source(self, kind: str):
        """The store holding artifacts of ``kind`` outside the artifact store (a
        :class:`~mlops_nb.core.hooks.ArtifactSource`), or None for kinds the artifact store holds.

        A project that never had a feature store answers for feature artifacts as if they were gone, without
        creating one.
        """
        from .core.records import FEATURE_ARTIFACT_KINDS

        if kind == "model_version":
            return self.registry
        if kind not in FEATURE_ARTIFACT_KINDS:
            return None
        if self._features is None and not self.features_path.exists():
            return _Gone()
        return self.features


def current_project(project: Project | None = None) -> Project:
    """``project`` if given, else the project of the pipeline step running now, else ``Project()`` (the current
    folder's): how the lifecycle functions (``register_model``, ``promote``, ``build``, ``deploy`` ...) find theirs."""
    if project is not None:
        return project
    from .core import hooks

    active = hooks.active_step()
    if active is not None and active.project is not None:
        return active.project
    return Project()


class _Gone:
    """The artifact source of a store that does not exist: everything it would hold is gone."""

    def current_hash(self, ref) -> None:
        """Nothing is stored."""
        return None
