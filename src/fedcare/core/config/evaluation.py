"""The evaluation section: which metric heads the run (picks the best round, stops early, names the
worst site) and the decision threshold of sensitivity and specificity."""

from __future__ import annotations

from pydantic import Field

from fedcare.core.config.base import Section


class EvaluationSettings(Section):
    metric: str | None = Field(None, description="headline and early-stopping metric: accuracy, balanced_accuracy, "
                               "roc_auc, log_loss, brier, sensitivity, specificity (binary), c_index (survival), "
                               "rmse, mae (regression); default: the task's own (accuracy, c_index, rmse, dice)")
    threshold: float = Field(0.5, gt=0, lt=1, description="binary: the probability from which a patient is called "
                             "positive by sensitivity and specificity (accuracy keeps 0.5)")
