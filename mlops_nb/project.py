"""The project home: where a project's stores live and how it is configured.

A project is found at ``$MLOPS_NB_HOME``, else the nearest folder upward holding ``pyproject.toml`` or
``.mlops/``, else the current folder. Its stores live under ``<home>/.mlops/``. Settings come from
``[tool.mlops_nb]`` in the home's ``pyproject.toml`` and are overridden by ``MLOPS_NB_<NAME>`` variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

MLOPS_DIR = ".mlops"
HOME_ENV = "MLOPS_NB_HOME"


@dataclass(frozen=True)
class Setting:
    """One setting of ``[tool.mlops_nb]``.

    Attributes:
        name: the key in ``[tool.mlops_nb]``; the environment variable is ``MLOPS_NB_<NAME>``.
        parse: turns a raw value (TOML value or environment string) into the typed value or raises ValueError.
        default: the value when neither pyproject.toml nor the environment sets it.
        help: what the setting does and what values it takes.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        """The environment variable that overrides this setting."""
        return "MLOPS_NB_" + self.name.upper()


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    number = float(value)
    if not number > 0:
        raise ValueError("expected a positive number of seconds")
    return number


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip() or None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting(
            "artifact_root",
            _optional_str,
            None,
            "where artifacts are stored: a folder (relative to the home) or an fsspec URI; default .mlops/artifacts",
        ),
        Setting(
            "tracking_uri",
            _optional_str,
            None,
            "MLflow tracking URI; default sqlite:///<home>/.mlops/mlflow.db",
        ),
        Setting(
            "lock_timeout",
            _positive_float,
            30.0,
            "seconds to wait for a busy store before giving up with StoreBusyError",
        ),
        Setting(
            "executor",
            _choice("notebook", "dag", "dask"),
            "notebook",
            "default executor of headless runs",
        ),
        Setting(
            "fork_kernels",
            _bool,
            True,
            "dag/dask executors fork each step's kernel from a template that already imported the setup cells' "
            "modules; false starts every kernel from scratch (for libraries that are not fork-safe, such as CUDA)",
        ),
    ]
}


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a project (defaults < ``[tool.mlops_nb]`` < ``MLOPS_NB_*``).

    Attributes:
        values: setting name -> typed value.
        sources: setting name -> where the value came from (``default``, ``pyproject.toml`` or the variable).
    """

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def load(cls, home: Path, environ: dict[str, str] | None = None) -> Settings:
        """Read ``<home>/pyproject.toml`` and the environment; raise ConfigError on an invalid value."""
        environ = os.environ if environ is None else environ
        table: dict[str, Any] = {}
        pyproject = home / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
                raise ConfigError(f"{pyproject} cannot be read: {exc}; fix the TOML syntax") from None
            table = data.get("tool", {}).get("mlops_nb", {})
            if not isinstance(table, dict):
                raise ConfigError(f"{pyproject}: [tool.mlops_nb] must be a table of settings")
        for key in table:
            if key not in SETTINGS:
                known = ", ".join(sorted(SETTINGS))
                raise ConfigError(f"{pyproject} [tool.mlops_nb]: unknown setting {key!r}; known settings: {known}")
        values, sources = {}, {}
        for name, setting in SETTINGS.items():
            raw, source = setting.default, "default"
            if name in table:
                raw, source = table[name], f"{pyproject} [tool.mlops_nb] {name}"
            if setting.env in environ:
                raw, source = environ[setting.env], f"environment variable {setting.env}"
            if source != "default":
                try:
                    raw = setting.parse(raw)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{source}: invalid value {raw!r} ({exc}); {setting.help}") from None
            values[name], sources[name] = raw, source
        return cls(values, sources)


def find_home(start: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Path:
    """Find a project home: ``$MLOPS_NB_HOME``, else the nearest folder upward with ``pyproject.toml``
    or ``.mlops/``, else ``start`` (the current folder by default)."""
    environ = os.environ if environ is None else environ
    if environ.get(HOME_ENV):
        home = Path(environ[HOME_ENV]).expanduser()
        if home.exists() and not home.is_dir():
            raise ConfigError(
                f"{HOME_ENV}={environ[HOME_ENV]} is a file, not a folder; point it at the project folder or unset it"
            )
        return home.resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MLOPS_DIR).is_dir() or (folder / "pyproject.toml").is_file():
            return folder
    return here


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

    def init(self) -> Project:
        """Create ``.mlops/`` and its stores (idempotent); add ``.mlops/`` to ``.gitignore`` in a git repo."""
        for folder in (self.mlops_dir, self.mlartifacts_dir, self.builds_dir, self.predictions_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
            self.artifacts.remove_stale_temp()  # what killed writers left behind
        self.metadata  # noqa: B018 - opening creates and migrates metadata.duckdb
        if (self.home / ".git").exists():
            self._ignore_in_git()
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
    @property
    def artifacts(self):
        """The project's :class:`~mlops_nb.artifacts.ArtifactStore`."""
        if self._artifacts is None:
            from .artifacts import ArtifactStore

            self._artifacts = ArtifactStore(self.artifact_root)
        return self._artifacts

    @property
    def metadata(self):
        """The project's :class:`~mlops_nb.metadata.MetadataStore` (``metadata.duckdb``; created on first use)."""
        if self._metadata is None:
            from .metadata import MetadataStore

            self._metadata = MetadataStore(self.metadata_path, lock_timeout=self.settings.lock_timeout)
        return self._metadata
