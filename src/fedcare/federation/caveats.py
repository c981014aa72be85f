"""What summary.json warns about: things a run's numbers alone would hide. Each warning is one
line for a person, shown at the end of `fedcare simulate` and kept under `warnings`.

  * the data's own warnings from preparation (a column that looks like an identifier, rows dropped);
  * a site with no test rows: it trained, but no figure of the summary is about it;
  * a final model (federated or personalized) whose mean test headline is worse than the constant
    predictor's (the majority class, the mean outcome): it has learned nothing useful.
"""

from __future__ import annotations

from collections.abc import Mapping

FINAL_MODELS = ("federated", "personalized")


def caveats(summary: Mapping, higher_is_better: bool) -> list[str]:
    out = [str(w) for w in summary.get("preprocessing", {}).get("warnings", [])]
    for site, sizes in summary.get("site_sizes", {}).items():
        if not sizes.get("test"):
            out.append(f"site '{site}' has {sum(sizes.values())} rows and none to test on: it trains, but it is "
                       "not evaluated and no figure here is about it")
    constant = summary.get("constant")
    metric = summary["metric"]
    reference = constant["mean"].get(metric) if constant else None
    for model in FINAL_MODELS:
        score = summary.get(model, {}).get("mean", {}).get(metric)
        if reference is None or score is None:
            continue
        if (score < reference) if higher_is_better else (score > reference):
            out.append(f"the {model} model's mean test {metric} ({score:.3f}) is worse than a constant predictor's "
                       f"({reference:.3f}, the majority class or mean outcome of the training rows): it has not "
                       "learned; check lr, rounds and the privacy noise")
    return out
