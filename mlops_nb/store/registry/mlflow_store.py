"""The model registry on MLflow: a local SQLite store by default, any tracking server by URI.

MLflow does not lock its SQLite store: processes that open a *fresh* ``sqlite:///`` file at once race on its
migrations (5 of 6 fail here), and concurrent registrations clash on version numbers. So for a SQLite URI every
write, and the first opening (which migrates), holds a file lock next to the database; a tracking server
serialises its own writes. ``mlflow`` is imported on first use, never by ``import mlops_nb``.

Models are logged with an explicit list of pinned requirements (the caller's) when given: MLflow otherwise infers
them by loading the model in a subprocess, which is most of the 2-6 s a plain ``log_model`` takes here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...exceptions import ModelNotFoundError, RegistryError
from .base import ModelRegistry, ModelVersion, check_model_name

_QUIET_LOGGERS = ("mlflow", "alembic")
_REGISTRY_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
_REGISTRY_SCHEME_PREFIXES = ("postgresql+", "mysql+", "mssql+")
METRIC_TAG = "mlops_nb.metric."
"""A version's metrics are also its tags (``mlops_nb.metric.f1``): a gate reads them with the version."""


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's warnings and INFO/WARNING log lines (migrations, pickle advice) stay out of the user's output."""
    import mlflow  # noqa: F401 - importing it configures its loggers: quieten them after that

    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a download's bar would break ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if bar is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def flavor_of(model: Any) -> str:
    """``pyfunc`` for an :class:`mlflow.pyfunc.PythonModel`, ``sklearn`` for anything with ``predict`` (MLflow's
    scikit-learn flavour pickles it with cloudpickle), else a one-line error."""
    for klass in type(model).__mro__:
        if klass.__name__ == "PythonModel" and klass.__module__.startswith("mlflow.pyfunc"):
            return "pyfunc"
    if callable(getattr(model, "predict", None)):
        return "sklearn"
    raise RegistryError(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}: it has no predict(); register a "
        "scikit-learn estimator, an object with predict(X), or an mlflow.pyfunc.PythonModel"
    )


def _tagged_metrics(tags: dict[str, str]) -> dict[str, float]:
    """The metrics mlops_nb registered a version with: its ``mlops_nb.metric.*`` tags."""
    found = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG):
            try:
                found[key[len(METRIC_TAG) :]] = float(value)
            except ValueError:
                continue  # a tag someone else wrote
    return found


class MlflowRegistry(ModelRegistry):
    """The :class:`ModelRegistry` on an MLflow tracking and registry store.

    Args:
        uri: the tracking URI (``sqlite:///...``, ``http://host:port``, ...); the registry URI is the same.
        artifact_location: where new experiments keep their artifacts (a local folder for the embedded store; None
            lets a tracking server decide).
        lock_timeout: seconds to wait for another process's write to a SQLite store.
    """

    def __init__(
        self,
        uri: str,
        artifact_location: str | Path | None = None,
        lock_timeout: float = 60.0,
        create_folder: bool = True,
    ):
        self.uri = uri
        self.create_folder = create_folder  # the embedded store's folder; a URI the user gave must name a real one
        self.artifact_location = Path(artifact_location) if artifact_location else None
        self.lock_timeout = float(lock_timeout)
        self._client = None
        self._experiments: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.shown_uri!r})"

    # Opening -------------------------------------------------------------------------------------------------------
    @property
    def shown_uri(self) -> str:
        """The URI as messages show it: without the password of ``scheme://user:password@host``."""
        parts = urllib.parse.urlsplit(self.uri)
        if parts.password is None:
            return self.uri
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a ``sqlite:///`` URI, else None."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return Path(urllib.parse.unquote(self.uri[len("sqlite:///") :].split("?")[0]))

    @property
    def is_http(self) -> bool:
        """Whether the URI names a tracking server."""
        return self.uri.startswith(("http://", "https://"))

    def _lock(self):
        """The cross-process lock of a SQLite store's writes (nothing to hold for a tracking server)."""
        path = self.sqlite_path
        if path is None:
            return nullcontext()
        from filelock import FileLock, Timeout

        lock = FileLock(str(path) + ".lock", timeout=self.lock_timeout)

        @contextmanager
        def held() -> Iterator[None]:
            try:
                lock.acquire()
            except Timeout:
                raise RegistryError(
                    f"the MLflow store {path} stayed locked by another process for {self.lock_timeout:g} s; retry"
                ) from None
            try:
                yield
            finally:
                lock.release()

        return held()

    def _check_uri(self) -> None:
        """A URI MLflow cannot use as a registry is refused in one line, before MLflow's own long message."""
        scheme = self.uri.partition("://")[0] if "://" in self.uri else ""
        if scheme not in _REGISTRY_SCHEMES and not scheme.startswith(_REGISTRY_SCHEME_PREFIXES):
            raise RegistryError(
                f"tracking URI {self.shown_uri!r} is not one MLflow can keep a model registry in; use "
                "sqlite:///PATH (the default is sqlite:///<home>/.mlops/mlflow.db), http(s)://HOST:PORT of an "
                "MLflow server, or a database URI (postgresql://, mysql://)"
            )

    def _probe(self) -> None:
        """A tracking server that does not answer is named in one line, instead of MLflow's minutes of retries."""
        if not self.is_http:
            return
        try:
            with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=5) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"the MLflow tracking server {self.shown_uri} is unreachable ({reason}); start it, or set "
                "MLOPS_NB_TRACKING_URI / [tool.mlops_nb] tracking_uri"
            ) from None

    @property
    def client(self):
        """The ``MlflowClient`` (the store created and migrated once, under the lock, on first use)."""
        if self._client is None:
            self._probe()
            with _quiet():
                from mlflow import MlflowClient

                self._check_uri()
                path = self.sqlite_path
                if path is not None and self.create_folder:
                    try:
                        path.parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise RegistryError(f"cannot create the MLflow store's folder {path.parent}: {exc}") from None
                elif path is not None and not path.parent.is_dir():
                    raise RegistryError(
                        f"the folder of the MLflow store {path} does not exist; fix MLOPS_NB_TRACKING_URI / "
                        "[tool.mlops_nb] tracking_uri, or create the folder"
                    )
                with self._lock():  # making the client opens the store, and a fresh one migrates: one at a time
                    try:
                        client = MlflowClient(self.uri, registry_uri=self.uri)
                        client.search_experiments(max_results=1)
                        client.search_registered_models(max_results=1)  # the registry's store, opened too
                    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and alembic errors alike: one line
                        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                        raise RegistryError(
                            f"cannot open the MLflow store {self.shown_uri}: {type(exc).__name__}: {text}"
                        ) from None
            self._client = client
        return self._client

    def _call(self, what: str, function: Callable[[], Any], name: str | None = None, version: Any = None) -> Any:
        """Call MLflow; its errors become one line naming the model, version and store."""
        from mlflow.exceptions import MlflowException

        try:
            return function()
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0][:200]
            if code == "RESOURCE_DOES_NOT_EXIST":
                if version is not None and name is not None and not self._model_exists(name):
                    version = None
                if version is not None:
                    raise ModelNotFoundError(
                        f"model {name!r} has no version {version} in {self.shown_uri}; `mlops-nb models show {name}` "
                        "lists its versions"
                    ) from None
                if name is not None:
                    raise ModelNotFoundError(
                        f"no model is registered as {name!r} in {self.shown_uri}; `mlops-nb models list` shows the models"
                    ) from None
            raise RegistryError(f"cannot {what} in {self.shown_uri}: {first}") from None
        except (OSError, ConnectionError) as exc:
            raise RegistryError(f"cannot {what} in {self.shown_uri}: {type(exc).__name__}: {exc}") from None

    def _model_exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
            return True
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return False
            return self._call("find the model", lambda: bool(self.client.get_registered_model(name)), name)

    @contextmanager
    def _fluent(self) -> Iterator[Any]:
        """MLflow's module-level API (``log_model`` needs it) pointed at this store for the block, then restored."""
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        old = (getattr(tracking_utils, "_tracking_uri", None), getattr(registry_utils, "_registry_uri", None))
        environ = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}  # both set these
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(old[0])
            registry_utils._registry_uri = old[1]
            for key, value in environ.items():  # the user's own variables, as they were
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (with its artifacts under ``artifact_location``) when missing."""
        known = self._experiments.get(name)
        if known is not None:
            return known
        client = self.client
        found = self._call("find the experiment", lambda: client.get_experiment_by_name(name))
        if found is None:
            location = None
            if self.artifact_location is not None:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                location = (self.artifact_location / safe).resolve().as_uri()
            found_id = self._call(
                "create the experiment", lambda: client.create_experiment(name, artifact_location=location)
            )
        else:
            found_id = found.experiment_id
        self._experiments[name] = found_id
        return found_id

    # Writes ------------------------------------------------------------------------------------------------------
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
        """See :meth:`ModelRegistry.register`."""
        check_model_name(name)
        flavor = flavor_of(model)
        client = self.client
        with _quiet(), self._lock(), self._fluent():  # MLflow resolves a logged model's URI through its fluent API
            experiment_id = self._experiment(experiment)
            run_id, model_uri, model_id = self._log(
                model,
                flavor,
                experiment_id,
                input_example,
                {**(run_metrics or {}), **(metrics or {})},
                params,
                run_tags,
                files,
                pip_requirements,
            )
            self._ensure_model(name)
            version = self._call(
                "register the model",
                lambda: client.create_model_version(
                    name,
                    model_uri,
                    run_id=run_id,
                    tags={
                        **(tags or {}),
                        **{METRIC_TAG + k: repr(float(v)) for k, v in (metrics or {}).items()},
                        "mlops_nb.flavor": flavor,
                    },
                    model_id=model_id,
                ),
                name,
            )
        return self._version(version, {})

    def _log(self, model, flavor, experiment_id, input_example, metrics, params, run_tags, files, requirements):
        """Log the model in a new tracking run; return the run id, the model's URI and its logged-model id."""
        with self._fluent() as mlflow:
            nested = mlflow.active_run() is not None  # the user's own run, if any, stays theirs

            started: list[str] = []

            def log():
                with mlflow.start_run(experiment_id=experiment_id, tags=run_tags or {}, nested=nested) as run:
                    started.append(run.info.run_id)
                    if params:
                        mlflow.log_params({k: _param(v) for k, v in params.items()})
                    if metrics:
                        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                    for artifact_path, local in (files or {}).items():
                        mlflow.log_artifact(local, artifact_path)
                    options = {"name": "model", "input_example": input_example, "pip_requirements": requirements}
                    if flavor == "sklearn":
                        from mlflow import sklearn as flavour

                        info = flavour.log_model(model, serialization_format="cloudpickle", **options)
                    else:
                        from mlflow import pyfunc as flavour

                        info = flavour.log_model(python_model=model, **options)
                    return run.info.run_id, info.model_uri, getattr(info, "model_id", None)

            try:
                return self._call("log the model", log)
            except RegistryError:
                self._forget(started)
                raise
            except Exception as exc:  # noqa: BLE001 - a model MLflow cannot save is the user's to fix: one line
                self._forget(started)
                raise RegistryError(
                    f"MLflow cannot log the model ({type(model).__qualname__}): {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
                ) from None

    def _forget(self, run_ids: list[str]) -> None:
        """Delete the tracking run of a registration that failed: nothing of it stays in the experiment."""
        for run_id in run_ids:
            try:
                self.client.delete_run(run_id)
            except Exception:  # noqa: BLE001 - the registration's own error is what the user needs to see
                pass

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        if self._model_exists(name):
            return

        def create() -> None:
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:  # another writer of a tracking server created it first
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._call("create the registered model", create, name)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """See :meth:`ModelRegistry.set_alias`."""
        with self._lock():
            self._call(
                "set the alias",
                lambda: self.client.set_registered_model_alias(name, alias, str(version)),
                name,
                version,
            )

    def set_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        """See :meth:`ModelRegistry.set_tags`."""
        with self._lock():
            for key, value in tags.items():
                self._call(
                    "tag the version",
                    lambda k=key, v=value: self.client.set_model_version_tag(name, str(version), k, v),
                    name,
                    version,
                )

    # Reads -------------------------------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """See :meth:`ModelRegistry.models`."""
        found = self._call("list the models", lambda: list(_pages(self.client.search_registered_models)))
        return [
            {
                "name": m.name,
                "aliases": {a: int(v) for a, v in (m.aliases or {}).items()},
                "latest": max((int(v.version) for v in (m.latest_versions or [])), default=None),
                "tags": dict(m.tags or {}),
            }
            for m in sorted(found, key=lambda m: m.name)
        ]

    def versions(self, name: str, metrics: bool = False) -> list[ModelVersion]:
        """See :meth:`ModelRegistry.versions`."""
        check_model_name(name)
        model = self._call("find the model", lambda: self.client.get_registered_model(name), name)
        aliases: dict[int, list[str]] = {}  # a search leaves the versions' aliases out: the model has them
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(int(number), []).append(alias)
        found = self._call(
            "list the versions",
            lambda: list(_pages(lambda **kw: self.client.search_model_versions(f"name = '{_quote(name)}'", **kw))),
            name,
        )
        versions = [self._version(v, self._metrics_of(v) if metrics else {}) for v in found if v.name == name]
        for version in versions:
            version.aliases = sorted(set(version.aliases) | set(aliases.get(version.version, [])))
        return sorted(versions, key=lambda v: -v.version)

    def version(self, name: str, version: int | str, metrics: bool = False) -> ModelVersion:
        """See :meth:`ModelRegistry.version`."""
        check_model_name(name)
        text = str(version).strip()
        if re.fullmatch(r"[vV]?\d+", text):
            text = text.lstrip("vV")
        elif not text.startswith("@") and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", text):
            raise RegistryError(
                f"version {version!r} of {name!r} is not a version: give a number (3, v3) or an alias (@champion)"
            )
        if not text.isdigit():
            alias = text.lstrip("@")
            found = self.alias_holder(name, alias)
            if found is None:
                raise ModelNotFoundError(
                    f"model {name!r} has no alias {alias!r}; `mlops-nb models show {name}` lists its aliases"
                )
            return self.alias_holder(name, alias, metrics) if metrics else found
        found = self._call("find the version", lambda: self.client.get_model_version(name, text), name, text)
        return self._version(found, self._metrics_of(found) if metrics else {})

    def alias_holder(self, name: str, alias: str, metrics: bool = False) -> ModelVersion | None:
        """See :meth:`ModelRegistry.alias_holder`."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE" and self._model_exists(name):
                return None  # no version holds the alias
            return self._call("find the alias", lambda: self.client.get_model_version_by_alias(name, alias), name)
        return self._version(found, self._metrics_of(found) if metrics else {})

    def metrics(self, name: str, version: int) -> dict[str, float]:
        """The metrics logged with a version (those of the run that logged it)."""
        return self._metrics(self.version(name, version).run_id)

    def _metrics_of(self, found) -> dict[str, float]:
        """A version's metrics: from its ``mlops_nb.metric.*`` tags (what mlops_nb registered), else its run's."""
        tags = found.tags or {}
        tagged = _tagged_metrics(tags)
        return tagged if tagged or tags.get("mlops_nb.model_hash") else self._metrics(found.run_id)

    def _metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        run = self._call("read the version's run", lambda: self.client.get_run(run_id))
        return dict(run.data.metrics)

    def load(self, name: str, version: int) -> Any:
        """See :meth:`ModelRegistry.load`: the scikit-learn flavour's own object, else MLflow's pyfunc."""
        found = self.version(name, version)
        with _quiet(), self._fluent():
            if found.tags.get("mlops_nb.flavor") == "sklearn":
                from mlflow import sklearn as flavour
            else:
                from mlflow import pyfunc as flavour
            return self._load(lambda: flavour.load_model(found.uri), found.uri)

    def load_pyfunc(self, uri: str) -> Any:
        """What MLflow's own client loads for a model URI (``models:/NAME@ALIAS``): ``mlflow.pyfunc.load_model``
        against this store, as a user of MLflow or its scoring server gets it."""
        with _quiet(), self._fluent():
            from mlflow import pyfunc

            return self._load(lambda: pyfunc.load_model(uri), uri)

    def describe(self, name: str, version: int) -> dict[str, Any]:
        """What an app built from a version needs to know of it, as MLflow holds it: ``signature`` (``inputs`` and
        ``outputs``, lists of ``{"name", "type"}``), ``input_example`` (``{"columns", "data"}``, or None),
        ``expected`` (what ``mlflow.pyfunc`` predicts for that example: a smoke test's answer), ``model_uuid`` and
        ``utc_time_created``."""
        import tempfile

        found = self.version(name, version)
        uri = f"models:/{name}/{found.version}"
        with _quiet(), self._fluent(), tempfile.TemporaryDirectory(prefix="mlops_nb-model-") as tmp:
            from mlflow import artifacts, pyfunc
            from mlflow.models import Model

            local = self._call("download the model", lambda: artifacts.download_artifacts(uri, dst_path=tmp), name)
            card = Model.load(local)
            signature = card.signature.to_dict() if card.signature is not None else {}
            example = None
            try:
                frame = card.load_input_example(local)
            except Exception:  # noqa: BLE001 - an example MLflow cannot read back is treated as none
                frame = None
            expected = None
            if frame is not None:
                import pandas as pd

                frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
                example = json.loads(frame.to_json(orient="split", index=False, date_format="iso"))
                model = self._load(lambda: pyfunc.load_model(local), uri)
                try:
                    predicted = model.predict(frame)
                except Exception as exc:  # noqa: BLE001 - the model's own code: one line
                    raise RegistryError(
                        f"{uri} fails on its own input example ({type(exc).__name__}: {str(exc)[:200]}); register "
                        "it with an example it can predict"
                    ) from None
                expected = json.loads(
                    pd.Series(list(getattr(predicted, "tolist", lambda: predicted)())).to_json(orient="values")
                )
        return {
            "signature": {k: json.loads(v) if isinstance(v, str) else v for k, v in signature.items() if v},
            "input_example": example,
            "expected": expected,
            "model_uuid": card.model_uuid,
            "utc_time_created": card.utc_time_created,
            "flavors": sorted(card.flavors),
        }

    def _load(self, function: Callable[[], Any], uri: str) -> Any:
        """Load a model; what fails (a missing artifact, a module the model needs) is one line naming it."""
        try:
            return self._call("load the model", function)
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpickling runs the model's own code: any error, one line
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise RegistryError(
                f"cannot load {uri} from {self.shown_uri}: {type(exc).__name__}: {text}; install what the model "
                "needs (its requirements.txt in MLflow) or load another version"
            ) from None

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, read without importing mlflow for a SQLite store (None: no version)."""
        path = self.sqlite_path
        if path is not None and path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.lock_timeout) as con:
                    row = con.execute(
                        "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", [name, alias]
                    ).fetchone()
                    if row is not None:
                        return int(row[0])
                    known = con.execute("SELECT 1 FROM registered_models WHERE name = ?", [name]).fetchone()
                if known is not None:
                    return None
            except sqlite3.Error:
                pass  # another schema than the one read here: ask MLflow
        found = self.alias_holder(name, alias)
        return found.version if found is not None else None

    def version_metrics(self, name: str, version: int) -> dict[str, float]:
        """See :meth:`ModelRegistry.version_metrics`; a SQLite store is read without importing mlflow."""
        path = self.sqlite_path
        if path is not None and path.exists():
            try:
                with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.lock_timeout)) as con:
                    found = con.execute(
                        "SELECT run_id FROM model_versions WHERE name = ? AND version = ? "
                        "AND current_stage != 'Deleted_Internal'",
                        [name, int(version)],
                    ).fetchone()
                    if found is not None:
                        tags = dict(con.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND "
                                                "version = ?", [name, int(version)]).fetchall())  # fmt: skip
                        tagged = _tagged_metrics(tags)
                        if tagged or tags.get("mlops_nb.model_hash") or not found[0]:
                            return tagged
                        run = con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", [found[0]])
                        return {key: float(value) for key, value in run.fetchall()}
            except sqlite3.Error:
                pass  # another schema than the one read here: ask MLflow
        return dict(self.version(name, version, metrics=True).metrics or {})

    def exists(self, name: str, version: int) -> bool:
        """See :meth:`ModelRegistry.exists`: a SQLite store is read with ``sqlite3`` and a server over HTTP, so a
        cache check never imports mlflow."""
        path = self.sqlite_path
        if path is not None:
            if not path.exists():
                return False
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.lock_timeout) as con:
                    row = con.execute(
                        "SELECT 1 FROM model_versions WHERE name = ? AND version = ? "
                        "AND current_stage != 'Deleted_Internal'",
                        [name, int(version)],
                    ).fetchone()
                return row is not None
            except sqlite3.Error:
                pass  # another schema than the one read here: ask MLflow
        elif self.is_http:
            query = urllib.parse.urlencode({"name": name, "version": str(version)})
            url = f"{self.uri.rstrip('/')}/api/2.0/mlflow/model-versions/get?{query}"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    return bool(json.load(answer).get("model_version"))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
            except (urllib.error.URLError, OSError, ValueError):
                return True  # unreachable now: keep the cache; the registry is asked again when it is needed
        try:
            self.version(name, version)
            return True
        except ModelNotFoundError:
            return False

    def _version(self, found, metrics: dict[str, float]) -> ModelVersion:
        created = getattr(found, "creation_timestamp", None)
        return ModelVersion(
            name=found.name,
            version=int(found.version),
            run_id=found.run_id,
            source=found.source or "",
            created=datetime.fromtimestamp(created / 1000, UTC).replace(tzinfo=None) if created else None,
            tags=dict(found.tags or {}),
            aliases=list(found.aliases or []),
            metrics=metrics,
        )


def _pages(search: Callable[..., Any]) -> Iterator[Any]:
    """Every result of an MLflow search, page by page."""
    token = None
    while True:
        page = search(max_results=1000, page_token=token) if token else search(max_results=1000)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _quote(name: str) -> str:
    """A name inside MLflow's single-quoted filter strings."""
    return name.replace("\\", "\\\\").replace("'", "\\'")


def _param(value: Any) -> str:
    """A parameter value as MLflow stores it (a string of at most 6,000 characters)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]
