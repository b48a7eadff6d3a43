"""The drift engine against SciPy computations of the same tests, and Evidently's choice of test per column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from mlops_nb.exceptions import MonitoringError
from mlops_nb.monitoring.drift import data_drift, default_test, infer_type


def frame(n: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Mixed columns: normal, gamma, a rounded float with few values, strings, small ints, a binary flag."""
    rng = np.random.default_rng(seed)
    s = shift or {}
    p = min(s.get("plan", 0.0), 0.3)
    return pd.DataFrame(
        {
            "age": rng.normal(40 + s.get("age", 0.0), 10, n),
            "spend": rng.gamma(2.0 + s.get("spend", 0.0), 30.0, n),
            "score": np.round(rng.normal(s.get("score", 0.0), 1, n), 1),
            "plan": rng.choice(["basic", "plus", "pro", "team"], n, p=[0.4 - p, 0.3, 0.2, 0.1 + p]),
            "calls": rng.integers(0, 4 + int(s.get("calls", 0)), n),
            "flag": rng.random(n) < 0.3 + s.get("flag", 0.0),
            "visits": rng.poisson(8 + s.get("visits", 0.0), n),
        }
    )


def clean(series: pd.Series) -> pd.Series:
    return series.replace([np.inf, -np.inf], np.nan).dropna()


def scipy_score(test: str, ref: pd.Series, cur: pd.Series) -> float:
    """The same test computed straight from SciPy (Evidently's formulas), column by column."""
    ref, cur = clean(ref), clean(cur)
    keys = list(set(ref.unique()) | set(cur.unique()))
    ref_counts = np.array([(ref == k).sum() for k in keys], float)
    cur_counts = np.array([(cur == k).sum() for k in keys], float)
    if test == "ks":
        return stats.ks_2samp(ref, cur).pvalue
    if test == "wasserstein":
        return stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    if test == "chisquare":
        return stats.chisquare(cur_counts, ref_counts * len(cur) / len(ref)).pvalue
    if test == "z":
        first = sorted(keys)[0]
        a, b = (ref != first).astype(float), (cur != first).astype(float)
        p1, p2 = a.mean(), b.mean()
        pooled = (a.sum() + b.sum()) / (len(a) + len(b))
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
        return 2 * (1 - stats.norm.cdf(abs(z)))
    if test in ("jensenshannon", "psi"):
        if ref.dtype.kind in "fiu" and ref.nunique() > 20:
            edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
            r, c = np.histogram(ref, edges)[0] / len(ref), np.histogram(cur, edges)[0] / len(cur)
        else:
            r, c = ref_counts / len(ref), cur_counts / len(cur)
        if test == "jensenshannon":
            return distance.jensenshannon(r, c)
        r, c = r.copy(), c.copy()
        for share in (r, c):
            low = share[share != 0].min()
            share[share == 0] = low / 10**6 if low <= 0.0001 else 0.0001
        return float(np.sum((r - c) * np.log(r / c)))
    raise AssertionError(test)


@pytest.mark.parametrize("n_ref", [600, 4000])
def test_every_default_verdict_and_score_matches_scipy(n_ref):
    ref = frame(n_ref, 1)
    cur = frame(3000, 2, {"age": 3.0, "plan": 0.2, "calls": 1})
    ref.loc[::97, "age"] = np.nan  # NaN and ±inf are dropped before the tests
    cur.loc[::89, "spend"] = np.inf
    cur.loc[::83, "spend"] = -np.inf
    result = data_drift(ref, cur)
    assert {c.column for c in result.columns} == set(ref.columns)
    for column in result.columns:
        expected = scipy_score(column.test, ref[column.column], cur[column.column])
        assert column.score == pytest.approx(expected, rel=1e-7, abs=1e-12), column
    chosen = {c.column: c.test for c in result.columns}
    if n_ref <= 1000:
        assert chosen == {"age": "ks", "spend": "ks", "score": "ks", "plan": "chisquare", "calls": "chisquare",
                          "flag": "z", "visits": "ks"}  # fmt: skip
    else:
        assert chosen == {"age": "wasserstein", "spend": "wasserstein", "score": "wasserstein",
                          "plan": "jensenshannon", "calls": "jensenshannon", "flag": "jensenshannon",
                          "visits": "wasserstein"}  # fmt: skip
    assert result.column("age").reference_rows == n_ref - len(ref.loc[::97])
    assert result.column("spend").current_rows == 3000 - len(set(range(0, 3000, 89)) | set(range(0, 3000, 83)))


def test_drift_injected_in_chosen_columns_is_found_in_exactly_those_columns():
    # the test branch (a small reference: p-values, here against a current of the same size, since a chi-square
    # against a much larger current flags noise, in Evidently as here) and the distance branch
    # (each p-value test flags noise at its 5% level: the seeds are fixed so that the clean sample is clean)
    for n_ref, n_cur in ((800, 800), (20_000, 20_000)):
        ref = frame(n_ref, 21)
        same = data_drift(ref, frame(n_cur, 4))
        assert same.drifted == [] and not same.dataset_drift and same.share == 0.0, same.to_dict()["columns"]
        shifted = data_drift(ref, frame(n_cur, 5, {"age": 8.0, "plan": 0.3, "visits": 4.0}))
        assert sorted(shifted.drifted) == ["age", "plan", "visits"], (n_ref, shifted.to_dict()["columns"])
        assert shifted.share == pytest.approx(3 / 7) and not shifted.dataset_drift
        most = data_drift(ref, frame(n_cur, 6, {"age": 8.0, "plan": 0.3, "visits": 4.0, "spend": 2.0}))
        assert most.dataset_drift and most.share >= 0.5


def test_large_current_sample_uses_the_asymptotic_ks_p_value_as_scipy_does():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=900)})
    cur = pd.DataFrame({"x": rng.normal(0.05, 1, size=25_000)})
    got = data_drift(ref, cur).column("x")
    assert got.test == "ks"
    assert got.score == pytest.approx(stats.ks_2samp(ref.x, cur.x).pvalue, rel=1e-9)


def test_default_test_table_is_evidentlys():
    assert default_test(1000, 6, "numerical") == "ks"
    assert default_test(1000, 5, "numerical") == "chisquare"
    assert default_test(1000, 2, "numerical") == "z"
    assert default_test(1000, 3, "categorical") == "chisquare"
    assert default_test(1000, 2, "categorical") == "z"
    assert default_test(1001, 6, "numerical") == "wasserstein"
    assert default_test(1001, 5, "numerical") == "jensenshannon"
    assert default_test(1001, 50, "categorical") == "jensenshannon"


def test_column_types_are_inferred_as_evidently_does_and_untestable_ones_are_skipped():
    n = 200
    data = pd.DataFrame(
        {
            "f": np.linspace(0, 1, n),
            "few_ints": np.arange(n) % 10,
            "many_ints": np.arange(n),
            "s": np.array(["a", "b"] * (n // 2)),
            "text": [f"free text {i}" for i in range(n)],
            "when": pd.date_range("2026-01-01", periods=n, freq="h"),
            "b": np.arange(n) % 2 == 0,
        }
    )
    assert [infer_type(data[c]) for c in data] == [
        "numerical", "categorical", "numerical", "categorical", None, None, "categorical",
    ]  # fmt: skip
    result = data_drift(data, data)
    assert set(result.skipped) == {"text", "when"} and "not tested" in result.skipped["text"]
    assert result.drifted == []


def test_per_column_overrides_of_test_threshold_and_type():
    ref, cur = frame(5000, 7), frame(5000, 8, {"age": 0.6})
    default = data_drift(ref, cur).column("age")
    assert default.test == "wasserstein" and not default.drifted  # 0.6 / 10 = 0.06 < 0.1
    tight = data_drift(ref, cur, overrides={"age": {"threshold": 0.03}}).column("age")
    assert tight.drifted and tight.score == pytest.approx(default.score)
    psi = data_drift(ref, cur, overrides={"age": "psi", "plan": {"test": "chisquare", "threshold": 0.01}})
    assert psi.column("age").test == "psi"
    assert psi.column("age").score == pytest.approx(scipy_score("psi", ref.age, cur.age))
    assert psi.column("plan").test == "chisquare" and psi.column("plan").threshold == 0.01
    as_cat = data_drift(ref, cur, overrides={"visits": {"type": "categorical"}}).column("visits")
    assert as_cat.type == "categorical" and as_cat.test == "jensenshannon"
    assert as_cat.histogram["values"] and "edges" not in as_cat.histogram
    everything = data_drift(ref, cur, test="psi")
    assert {c.test for c in everything.columns} == {"psi"}


def test_histograms_hold_both_samples_as_fractions():
    ref, cur = frame(3000, 9), frame(2000, 10)
    result = data_drift(ref, cur)
    age = result.column("age").histogram
    assert len(age["edges"]) == 21
    assert sum(age["reference"]) == pytest.approx(1, abs=1e-4) and sum(age["current"]) == pytest.approx(1, abs=1e-4)
    plan = result.column("plan").histogram
    assert sorted(plan["values"]) == ["basic", "plus", "pro", "team"]
    assert sum(plan["current"]) == pytest.approx(1, abs=1e-4)
    assert result.to_dict()["columns"][0]["histogram"] == result.columns[0].histogram


def test_bad_drift_input_is_one_line():
    ref, cur = frame(100, 1), frame(100, 2)
    cases = [
        (dict(columns=["nope"]), "column 'nope' is not in the reference data"),
        (dict(test="magic"), "unknown drift test 'magic'"),
        (dict(overrides={"age": "magic"}), "column 'age': unknown drift test 'magic'"),
        (dict(overrides={"plan": "ks"}), "column 'plan': the ks test takes numerical columns"),
        (dict(overrides={"plan": {"type": "numerical"}}), "column 'plan' is set to numerical but holds"),
        (dict(overrides={"age": {"type": "ordinal"}}), "unknown column type 'ordinal'"),
        (dict(overrides={"age": {"threshold": "high"}}), "threshold 'high' is not a number"),
        (dict(overrides={"age": {"tset": "ks"}}), "unknown override 'tset'"),
        (dict(overrides={"ghost": "ks"}), "override for column 'ghost', which is not compared"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MonitoringError) as caught:
            data_drift(ref, cur, **kwargs)
        assert message in caught.value.message and "\n" not in caught.value.message, kwargs
    with pytest.raises(MonitoringError, match="not in the current data"):
        data_drift(ref, cur.drop(columns=["age"]))


def test_a_column_with_no_finite_values_is_skipped_not_fatal():
    ref, cur = frame(100, 1), frame(100, 2)
    cur["age"] = np.nan
    result = data_drift(ref, cur)
    assert "age" in result.skipped and "no finite values in the current data" in result.skipped["age"]
    assert "age" not in {c.column for c in result.columns}


def test_a_column_set_to_categorical_compares_values_not_bins_whatever_its_cardinality():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"code": rng.integers(0, 50, 2000)})
    cur = pd.DataFrame({"code": rng.integers(0, 45, 2000)})
    got = data_drift(ref, cur, overrides={"code": {"type": "categorical", "test": "jensenshannon"}}).column("code")
    keys = sorted(set(ref.code) | set(cur.code))
    r = np.array([(ref.code == k).sum() for k in keys]) / len(ref)
    c = np.array([(cur.code == k).sum() for k in keys]) / len(cur)
    assert got.type == "categorical" and got.score == pytest.approx(distance.jensenshannon(r, c), rel=1e-9)


def test_classification_scores_take_the_models_classes_whatever_the_label_types():
    from mlops_nb.monitoring.model_monitor import _scores

    labels = pd.Series(["1", "0", "1", "1"])  # labels attached as text, a model with integer classes
    got = _scores("classification", labels, pd.Series([1, 0, 0, 1]), pd.Series([0.9, 0.2, 0.4, 0.8]), [0, 1])
    assert got["accuracy"] == 0.75 and got["recall"] == pytest.approx(2 / 3) and got["roc_auc"] == 1.0
    outside = _scores("classification", pd.Series([0, 1, 2, 1]), pd.Series([0, 1, 1, 1]), None, [0, 1])
    assert outside["accuracy"] == 0.75 and "roc_auc" not in outside  # a label the model never saw: macro averages
    named = _scores("classification", pd.Series(["no", "yes"]), pd.Series(["yes", "yes"]), pd.Series([0.7, 0.9]),
                    ["no", "yes"])  # fmt: skip
    assert named["precision"] == 0.5 and named["recall"] == 1.0
