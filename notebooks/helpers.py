"""Helpers the example notebooks import: a local module whose source is part of the steps' cache keys."""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ["tenure_months", "monthly_spend", "support_calls", "spend_per_month_of_tenure"]


def make_features(processed: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Feature matrix and label from a customer table (tenure_months, monthly_spend, support_calls, churned)."""
    X = processed.assign(spend_per_month_of_tenure=processed.monthly_spend / processed.tenure_months)[FEATURES]
    return X.astype(float), processed["churned"].astype(int)


def customers(n_rows: int = 2000, seed: int = 7, first_id: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """Seeded synthetic customers with a churn label drawn from a known logistic model: ``data/raw.csv`` is
    ``customers(2000, 7)``. ``drift`` > 0 makes a population that spends more, calls support more often and has
    shorter tenures (the same label model): what arrives later in ``data/arrivals/`` in the monitoring notebook."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(first_id, first_id + n_rows),
            "tenure_months": rng.integers(1, max(2, round(72 * (1 - drift / 2))), n_rows),
            "monthly_spend": rng.gamma(2.0, 30.0 * (1 + drift), n_rows).round(2),
            "support_calls": rng.poisson(1.5 * (1 + drift), n_rows),
        }
    )
    logit = -1.5 + 0.6 * frame.support_calls - 0.04 * frame.tenure_months + 0.01 * frame.monthly_spend
    frame["churned"] = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def champion(model_name: str = "churn") -> int | None:
    """The version the registry's ``champion`` alias points at in this project, or None (no such model yet)."""
    import mlops_nb

    try:
        return mlops_nb.Project().registry.alias_version(model_name, "champion")
    except mlops_nb.ModelNotFoundError:
        return None
