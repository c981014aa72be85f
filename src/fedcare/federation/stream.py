"""A federation that keeps learning, replayed in simulation: window by window, new rows arrive at
their sites and three strategies are compared over the same round engine.

Each window, before anyone trains on it, every strategy's current model scores each site's newly
arrived rows (prequential evaluation: the rows of window k judge the model of window k-1), and the
`continued` model -- the one a live federation would have deployed -- is checked for drift
(federation/drift.py): its metric on the new rows against its metric on the site's held-out rows of
the earlier windows (each window's test split is never trained on, so it stays a fair reference),
and the new rows' input statistics against the earlier rows'. Then:

frozen      trains on the first window only and is never updated;
continued   warm-starts from its last model and runs at most `rounds_per_window` rounds (with
            `window_patience`, fewer: it stops when its validation metric stops improving; with
            `window_lrs`, once per learning rate, keeping the best on validation);
retrained   starts from the initial model and runs the full `rounds` on everything seen so far.

All three share the first window's training (the same rounds from the same start). With
`replay_windows N`, a site trains only on its last N windows' rows (continued and retrained alike).
The summary's `stream` block has, per window and site, each strategy's prequential metric and rows
seen, and per window each strategy's rounds and bytes; the `drift` block has the notices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedcare.core.config.stream import StreamSettings
from fedcare.core.params import Params
from fedcare.data.dataset import SPLITS, SiteData
from fedcare.data.examples import concat
from fedcare.data.stream import StreamData
from fedcare.federation.drift import (
    DriftConfig,
    DriftNotice,
    DriftStats,
    detect_drift,
    feature_stats,
    metric_judged,
    metric_se,
)
from fedcare.federation.engine import EngineSettings, RoundEngine
from fedcare.federation.plan import Plan
from fedcare.federation.transport import Transport
from fedcare.learning.headline import metric_direction

STRATEGIES = ("frozen", "continued", "retrained")
TransportFor = Callable[[Sequence[Any]], Transport]  # the sites of one training -> a fresh transport
OnWindow = Callable[[dict, list[DriftNotice]], None]


@dataclass
class StreamResult:
    block: dict[str, Any]
    drift: dict[str, Any]
    models: dict[str, Params]  # each strategy's model after the last window
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl rows: one per window, site, strategy


def run_stream(plan: Plan, data: StreamData, transport_for: TransportFor, settings: StreamSettings,
               on_window: OnWindow | None = None) -> StreamResult:
    task, base = plan.task, replace(plan.settings, eval_splits=("val",))  # the new rows judge; test waits
    if settings.window_metric is not None:  # refused before any training, not at the second window
        metric_direction(task, settings.window_metric, "window metric")
    drift_config = DriftConfig(drift_threshold=settings.drift_threshold, drift_smd=settings.drift_smd)
    models: dict[str, Params] = {}
    seen: dict[str, list[SiteData]] = {sid: [] for sid in data.site_ids}
    windows, notices, rows, unjudged = [], [], [], []
    for k, arrived in enumerate(data.windows):
        sites: dict[str, dict[str, Any]] = {sid: {"rows_new": sum(sd.sizes().values())} for sid, sd in arrived.items()}
        found: list[DriftNotice] = []
        for sid, sd in arrived.items() if k else ():
            scorer = plan.local_site(_all_rows(sd))
            scored = {s: scorer.evaluate(models[s], ["test"]).get("test", {}) for s in STRATEGIES}
            sites[sid]["prequential"] = {s: _metric(scored[s], task.headline) for s in STRATEGIES}
            reference, now = _drift_stats(plan, data.windows, k, sid, models["continued"], scored["continued"])
            if not metric_judged(reference, now, drift_config):
                unjudged.append({"window": k + 1, "site_id": sid, "reference_rows": reference.rows, "new_rows": now.rows,
                                 "reference_se": reference.se, "new_se": now.se})
            if (notice := detect_drift(reference, now, drift_config)) is not None:
                found.append(notice)
        for sid, sd in arrived.items():
            seen[sid].append(sd)
        kept = {sid: parts[-settings.replay_windows:] if settings.replay_windows else parts for sid, parts in seen.items()}
        spent = _train_window(plan, kept, models, base, k, settings, transport_for)
        for sid in data.site_ids:  # frozen trained on the first window; the others on what the site keeps
            sites.setdefault(sid, {"rows_new": 0})["rows_seen"] = {
                s: _train_rows(seen[sid][:1] if s == "frozen" else kept[sid]) for s in STRATEGIES}
        record = {"window": k + 1, "from": data.bounds[k][0], "to": data.bounds[k][1], "sites": sites,
                  "mean": _means(sites), "rounds": {s: v["rounds"] for s, v in spent.items()},
                  "bytes": {s: v["bytes"] for s, v in spent.items()}, 
                  "continued_lr": spent["continued"].get("lr"), "continued_tries": spent["continued"].get("tries")}
        windows.append(record)
        notices += [{"window": k + 1, **n.to_json()} for n in found]
        rows += [{"model": f"stream:{s}", "window": k + 1, "site": sid, "split": "prequential",
                  task.headline: v["prequential"][s]} for sid, v in sites.items() if "prequential" in v for s in STRATEGIES]
        if on_window:
            on_window(record, found)
    block = {"time_column": settings.time_column, "metric": task.headline, "higher_is_better": task.higher_is_better,
             "strategies": list(STRATEGIES), "rounds": plan.settings.rounds,
             "rounds_per_window": settings.rounds_per_window, "window_patience": settings.window_patience,
             "window_metric": settings.window_metric if settings.window_patience else None,
             "window_lrs": settings.window_lrs,
             "replay_windows": settings.replay_windows,
             "windows": windows, "totals": _totals(windows), **data.notes}
    drift = {"metric": task.headline, "drift_threshold": settings.drift_threshold, "drift_smd": settings.drift_smd,
             "drift_z": drift_config.drift_z, "drift_metric_z": drift_config.drift_metric_z, "min_rows": drift_config.min_rows, "model": "continued",
             "notices": notices, "metric_not_judged": unjudged}
    return StreamResult(block, drift, models, rows)


def _train_window(plan: Plan, kept: Mapping[str, Sequence[SiteData]], models: dict[str, Params],
                  base: EngineSettings, k: int, stream: StreamSettings,
                  transport_for: TransportFor) -> dict[str, dict[str, Any]]:
    """Each strategy's training on window k (0-based), updating `models`; its rounds and bytes. With
    `window_patience`, continued ends a window once its validation metric stops improving and keeps
    the best round (by `window_metric`, default the headline): it spends rounds where the new rows
    need them, up to `rounds_per_window`."""
    if k == 0:  # one training that all three share
        models["continued"], spent, _ = _train(plan, kept, plan.initial_params(), base, transport_for)
        models["frozen"] = models["retrained"] = models["continued"]
        return {s: spent for s in STRATEGIES}
    settings = replace(base, seed=base.seed + k)  # each window's shuffles are its own
    out = {"frozen": {"rounds": 0, "bytes": 0}}
    metric = stream.window_metric or settings.metric
    continued = replace(settings, rounds=stream.rounds_per_window, patience=stream.window_patience or settings.patience,
                        metric=metric, higher_is_better=metric_direction(plan.task, metric) if stream.window_metric
                        else settings.higher_is_better)
    models["continued"], out["continued"] = _continue(plan, kept, models["continued"], continued, stream, transport_for)
    models["retrained"], out["retrained"], _ = _train(plan, kept, plan.initial_params(), settings, transport_for)
    return out


def _continue(plan: Plan, kept: Mapping[str, Sequence[SiteData]], start: Params, settings: EngineSettings,
              stream: StreamSettings, transport_for: TransportFor) -> tuple[Params, dict[str, Any]]:
    """Continued's training on one window. With `window_lrs`, one training per learning rate from the
    same warm start, and the model whose best round scored best on validation is kept: a warm start
    sits near the optimum, where the run's learning rate may move too slowly for the patience to wait
    (docs/streams.md). Every try's rounds and bytes are counted; `lr` is the one kept."""
    tries = [(lr, *_train(plan, kept, start, replace(settings, lr=lr), transport_for))
             for lr in stream.window_lrs or (settings.lr,)]
    sign = 1.0 if settings.higher_is_better else -1.0
    lr, params, _, _ = max(tries, key=lambda t: -np.inf if t[3] is None else sign * t[3])  # ties: the first
    return params, {"rounds": sum(t[2]["rounds"] for t in tries), "bytes": sum(t[2]["bytes"] for t in tries),
                    "lr": lr, "tries": [{"lr": t[0], "rounds": t[2]["rounds"], "val": t[3]} for t in tries]}


def _all_rows(sd: SiteData) -> SiteData:
    """A site whose 'test' split is all of a window's rows: what the previous model never saw."""
    every = concat([sd.splits[s] for s in SPLITS if len(sd.splits[s])])
    return SiteData(sd.site_id, {"train": sd.splits["train"], "val": sd.splits["val"], "test": every})


def _accumulated(site_id: str, parts: Sequence[SiteData]) -> SiteData:
    return SiteData(site_id, {s: concat([p.splits[s] for p in parts]) for s in SPLITS})


def _train(plan: Plan, kept: Mapping[str, Sequence[SiteData]], start: Params, settings: EngineSettings,
           transport_for: TransportFor) -> tuple[Params, dict[str, int], float | None]:
    """The trained model, its rounds and bytes, and its round's mean validation metric (None: unjudged)."""
    sites = [plan.local_site(_accumulated(sid, parts)) for sid, parts in kept.items() if _train_rows(parts)]
    transport = transport_for(sites)
    result = RoundEngine(plan.algorithm, transport, settings).run(start)
    val = result.history[result.best_round - 1].val_score if result.best_round else None
    return result.params, {"rounds": result.rounds_run, "bytes": int(transport.bytes_sent)}, val


def _train_rows(parts: Sequence[SiteData]) -> int:
    return sum(len(p.splits["train"]) for p in parts)


def _metric(metrics: Mapping[str, float | None], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


def _means(sites: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    out = {}
    for s in STRATEGIES:
        values = [v["prequential"][s] for v in sites.values() if v.get("prequential", {}).get(s) is not None]
        out[s] = float(np.mean(values)) if values else None
    return out


def _totals(windows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per strategy: rounds and bytes over all windows, and the mean prequential metric of windows 2+."""
    out = {}
    for s in STRATEGIES:
        scored = [w["mean"][s] for w in windows[1:] if w["mean"][s] is not None]
        out[s] = {"rounds": sum(w["rounds"][s] for w in windows), "bytes": sum(w["bytes"][s] for w in windows),
                  "mean_prequential": float(np.mean(scored)) if scored else None}
    return out


def _vector_stats(sd: SiteData, plan: Plan, splits: Sequence[str]) -> dict[str, dict[str, float]]:
    """count, mean and variance of every encoded vector feature over the given splits' rows."""
    out: dict[str, dict[str, float]] = {}
    for name, shape in plan.shape.inputs.items():
        if len(shape.shape) != 1 or not shape.features:
            continue
        parts = [sd.splits[s].take(np.arange(len(sd.splits[s])), [name])[name] for s in splits if len(sd.splits[s])]
        if parts:
            out.update(feature_stats(np.concatenate(parts), list(shape.features)))
    return out


def _drift_stats(plan: Plan, windows: Sequence[Mapping[str, SiteData]], k: int, site_id: str, model: Params,
                 after: Mapping[str, float | None]) -> tuple[DriftStats, DriftStats]:
    """What the site shares for a drift check. Reference: the current model's metric (and its standard
    error) on the site's held-out (test) rows of every earlier window -- rows no strategy trained on --
    and the input statistics of all its earlier rows. New: the metrics on its newly arrived rows
    (`after`) and their input statistics."""
    earlier = [w[site_id] for w in windows[:k] if site_id in w]  # never empty: every site has window 1's rows
    task, new, history = plan.task, windows[k][site_id], _accumulated(site_id, earlier)
    before = plan.local_site(history).evaluate(model, ["test"]).get("test", {})  # empty: no test rows
    reference = DriftStats(site_id, len(history.splits["test"]), task.headline, _metric(before, task.headline),
                           task.higher_is_better, _vector_stats(history, plan, SPLITS), metric_se(before, task.headline))
    now = DriftStats(site_id, sum(new.sizes().values()), task.headline, _metric(after, task.headline),
                     task.higher_is_better, _vector_stats(new, plan, SPLITS), metric_se(after, task.headline))
    return reference, now
