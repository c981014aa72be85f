"""Which metric heads each task and which direction is better — shared by engine and reports."""

HEADLINE = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse", "survival": "c_index"}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "loss", "train_loss", "neg_partial_loglik"})


def is_better(metric: str, a: float, b: float) -> bool:
    """Is value a strictly better than b for this metric?"""
    return a < b if metric in LOWER_IS_BETTER else a > b
