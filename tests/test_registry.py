"""The model registry on a real MLflow SQLite store: registration with lineage tags, gates, approval, rollback,
history, and one clear line for every bad input with the registry left unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import mlops_nb
from mlops_nb.exceptions import PromotionRefused, RegistryError
from mlops_nb.ui.cli import cli


def _data(seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = (X.a + 0.5 * X.b + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return X, y


def _model(C: float = 1.0):
    X, y = _data()
    return LogisticRegression(C=C).fit(X, y), X


def _register(project, metrics, C: float = 1.0, name: str = "churn"):
    model, X = _model(C)
    return mlops_nb.register_model(model, name, input_example=X.head(3), metrics=metrics, project=project)


def _state(project, name="churn"):
    """What a bad call must leave unchanged: the versions with their tags and aliases, and the models."""
    registry = project.registry
    models = registry.models()
    if not any(m["name"] == name for m in models):
        return models, []
    return models, [(v.version, sorted(v.tags.items()), sorted(v.aliases)) for v in registry.versions(name)]


def test_register_then_mlflow_loads_the_champion_our_store_holds(registry_project, monkeypatch):
    project = registry_project
    version = _register(project, {"accuracy": 0.9, "f1": 0.8})
    assert (version.name, version.version) == ("churn", 1)
    assert version.tags["mlops_nb.model_hash"] and version.tags["mlops_nb.flavor"] == "sklearn"
    assert project.artifacts.exists(version.model_hash)
    mlops_nb.promote("churn", 1, project=project)

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    mlflow.set_tracking_uri(project.tracking_uri)
    try:
        served = mlflow.pyfunc.load_model("models:/churn@champion")
        run = mlflow.MlflowClient(project.tracking_uri).get_run(version.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    X, _ = _data(seed=1)
    ours = project.artifacts.get(version.model_hash)
    assert (served.predict(X) == ours.predict(X)).all()
    assert (mlops_nb.load_model("churn", "@champion", project=project).predict(X) == ours.predict(X)).all()
    assert run.data.metrics == {"accuracy": 0.9, "f1": 0.8}
    assert served.metadata.signature is not None  # from the input example
    # the registry's artifacts live under the project, not in the current folder's ./mlruns
    assert any(project.mlartifacts_dir.rglob("MLmodel"))
    # the event is indexed in the metadata store
    assert [e["action"] for e in project.metadata.model_events("churn")] == ["register", "promote"]


def test_version_metrics_read_from_sqlite_are_what_mlflow_says(registry_project):
    """What monitoring reads without importing MLflow equals MLflow's answer, for our versions and a plain one."""
    import mlflow

    project = registry_project
    ours = _register(project, {"accuracy": 0.75, "roc_auc": 0.8}, name="metrics_fast")
    registry = project.registry
    assert registry.version_metrics("metrics_fast", ours.version) == {"accuracy": 0.75, "roc_auc": 0.8}
    assert (
        registry.version_metrics("metrics_fast", ours.version)
        == registry.version("metrics_fast", ours.version, metrics=True).metrics
    )
    client = mlflow.MlflowClient(project.tracking_uri)  # a version MLflow made alone: its run's metrics
    experiment = client.create_experiment("plain-metrics")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "f1", 0.5)
    client.log_metric(run.info.run_id, "f1", 0.6)  # the latest value counts
    client.create_registered_model("plain_metrics")
    plain = client.create_model_version("plain_metrics", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert registry.version_metrics("plain_metrics", int(plain.version)) == {"f1": 0.6}
    assert registry.version("plain_metrics", int(plain.version), metrics=True).metrics == {"f1": 0.6}
    client.delete_model_version("plain_metrics", plain.version)
    with pytest.raises(mlops_nb.MlopsError):  # a deleted version is not read from the file either
        registry.version_metrics("plain_metrics", int(plain.version))


def test_gates_absolute_and_relative(registry_project):
    project = registry_project
    _register(project, {"accuracy": 0.9, "f1": 0.80})
    first = mlops_nb.promote("churn", 1, gates={"accuracy": ">= 0.8", "f1": ">= champion - 0.01"}, project=project)
    assert first.outcome == "promoted" and first.previous is None
    assert "no champion yet" in first.checks[1]["reason"]

    _register(project, {"accuracy": 0.95, "f1": 0.795})
    second = mlops_nb.promote("churn", 2, gates={"f1": ">= champion - 0.01"}, project=project)
    assert second.outcome == "promoted" and second.previous == 1
    assert second.line() == "churn v2 is now champion (was v1) — f1 0.795 >= champion v1 0.8 - 0.01 = 0.79"

    _register(project, {"accuracy": 0.99, "f1": 0.70})
    before = _state(project)
    with pytest.raises(PromotionRefused) as refused:
        mlops_nb.promote("churn", 3, gates={"accuracy": ">= 0.8", "f1": ">= champion - 0.01"}, project=project)
    assert str(refused.value) == "churn v3 refused for champion: f1 0.7 < champion v2 0.795 - 0.01 = 0.785"
    assert [c["passed"] for c in refused.value.checks] == [True, False]
    assert project.registry.alias_holder("churn", "champion").version == 2
    after = _state(project)
    assert after[1][1:] == before[1][1:] and after[1][0][2] == before[1][0][2]  # v3 gained only its refusal tag
    refusal = project.metadata.list_runs(kind="promotion")[0]
    assert refusal.status == "failed" and "f1 0.7 < champion v2" in refusal.error and refusal.trigger == "api"

    with pytest.raises(PromotionRefused, match="accuracy 0.99 <= 0.99"):
        mlops_nb.promote("churn", 3, gates={"accuracy": "> 0.99 "}, project=project)
    assert mlops_nb.promote("churn", 3, gates={"f1": ">= champion * 0.85"}, project=project).outcome == "promoted"


def test_approval_moves_the_alias_only_when_approved(registry_project):
    project = registry_project
    _register(project, {"f1": 0.8})
    mlops_nb.promote("churn", 1, project=project)
    _register(project, {"f1": 0.81})
    pending = mlops_nb.promote("churn", 2, gates={"f1": ">= champion"}, require_approval=True, project=project)
    assert pending.outcome == "pending" and "mlops-nb models approve churn 2" in pending.line()
    assert project.registry.version("churn", 2).approval == "pending"
    assert project.registry.alias_holder("churn", "champion").version == 1

    approved = mlops_nb.approve("churn", 2, by="ann", note="report read", project=project)
    assert approved.outcome == "approved" and approved.previous == 1
    assert project.registry.alias_holder("churn", "champion").version == 2
    v2 = project.registry.version("churn", 2)
    assert (v2.approval, v2.tags["approval.by"], v2.tags["approval.note"]) == ("approved", "ann", "report read")
    runs = project.metadata.list_runs(kind="promotion")
    assert runs[0].trigger == "approval" and runs[0].params["action"] == "approve"

    _register(project, {"f1": 0.9})
    mlops_nb.promote("churn", 3, require_approval=True, project=project)
    rejected = mlops_nb.reject("churn", 3, by="bob", note="drifts", project=project)
    assert rejected.outcome == "rejected" and project.registry.alias_holder("churn", "champion").version == 2
    before = _state(project)
    with pytest.raises(
        RegistryError,
        match=r"cannot approve churn v3: it is not waiting for approval \(approval: "
        r"rejected\)",
    ):
        mlops_nb.approve("churn", 3, project=project)
    with pytest.raises(RegistryError, match="approval: never asked for"):
        mlops_nb.approve("churn", 1, project=project)
    assert _state(project) == before


def test_rollback_and_history(registry_project):
    project = registry_project
    for f1 in (0.7, 0.8, 0.9):
        version = _register(project, {"f1": f1})
        mlops_nb.promote("churn", version.version, project=project)
    assert project.registry.alias_holder("churn", "champion").version == 3
    back = mlops_nb.rollback("churn", project=project)
    assert (back.version, back.previous, back.outcome) == (2, 3, "rolled back")
    assert mlops_nb.rollback("churn", project=project).version == 1
    before = _state(project)
    with pytest.raises(RegistryError, match="cannot roll back churn champion: it has no earlier holder"):
        mlops_nb.rollback("churn", project=project)
    assert _state(project) == before
    events = mlops_nb.model_history("churn", project=project)
    moves = [(e["action"], e.get("from"), e["version"]) for e in events if e["action"] != "register"]
    assert moves == [("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1)]
    assert all(e["by"] for e in events)

    # the index is rebuilt from MLflow, the source of truth
    project.metadata.sql("SELECT 1")  # readable
    promotions = project.metadata.list_runs(kind="promotion")
    assert len(promotions) == 5
    with project.metadata._connect(write=True) as con:  # as if the process died after writing MLflow
        con.execute("DELETE FROM model_events")
        con.execute("DELETE FROM runs WHERE id = ?", [promotions[0].id])
    from mlops_nb.promotion import reindex

    assert reindex(project, "churn") == len(events)  # every event indexed again, one with its run
    assert [e["key"] for e in project.metadata.model_events("churn")] == [e["key"] for e in events]
    restored = project.metadata.get_run(promotions[0].id)
    assert (restored.kind, restored.status, restored.params["action"]) == ("promotion", "succeeded", "rollback")
    assert reindex(project, "churn") == 0


def test_cli_models(registry_project):
    project = registry_project
    _register(project, {"f1": 0.8})
    _register(project, {"f1": 0.7})

    def invoke(*args):
        return CliRunner().invoke(cli, ["--home", str(project.home), "models", *args], obj={})

    ok = invoke("promote", "churn", "1", "--gate", "f1=>= 0.75")
    assert ok.exit_code == 0 and ok.output.startswith("churn v1 is now champion — f1 0.8 >= 0.75")
    refused = invoke("promote", "churn", "2", "--gate", "f1=>= champion - 0.05")
    assert refused.exit_code == 1
    assert refused.output.strip() == "Error: churn v2 refused for champion: f1 0.7 < champion v1 0.8 - 0.05 = 0.75"
    listed = invoke("list")
    assert "churn" in listed.output and "champion=v1" in listed.output
    shown = invoke("show", "churn")
    assert shown.exit_code == 0 and "v1" in shown.output and "champion" in shown.output and "f1" in shown.output
    history = invoke("history", "churn", "--json")
    import json

    actions = [e["action"] for e in json.loads(history.output)]
    assert actions == ["register", "register", "promote", "refuse"]
    assert project.metadata.list_runs(kind="promotion")[0].trigger == "cli"
    for args in (["promote", "--help"], ["approve", "--help"], ["history", "--help"]):
        assert invoke(*args).exit_code == 0
    outside = CliRunner().invoke(cli, ["--home", str(project.home), "lineage", "models:/churn@champion"], obj={})
    assert outside.exit_code == 1
    assert outside.output.startswith("Error: models:/churn/1 was registered outside a pipeline step, so it has no")
    assert outside.output.count("\n") == 1


class _Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def predict(self, X):
        return np.zeros(len(X))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: mlops_nb.promote("nope", 1, project=p), "no model is registered as 'nope'"),
        (lambda p: mlops_nb.promote("churn", 9, project=p), "model 'churn' has no version 9"),
        (lambda p: mlops_nb.promote("churn", 1, gates={"auc": ">= 0.5"}, project=p), "has no metric 'auc'"),
        (
            lambda p: mlops_nb.promote("churn", 1, gates={"f1": "at least 0.5"}, project=p),
            "'at least 0.5' is not a rule",
        ),
        (lambda p: mlops_nb.promote("churn", 1, gates=["f1"], project=p), "gates must be a dict"),
        (lambda p: mlops_nb.promote("churn", 1, alias="v2", project=p), "alias 'v2' is not valid"),
        (lambda p: mlops_nb.promote("churn", "@gold", project=p), "model 'churn' has no alias 'gold'"),
        (lambda p: mlops_nb.approve("churn", 1, project=p), "it is not waiting for approval"),
        (lambda p: mlops_nb.reject("churn", 1, project=p), "it is not waiting for approval"),
        (lambda p: mlops_nb.rollback("churn", project=p), "no version holds that alias"),
        (
            lambda p: mlops_nb.register_model(_Unpicklable(), "churn", project=p),
            "the _Unpicklable cannot be pickled (pickle: TypeError: cannot pickle '_thread.lock'",
        ),
        (lambda p: mlops_nb.register_model(object(), "churn", project=p), "has no predict()"),
        (lambda p: mlops_nb.register_model(_model()[0], "bad/name", project=p), "model name 'bad/name' is not valid"),
        (lambda p: mlops_nb.register_model(_model()[0], "churn", metrics={"f1": "high"}, project=p), "not a number"),
        (lambda p: mlops_nb.load_model("churn", 7, project=p), "has no version 7"),
        (lambda p: mlops_nb.promote("churn", "3.0", project=p), "'3.0' of 'churn' is not a version: give a number"),
        (lambda p: mlops_nb.promote("churn", 1, trigger="cron", project=p), "trigger 'cron' is not one of"),
        (lambda p: mlops_nb.promote("churn", 1, by="", project=p), "must name who acts"),
        (lambda p: mlops_nb.promote("churn", 1, gates={"f1": ">= champoin"}, project=p), "no version of churn holds"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(registry_project, call, message):
    project = registry_project
    _register(project, {"f1": 0.8})
    before = _state(project), project.metadata.sql("SELECT count(*) AS n FROM runs").n[0]
    with pytest.raises(mlops_nb.MlopsError) as error:
        call(project)
    assert message in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) <= 300
    assert "Traceback" not in str(error.value)
    assert (_state(project), project.metadata.sql("SELECT count(*) AS n FROM runs").n[0]) == before


def test_unreachable_tracking_uri_is_named(project, monkeypatch):
    monkeypatch.setenv("MLOPS_NB_TRACKING_URI", "http://127.0.0.1:9")
    from mlops_nb.project import Project

    project = Project(project.home)
    with pytest.raises(RegistryError) as error:
        mlops_nb.register_model(_model()[0], "churn", project=project)
    assert "the MLflow tracking server http://127.0.0.1:9 is unreachable" in str(error.value)
    with pytest.raises(RegistryError, match="127.0.0.1:9 is unreachable"):
        mlops_nb.promote("churn", 1, project=project)


def test_the_users_own_mlflow_settings_are_left_as_they_were(registry_project, monkeypatch, tmp_path):
    import mlflow

    theirs = f"sqlite:///{tmp_path / 'theirs.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    version = _register(registry_project, {"f1": 0.8})
    assert version.version == 1 and registry_project.registry.uri != theirs
    assert mlflow.get_tracking_uri() == theirs and "MLFLOW_REGISTRY_URI" not in __import__("os").environ
    assert not (tmp_path / "theirs.db").exists()  # nothing of ours went to the user's store


def test_gate_edge_cases(registry_project):
    project = registry_project
    _register(project, {"f1": 0.8})
    mlops_nb.promote("churn", "v1", project=project)  # v1 as the CLI prints it
    _register(project, {"f1": 0.79996})
    with pytest.raises(PromotionRefused) as refused:  # 'champion-0.00001' is the champion minus a margin
        mlops_nb.promote("churn", 2, gates={"f1": ">= champion-0.00001"}, project=project)
    assert "f1 0.79996 < champion v1 0.8 - 1e-05 = 0.79999" in str(refused.value)  # digits enough to differ
    _register(project, {"f1": float("nan")})
    with pytest.raises(PromotionRefused, match="f1 is nan"):
        mlops_nb.promote("churn", 3, gates={"f1": ">= 0.5"}, project=project)
    mlops_nb.promote("churn", 3, project=project)  # no gates: a person's call
    with pytest.raises(RegistryError, match=r"champion \(churn v3\) has f1 = nan"):
        mlops_nb.promote("churn", 2, gates={"f1": ">= champion - 0.01"}, project=project)


def test_a_stale_approval_is_refused_and_approving_the_holder_moves_nothing(registry_project):
    project = registry_project
    for f1 in (0.8, 0.81, 0.82):
        _register(project, {"f1": f1})
    mlops_nb.promote("churn", 1, project=project)
    mlops_nb.promote("churn", 2, gates={"f1": ">= champion"}, require_approval=True, project=project)
    mlops_nb.promote("churn", 3, project=project)  # champion moved on while v2 waited
    before = _state(project)
    with pytest.raises(RegistryError, match="champion moved from v1 to v3 since its gates were checked"):
        mlops_nb.approve("churn", 2, project=project)
    assert _state(project) == before
    mlops_nb.promote("churn", 3, require_approval=True, project=project)  # v3 holds it already: unchanged
    mlops_nb.promote("churn", 1, require_approval=True, project=project)
    assert mlops_nb.approve("churn", 1, note=None, project=project).outcome == "approved"
    back = mlops_nb.rollback("churn", project=project)
    assert (back.version, back.previous) == (3, 1)


def test_newcomer_paths(registry_project, tmp_path, monkeypatch):
    """What a first-time user tried: the alias a version waits for, a stale second request, MLflow's URI form,
    a refused promotion's JSON, a mistyped tracking URI, lineage of a file a step read."""
    project = registry_project
    _register(project, {"f1": 0.8})
    _register(project, {"f1": 0.9})
    mlops_nb.promote("churn", 1, project=project)
    assert mlops_nb.promote("churn", 2, project=project).line().endswith("— no gates checked")
    mlops_nb.rollback("churn", project=project)
    mlops_nb.promote("churn", 2, require_approval=True, project=project)
    with pytest.raises(RegistryError, match="v2 already waits for approval to become champion"):
        mlops_nb.promote("churn", 2, alias="staging", require_approval=True, project=project)
    with pytest.raises(RegistryError, match="no version holds that alias"):
        mlops_nb.rollback("churn", alias="staging", project=project)
    X, _ = _data(seed=3)
    assert (mlops_nb.load_model("models:/churn@champion", project=project).predict(X) == _model()[0].predict(X)).all()

    def invoke(*args):
        return CliRunner().invoke(cli, ["--home", str(project.home), *args], obj={})

    shown = invoke("models", "show", "churn")
    assert "pending → champion" in shown.output
    refused = invoke("models", "promote", "churn", "2", "--gate", "f1 >= 0.95", "--json")
    assert refused.exit_code == 1 and '"outcome": "refused"' in refused.output

    monkeypatch.setenv("MLOPS_NB_TRACKING_URI", f"sqlite:///{tmp_path / 'typo' / 'x.db'}")
    wrong = invoke("models", "list")
    assert wrong.exit_code == 1 and "does not exist; fix MLOPS_NB_TRACKING_URI" in wrong.output
    assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("MLOPS_NB_TRACKING_URI", "bogus://x")
    assert "is not one MLflow can keep a model registry in" in invoke("models", "list").output
