"""The errors mlops_nb raises for things a user can fix.

Every user-facing error derives from :class:`MlopsError`. Its message is one line that says what is wrong,
where, and how to fix it; front ends show only that line (the CLI exits 1, magics raise ``UsageError``,
REST handlers answer JSON with ``http_status``). Anything else that escapes is a bug in mlops_nb.
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base of every error a user can act on.

    Attributes:
        http_status: the HTTP status a REST handler answers with for this error.
    """

    http_status = 400

    def __init__(self, message: str):
        # One line, always: front ends print exactly this.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        """The one-line message."""
        return self.args[0]

    def to_dict(self) -> dict:
        """The JSON body a REST handler sends: ``{"error_type", "message"}``."""
        return {"error_type": type(self).__name__, "message": self.message}


class ConfigError(MlopsError):
    """A setting in ``[tool.mlops_nb]``, an ``MLOPS_NB_*`` variable or the project home is invalid."""


class StoreError(MlopsError):
    """A store file cannot be opened or used (unreadable, newer schema, wrong kind of file)."""

    http_status = 500


class StoreBusyError(StoreError):
    """Another process kept a store locked for longer than the lock timeout."""

    http_status = 503


class ArtifactError(MlopsError):
    """Base of artifact store errors."""


class ArtifactNotFoundError(ArtifactError):
    """No artifact has the given hash (or hash prefix)."""

    http_status = 404


class ArtifactCorruptedError(ArtifactError):
    """An artifact's bytes no longer match its hash; it is never deserialized."""

    http_status = 500


class UnsupportedArtifactError(ArtifactError):
    """No serializer can store the given object."""


class NotFoundError(MlopsError):
    """A run, step run or other record named by the user does not exist."""

    http_status = 404


class FeatureStoreError(MlopsError):
    """Base of feature store errors."""


class FeatureNotFoundError(FeatureStoreError):
    """No entity, feature view or feature has the given name (or a view has no online data yet)."""

    http_status = 404


class ValidationError(FeatureStoreError):
    """Data or a name given to the feature store is invalid; nothing was written. The message names the view,
    the column and the row."""


class SchemaChangeError(FeatureStoreError):
    """A feature view or entity was registered again with an incompatible definition."""

    http_status = 409


class RegistryError(MlopsError):
    """The model registry cannot do what was asked: an unreachable tracking URI, a model MLflow cannot log, a
    malformed gate, a version in the wrong approval state. Nothing was changed in the registry."""


class ModelNotFoundError(RegistryError, NotFoundError):
    """No registered model, version or alias has the given name."""

    http_status = 404


class PromotionRefused(RegistryError):
    """A promotion gate refused a version; the message shows the rule and both values, the alias did not move.

    Attributes:
        checks: every rule checked, as dicts (``metric``, ``rule``, ``value``, ``threshold``, ``passed``, ``reason``).
    """

    http_status = 409

    def __init__(self, message: str, checks: list[dict] | None = None):
        super().__init__(message)
        self.checks = list(checks or [])


class ServingError(MlopsError):
    """An app bundle, a scoring server, a deployment or the prediction log cannot do what was asked: a tampered
    bundle, a port in use, a request that does not match the model's signature, an unknown request id."""


class BundleError(ServingError):
    """An app bundle is missing, incomplete or does not match its hash (changed since it was built)."""


class DeployError(ServingError):
    """A deployment step failed (the new version did not start, answer its health check or pass its smoke test);
    traffic stayed with the version that served before."""


class MonitoringError(MlopsError):
    """Monitoring cannot do what was asked: no prediction log or reference, a window with no rows, an unknown
    column, test or override, a malformed alert rule."""


class ScheduleError(MlopsError):
    """A schedule or trigger is invalid (a malformed cron expression, an unknown schedule, a missing target)."""


class PipelineError(MlopsError):
    """The notebook is not a valid pipeline; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = [" ".join(p.split()) for p in problems]
        Exception.__init__(self, "\n".join(self.problems))

    @property
    def message(self) -> str:
        """Every problem, one per line."""
        return self.args[0]


class StepFailedError(MlopsError):
    """A step's body raised, or its outputs could not be stored; in a headless run, the run is recorded as failed.

    Attributes:
        step: the step's name.
        cell_index: the step's cell (0-based).
        ename, evalue: the exception's type and message.
        run_id: the failed run, when one was recorded.
    """

    def __init__(
        self,
        message: str,
        step: str = "",
        cell_index: int | None = None,
        ename: str = "",
        evalue: str = "",
        run_id: str | None = None,
    ):
        super().__init__(message)
        self.step, self.cell_index, self.ename, self.evalue, self.run_id = step, cell_index, ename, evalue, run_id
