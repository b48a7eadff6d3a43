"""Helpers the quickstart notebook imports: a local module whose source is part of the steps' cache keys."""

from __future__ import annotations

import pandas as pd

FEATURES = ["tenure_months", "monthly_spend", "support_calls", "spend_per_month_of_tenure"]


def make_features(processed: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Feature matrix and label from the processed customer table."""
    X = processed.assign(spend_per_month_of_tenure=processed.monthly_spend / processed.tenure_months)[FEATURES]
    return X.astype(float), processed["churned"].astype(int)
