"""What every model registry offers (:class:`ModelRegistry`) and the record it returns (:class:`ModelVersion`)."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...core.hashing import sha256
from ...core.records import ArtifactRef
from ...exceptions import RegistryError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,254}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,254}$")


def check_model_name(name: Any) -> str:
    """``name`` if it is a valid registered model name, else a one-line :class:`RegistryError`."""
    if not isinstance(name, str) or not _NAME.match(name) or name != name.strip():
        raise RegistryError(
            f"model name {name!r} is not valid: use letters, digits, '_', '-', '.' or spaces (up to 255), "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: Any) -> str:
    """``alias`` if it is a valid alias (``champion``), else a one-line :class:`RegistryError`."""
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias.lower() == "latest" or re.match(r"^v\d+$", alias):
        raise RegistryError(
            f"alias {alias!r} is not valid: use letters, digits, '_' or '-', starting with a letter or '_' "
            "('latest' and v<number> are reserved by MLflow)"
        )
    return alias


@dataclass
class ModelVersion:
    """One registered version of a model, as the registry holds it.

    Attributes:
        name: the registered model's name.
        version: its version number (1, 2, ...).
        run_id: the MLflow run that logged it.
        source: where MLflow keeps the model (a ``models:/m-...`` or ``runs:/`` URI).
        created: when it was registered (UTC).
        tags: the version's tags (lineage, gate outcomes, approval, alias moves).
        aliases: the aliases it holds now (``champion``).
        metrics: the metrics logged with it (filled when asked for).
    """

    name: str
    version: int
    run_id: str | None = None
    source: str = ""
    created: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``: how MLflow's clients and ``mlops-nb lineage`` name it."""
        return f"models:/{self.name}/{self.version}"

    @property
    def model_hash(self) -> str | None:
        """The hash of the model in the project's artifact store, when mlops_nb registered it."""
        return self.tags.get("mlops_nb.model_hash")

    @property
    def approval(self) -> str | None:
        """``pending``, ``approved`` or ``rejected`` when the version went through an approval gate."""
        return self.tags.get("approval")

    def node(self) -> ArtifactRef:
        """The version as a lineage node: an artifact of kind ``model_version`` whose identity is its URI and the
        model it holds."""
        digest = sha256(f"{self.uri}\n{self.model_hash or self.source}")
        return ArtifactRef(
            digest, "model_version", name=self.uri, summary=f"model {self.name} v{self.version}", uri=self.uri
        )

    def to_dict(self) -> dict:
        """A JSON-able dict."""
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "run_id": self.run_id,
            "source": self.source,
            "created": self.created.isoformat() if self.created else None,
            "aliases": list(self.aliases),
            "approval": self.approval,
            "metrics": dict(self.metrics),
            "tags": dict(self.tags),
        }


class ModelRegistry(abc.ABC):
    """A model registry: versions of named models, their aliases and tags, and the models themselves.

    Implementations raise :class:`~mlops_nb.exceptions.ModelNotFoundError` for an unknown model, version or
    alias and :class:`~mlops_nb.exceptions.RegistryError` for anything else a user can fix, with one line.
    """

    uri: str

    @abc.abstractmethod
    def register(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        run_tags: dict[str, str] | None = None,
        run_metrics: dict[str, float] | None = None,
        files: dict[str, str] | None = None,
        pip_requirements: list[str] | None = None,
        experiment: str = "mlops_nb",
    ) -> ModelVersion:
        """Log ``model`` (with its signature and input example) in a new tracking run that carries ``params``,
        ``metrics`` (the version's, also kept as its tags) and ``run_metrics`` (its pipeline run's), ``run_tags``
        and ``files`` (artifact path -> local file), and register it as a new version of ``name`` with ``tags``."""

    @abc.abstractmethod
    def models(self) -> list[dict]:
        """Every registered model: ``name``, ``aliases`` (alias -> version), ``latest`` version, ``tags``."""

    @abc.abstractmethod
    def versions(self, name: str, metrics: bool = False) -> list[ModelVersion]:
        """The versions of ``name``, newest first (with their metrics when asked)."""

    @abc.abstractmethod
    def version(self, name: str, version: int | str, metrics: bool = False) -> ModelVersion:
        """One version (a number, or ``@ALIAS`` / an alias name)."""

    def version_metrics(self, name: str, version: int) -> dict[str, float]:
        """A version's metrics (what it was registered with), read as cheaply as the store allows."""
        return dict(self.version(name, version, metrics=True).metrics or {})

    @abc.abstractmethod
    def alias_holder(self, name: str, alias: str, metrics: bool = False) -> ModelVersion | None:
        """The version ``alias`` points at now (with its metrics when asked), or None."""

    @abc.abstractmethod
    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``."""

    @abc.abstractmethod
    def set_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        """Set tags on a version."""

    @abc.abstractmethod
    def load(self, name: str, version: int) -> Any:
        """The model of a version, as its flavour loads it (MLflow's pyfunc for a remote registry)."""

    @abc.abstractmethod
    def exists(self, name: str, version: int) -> bool:
        """Whether the version is registered (cheap: no client library import where avoidable)."""

    def current_hash(self, ref: ArtifactRef) -> str | None:
        """A recorded model version node (:class:`~mlops_nb.core.hooks.ArtifactSource`): its hash while the version
        is still registered, None once it is gone (a step that registered it then runs again)."""
        name, _, version = ref.uri[len("models:/") :].rpartition("/")
        try:
            return ref.hash if self.exists(name, int(version)) else None
        except ValueError:
            return None
