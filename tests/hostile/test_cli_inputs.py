"""Hostile input at the command line: malformed notebooks, flags, parameters, names, paths, values and rules.

Each case is one `mlops-nb` call, in-process through click's runner, against one project that holds a recorded
pipeline run, a feature view and a registered model. Every case must fail with one error line (``Error: ...``,
at most 300 characters, no traceback, no raw library exception), and leave every store as it was: the row count
of every table of both DuckDB stores and the hash of every file under ``.mlops/`` are compared before and after.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_nb.project import Project
from mlops_nb.ui.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile_tools import fingerprint, one_error_line  # noqa: E402
from nbtools import write_notebook  # noqa: E402

GOOD = [
    "%load_ext mlops_nb\nimport pandas as pd\nn = 5",
    "%%mlops step make\nframe = pd.DataFrame({'x': range(n)})",
    "%%mlops step total\ntotal = int(frame['x'].sum())",
]


def _raw(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return path.name


def _cells(path: Path, cells: list[dict], **metadata) -> str:
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}, **metadata},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    return _raw(path, json.dumps(nb))


def _code(source, **extra) -> dict:
    return {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": source, **extra}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, mlflow_template):
    """A project with one recorded run of ``good.ipynb``, a feature view ``activity`` and model ``m`` v1, and the
    malformed files the cases name."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import mlops_nb
    from mlops_nb.engine.driver import run

    home = tmp_path_factory.mktemp("hostile")
    (home / "pyproject.toml").write_text("[project]\nname = 'hostile'\n")
    project = Project(home).init()
    shutil.copy(mlflow_template, project.mlflow_db)
    write_notebook(home / "good.ipynb", GOOD)
    run(home / "good.ipynb", executor="notebook", project=project, progress=False)
    fs = project.features
    fs.register_entity("customer", {"customer_id": "int64"})
    fs.register_view("activity", "customer", {"spend": "float64"}, timestamp="ts", ttl="30d")
    frame = pd.DataFrame({"customer_id": [1, 2, 3], "spend": [1.0, 2.0, 3.0],
                          "ts": pd.to_datetime(["2024-01-01"] * 3, utc=True)})  # fmt: skip
    fs.ingest("activity", frame)
    model = LogisticRegression().fit(np.arange(20).reshape(10, 2), [0, 1] * 5)
    mlops_nb.register_model(model, "m", project=project)

    bad = home / "bad"
    bad.mkdir()
    _raw(bad / "not_json.ipynb", "{ this is not json")
    _raw(bad / "a_list.ipynb", "[1, 2, 3]")
    _raw(bad / "empty.ipynb", "")
    _raw(bad / "binary.ipynb", "\x00\x01\x02\xff")
    _cells(bad / "no_cells.ipynb", [])
    _raw(bad / "metadata_list.ipynb", json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": [], "cells": []}))
    _cells(bad / "source_ints.ipynb", [_code([1, 2, 3])])
    _cells(bad / "no_source.ipynb", [{"cell_type": "code", "metadata": {}, "outputs": []}])
    _cells(bad / "cell_not_dict.ipynb", ["%%mlops step a\nx = 1"])
    _cells(bad / "unknown_type.ipynb", [{"cell_type": "sql", "metadata": {}, "source": "select 1"}])
    _raw(bad / "v3.ipynb", json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}))
    _raw(bad / "v99.ipynb", json.dumps({"nbformat": 99, "nbformat_minor": 0, "cells": [], "metadata": {}}))
    _cells(bad / "duplicate.ipynb", [_code("%%mlops step a\nx = 1"), _code("%%mlops step a\ny = 2")])
    _cells(bad / "sql_name.ipynb", [_code("%%mlops step a'; DROP TABLE runs; --\nx = 1")])
    _cells(bad / "unicode_name.ipynb", [_code("%%mlops step schritt_ä😀\nx = 1")])
    _cells(bad / "empty_name.ipynb", [_code("%%mlops step\nx = 1")])
    _cells(bad / "long_name.ipynb", [_code("%%mlops step " + "a" * 5000 + "\nx = 1")])
    _cells(bad / "long_bad_name.ipynb", [_code("%%mlops step 1" + "a" * 5000 + "\nx = 1")])
    _raw(bad / "deep.ipynb", "[" * 200000)
    _cells(bad / "long_type.ipynb", [{"cell_type": "x" * 5000, "metadata": {}, "source": "x = 1"}])
    _raw(bad / "long_format.ipynb", json.dumps({"nbformat": "4" * 5000, "cells": [], "metadata": {}}))
    _cells(bad / "bad_flag.ipynb", [_code("%%mlops step a --frobnicate\nx = 1")])
    _cells(bad / "reads_zero.ipynb", [_code("%%mlops step a --reads /dev/zero\nx = 1")])
    _cells(bad / "reads_traversal.ipynb", [_code("%%mlops step a --reads ../../../etc/passwd\nx = 1")])
    _cells(bad / "reads_missing.ipynb", [_code("%%mlops step a --reads data/nope.csv\nx = 1")])
    _cells(bad / "syntax.ipynb", [_code("%%mlops step a\nx = = 1")])
    _cells(bad / "cycle.ipynb", [_code("%%mlops step a --outputs x\nx = y + 1"), _code("%%mlops step b\ny = x")])
    _cells(bad / "no_kernel.ipynb", [_code("%%mlops step a\nx = 1")], kernelspec=None)
    _cells(bad / "two_params.ipynb", [
        _code("n = 1", metadata={"tags": ["parameters"]}), _code("m = 2", metadata={"tags": ["parameters"]}),
        _code("%%mlops step a\nx = n + m"),
    ])  # fmt: skip
    (bad / "folder.ipynb").mkdir()
    _raw(bad / "params.yaml", "n: [unclosed\n")
    _raw(bad / "params_list.json", "[1, 2]")
    _raw(bad / "ingest.csv", "customer_id,spend,ts\n1,abc,2024-02-01T00:00:00Z\n")
    _raw(bad / "ingest_huge_int.csv", "customer_id,spend,ts\n99999999999999999999999,1.0,2024-02-01T00:00:00Z\n")
    _raw(bad / "ingest_inf.csv", "customer_id,spend,ts\n1,inf,2024-02-01T00:00:00Z\n2,-inf,2024-02-01T00:00:00Z\n")
    _raw(bad / "ingest_nan_key.csv", "customer_id,spend,ts\n,1.0,2024-02-01T00:00:00Z\n")
    _raw(bad / "ingest_missing_column.csv", "customer_id,ts\n1,2024-02-01T00:00:00Z\n")
    _raw(bad / "ingest_bad_time.csv", "customer_id,spend,ts\n1,1.0,yesterday\n")
    _raw(bad / "ingest.txt", "customer_id,spend\n")
    _raw(bad / "ingest_empty.csv", "")
    _raw(bad / "labels.csv", "request_id,label\n")
    _raw(bad / "score.csv", "a,b\nx,y\n")
    return {"home": home, "project": project, "bad": bad}


SAFE = "accepted safely"

# (id, arguments ({bad}: the folder of malformed files), a fragment the error line must hold in lower case, or
# SAFE: a value that is fine to accept, such as SQL in a filter, which must match nothing and change nothing)
CASES = [
    # notebook JSON
    ("nb-not-json", ["run", "{bad}/not_json.ipynb"], "not_json.ipynb"),
    ("nb-a-list", ["run", "{bad}/a_list.ipynb"], "a_list.ipynb"),
    ("nb-empty-file", ["dag", "{bad}/empty.ipynb"], "empty.ipynb"),
    ("nb-binary", ["dag", "{bad}/binary.ipynb"], "binary.ipynb"),
    ("nb-no-cells", ["run", "{bad}/no_cells.ipynb"], "no_cells.ipynb"),
    ("nb-source-ints", ["run", "{bad}/source_ints.ipynb"], "source_ints.ipynb"),
    ("nb-no-source", ["run", "{bad}/no_source.ipynb"], "no_source.ipynb"),
    ("nb-cell-not-object", ["dag", "{bad}/cell_not_dict.ipynb"], "cell_not_dict.ipynb"),
    ("nb-unknown-cell-type", ["run", "{bad}/unknown_type.ipynb"], "unknown_type.ipynb"),
    ("nb-format-3", ["run", "{bad}/v3.ipynb"], "v3.ipynb"),
    ("nb-format-99", ["dag", "{bad}/v99.ipynb"], "v99.ipynb"),
    ("nb-is-a-folder", ["run", "{bad}/folder.ipynb"], "folder.ipynb"),
    ("nb-missing", ["run", "{bad}/nope.ipynb"], "nope.ipynb"),
    ("nb-not-ipynb", ["run", "{bad}/params.yaml"], "params.yaml"),
    ("nb-duplicate-step", ["run", "{bad}/duplicate.ipynb"], "'a'"),
    ("nb-long-invalid-step-name", ["dag", "{bad}/long_bad_name.ipynb"], "must start with a letter"),
    ("nb-nested-too-deeply", ["run", "{bad}/deep.ipynb"], "nested too deeply"),
    ("nb-long-cell-type", ["run", "{bad}/long_type.ipynb"], "cell_type"),
    ("nb-long-nbformat", ["dag", "{bad}/long_format.ipynb"], "nbformat"),
    ("nb-sql-in-step-name", ["run", "{bad}/sql_name.ipynb"], "cell 1"),
    ("nb-unicode-step-name", ["run", "{bad}/unicode_name.ipynb"], "step name"),
    ("nb-metadata-a-list", ["dag", "{bad}/metadata_list.ipynb"], "metadata_list.ipynb"),
    ("nb-empty-step-name", ["run", "{bad}/empty_name.ipynb"], "step"),
    ("nb-5000-char-step-name", ["dag", "{bad}/long_name.ipynb"], "step name"),
    ("nb-unknown-step-flag", ["run", "{bad}/bad_flag.ipynb"], "--frobnicate"),
    ("nb-reads-dev-zero", ["run", "{bad}/reads_zero.ipynb"], "/dev/zero"),
    ("nb-reads-traversal", ["run", "{bad}/reads_traversal.ipynb"], "etc/passwd"),
    ("nb-reads-missing", ["run", "{bad}/reads_missing.ipynb"], "data/nope.csv"),
    ("nb-syntax-error", ["run", "{bad}/syntax.ipynb"], "cell"),
    ("nb-cycle", ["run", "{bad}/cycle.ipynb"], "cell"),
    ("nb-no-kernelspec", ["run", "{bad}/no_kernel.ipynb"], "--kernel"),
    ("nb-two-parameter-cells", ["run", "{bad}/two_params.ipynb"], "parameters"),
    # parameters and run flags
    ("param-unknown", ["run", "{home}/good.ipynb", "-p", "nope", "1"], "nope"),
    ("param-wrong-type", ["run", "{home}/good.ipynb", "-p", "n", "five"], "'n'"),
    ("param-huge-int", ["run", "{home}/good.ipynb", "-p", "n", "9" * 400], "'n'"),
    ("param-file-bad-yaml", ["run", "{home}/good.ipynb", "-f", "{bad}/params.yaml"], "params.yaml"),
    ("param-file-a-list", ["run", "{home}/good.ipynb", "-f", "{bad}/params_list.json"], "params_list.json"),
    ("run-unknown-executor", ["run", "{home}/good.ipynb", "--executor", "quantum"], "quantum"),
    ("run-jobs-zero", ["run", "{home}/good.ipynb", "--executor", "dag", "-j", "0"], "--jobs"),
    ("run-from-unknown-step", ["run", "{home}/good.ipynb", "--executor", "dag", "--from", "nope"], "nope"),
    ("run-only-sql", ["run", "{home}/good.ipynb", "--executor", "dag", "--only", "a;drop table runs"], "drop table"),
    ("run-step-timeout-negative", ["run", "{home}/good.ipynb", "--step-timeout", "-1"], "timeout"),
    ("run-step-timeout-nan", ["run", "{home}/good.ipynb", "--step-timeout", "nan"], "timeout"),
    ("run-unknown-kernel", ["run", "{home}/good.ipynb", "--no-cache", "--kernel", "no-such-kernel"], "no-such-kernel"),
    (
        "run-scheduler-empty-label",
        ["run", "{home}/good.ipynb", "--no-cache", "--executor", "dask", "--scheduler", "tcp://a..b:1"],
        "a..b",
    ),
    (
        "run-bad-scheduler",
        ["run", "{home}/good.ipynb", "--no-cache", "--executor", "dask", "--scheduler", "tcp://256.1.1.1:99999"],
        "scheduler",
    ),  # fmt: skip
    # reading the stores
    ("runs-limit-negative", ["runs", "--limit", "-1"], "--limit"),
    ("runs-limit-huge", ["runs", "--limit", "9" * 30], "--limit"),
    ("runs-pipeline-sql", ["runs", "--pipeline", "x' OR '1'='1"], SAFE),
    ("show-unknown-run", ["show", "no-such-run"], "no-such-run"),
    ("show-sql-run", ["show", "' OR 1=1 --"], "or 1=1"),
    ("show-timeline-bad-suffix", ["show", "--timeline", "{bad}/t.gif"], "t.gif"),
    ("lineage-unknown", ["lineage", "nothing-like-this"], "nothing-like-this"),
    ("lineage-depth-zero", ["lineage", "frame", "--depth", "0"], "--depth"),
    ("lineage-png-into-missing-folder", ["lineage", "frame", "--png", "{bad}/no/such/dir/x.png"], "x.png"),
    ("dag-png-bad-suffix", ["dag", "{home}/good.ipynb", "--png", "{bad}/x.bmp"], "x.bmp"),
    # feature store
    ("features-show-unknown-view", ["features", "show", "nope"], "nope"),
    ("features-show-sql-view", ["features", "show", "activity; DROP TABLE views"], "activity; drop table views"),
    ("features-stats-traversal-view", ["features", "stats", "../../etc"], "../../etc"),
    ("ingest-unknown-view", ["features", "ingest", "nope", "{bad}/ingest.csv"], "nope"),
    ("ingest-bad-float", ["features", "ingest", "activity", "{bad}/ingest.csv"], "spend"),
    ("ingest-int-beyond-int64", ["features", "ingest", "activity", "{bad}/ingest_huge_int.csv"], "customer_id"),
    ("ingest-inf", ["features", "ingest", "activity", "{bad}/ingest_inf.csv"], "spend"),
    ("ingest-null-key", ["features", "ingest", "activity", "{bad}/ingest_nan_key.csv"], "customer_id"),
    ("ingest-missing-column", ["features", "ingest", "activity", "{bad}/ingest_missing_column.csv"], "spend"),
    ("ingest-bad-timestamp", ["features", "ingest", "activity", "{bad}/ingest_bad_time.csv"], "ts"),
    ("ingest-unknown-format", ["features", "ingest", "activity", "{bad}/ingest.txt"], "ingest.txt"),
    ("ingest-empty-file", ["features", "ingest", "activity", "{bad}/ingest_empty.csv"], "ingest_empty.csv"),
    ("ingest-missing-file", ["features", "ingest", "activity", "{bad}/none.csv"], "none.csv"),
    ("materialize-unknown-view", ["features", "materialize", "nope"], "nope"),
    # registry
    ("models-show-unknown", ["models", "show", "nope"], "nope"),
    ("models-approve-unknown-version", ["models", "approve", "m", "99"], "99"),
    ("models-approve-version-text", ["models", "approve", "m", "latest'--"], "version"),
    ("models-promote-bad-gate", ["models", "promote", "m", "1", "--gate", "accuracy >>= 0.5"], ">>= 0.5"),
    ("models-promote-unknown-alias-chars", ["models", "promote", "m", "1", "--alias", "champ ion!"], "champ ion!"),
    ("models-promote-nan-gate", ["models", "promote", "m", "1", "--gate", "accuracy >= nan"], "nan"),
    ("models-rollback-never-held", ["models", "rollback", "m", "--alias", "champion"], "champion"),
    ("build-unknown-model", ["build", "nope/1"], "nope"),
    ("build-bad-spec", ["build", "m@@champion"], "@champion"),
    ("build-bad-feature-ref", ["build", "m/1", "--feature", "no_colon"], "no_colon"),
    # serving, labels, monitoring, schedules
    ("deploy-status-unknown", ["deploy", "nope", "--rollback"], "nope"),
    ("deploy-canary-over-100", ["deploy", "m/1", "--canary", "150"], "--canary"),
    ("deploy-canary-nan", ["deploy", "m/1", "--canary", "nan"], "--canary"),
    ("deploy-window-negative", ["deploy", "m/1", "--window", "-5"], "--window"),
    ("serve-host-not-an-address", ["serve", "m/1", "--host", "999.1.1.1"], "999.1.1.1"),
    ("serve-host-empty-label", ["serve", "m/1", "--host", "a..b"], "a..b"),
    ("serve-host-empty", ["serve", "m/1", "--host", ""], "--host is empty"),
    ("deploy-host-not-an-address", ["deploy", "m/1", "--host", "no-such-host.invalid"], "no-such-host.invalid"),
    ("score-missing-file", ["score", "m/1", "{bad}/nope.parquet"], "nope.parquet"),
    ("labels-empty", ["labels", "{bad}/labels.csv"], "labels.csv"),
    ("monitor-bad-window", ["monitor", "m", "--window", "forever"], "forever"),
    ("monitor-bad-until", ["monitor", "m", "--until", "2024-13-45"], "2024-13-45"),
    ("monitor-bad-rule", ["monitor", "m", "--rule", "drift_share >"], "drift_share >"),
    ("monitor-rule-unknown-metric", ["monitor", "m", "--rule", "vibes > 0.3"], "vibes"),
    ("monitor-rule-bad-action", ["monitor", "m", "--rule", "drift_share > 0.3 => rm -rf /"], "rm -rf /"),
    ("monitor-bad-column-test", ["monitor", "m", "--column", "spend=astrology"], "astrology"),
    ("monitor-unknown-model", ["monitor", "nope"], "nope"),
    ("schedule-bad-cron", ["schedule", "add", "{home}/good.ipynb", "--cron", "61 25 * * *"], "61 25 * * *"),
    ("schedule-cron-six-fields", ["schedule", "add", "{home}/good.ipynb", "--cron", "* * * * * *"], "cron"),
    ("schedule-cron-text", ["schedule", "add", "{home}/good.ipynb", "--cron", "whenever"], "whenever"),
    ("schedule-no-when", ["schedule", "add", "{home}/good.ipynb"], "--cron"),
    (
        "schedule-name-sql",
        ["schedule", "add", "{home}/good.ipynb", "--cron", "0 3 * * *", "--name", "x'; --"],
        "x'; --",
    ),
    ("schedule-remove-unknown", ["schedule", "remove", "nope"], "nope"),
    # retention
    ("gc-older-than-negative", ["gc", "--older-than", "-5d"], "-5d"),
    ("gc-older-than-nan", ["gc", "--older-than", "nan"], "nan"),
    ("gc-older-than-huge", ["gc", "--older-than", "1e308w"], "1e308w"),
    (
        "schedule-on-data-traversal",
        ["schedule", "add", "{home}/good.ipynb", "--on-data", "../../../etc"],
        "../../../etc",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_command_line_input_gets_one_line_and_changes_no_store(hostile, args, fragment):
    home, bad = hostile["home"], hostile["bad"]
    before = fingerprint(hostile["project"])
    argv = ["--home", str(home), *(a.replace("{bad}", str(bad)).replace("{home}", str(home)) for a in args)]
    result = CliRunner().invoke(cli, argv, obj={}, catch_exceptions=True)
    said = result.output  # stdout and stderr as the terminal shows them
    if fragment is SAFE:  # a filter value with SQL in it: a valid query that matches nothing
        assert result.exit_code == 0 and result.exception is None, said
        assert fingerprint(hostile["project"]) == before
        return
    line = one_error_line(said, result.exit_code, result.exception)
    if fragment is not None:
        assert fragment in line.lower(), f"the error does not name {fragment!r}: {line}"
    assert fingerprint(hostile["project"]) == before, f"a store changed under a refused input: {line}"
