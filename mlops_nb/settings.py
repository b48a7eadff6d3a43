"""Settings and the project home: where a project is, and how it is configured.

A project is found at ``$MLOPS_NB_HOME``, else the nearest folder upward holding ``pyproject.toml`` or
``.mlops/``, else the current folder. Settings come from ``[tool.mlops_nb]`` in the home's ``pyproject.toml`` and
are overridden by ``MLOPS_NB_<NAME>`` variables. Also here: the other environment variables mlops_nb reads.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

MLOPS_DIR = ".mlops"
HOME_ENV = "MLOPS_NB_HOME"
RUN_ENV = "MLOPS_NB_RUN_ID"  # a headless run's id, handed to the kernel that runs its steps
NOTEBOOK_ENV = "MLOPS_NB_NOTEBOOK"  # the notebook that kernel runs
NO_CACHE_ENV = "MLOPS_NB_NO_CACHE"  # "1": the run reuses nothing from the cache
PLAN_ENV = "MLOPS_NB_PLAN"  # a JSON file: the cache hits the driver recorded, which that kernel does not decide again


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


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value.strip()):
        raise ValueError("expected a name: letters, digits, _ . -")
    return value.strip()


def _table(value: Any) -> dict:
    if isinstance(value, str):  # from the environment: JSON
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"expected a JSON object ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError("expected a table")
    return value


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
            _name,
            "notebook",
            "default executor of headless runs: notebook, dag, dask or one an installed package registers",
        ),
        Setting(
            "library_versions",
            _bool,
            True,
            "the versions of the third-party packages a notebook imports are in each step's cache key, so an "
            "upgrade re-runs the steps; false leaves them out (for environments pinned another way)",
        ),
        Setting(
            "prediction_retention_days",
            _positive_float,
            90.0,
            "days of prediction log that `mlops-nb labels --compact` (PredictionLog.compact) keeps",
        ),
        Setting(
            "monitoring",
            _table,
            {},
            "[tool.mlops_nb.monitoring]: window, test, drift_share, columns (per-column test/threshold/type), and "
            'alerts: a list of {rule = "drift_share > 0.3", action = "log" | "run NB -p NAME VALUE" | '
            '"command CMD", model = NAME}',
        ),
        Setting(
            "fork_kernels",
            _bool,
            True,
            "kernels of headless runs come from a template that already imported the setup cells' modules (each "
            "step's is forked from it with dag/dask; with notebook the template becomes the run's one kernel); false "
            "starts every kernel from scratch (for libraries that are not fork-safe, such as CUDA)",
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
