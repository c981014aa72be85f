"""`fedcare simulate --time-column ...`: a stream replay (federation/stream.py) in this process, and
its run folder: config.yaml, metrics.jsonl (one row per window, site and strategy), summary.json
(the `stream` and `drift` blocks), global.safetensors (the continued model after the last window)
and report.html. Each window and each drift notice is logged as it happens. The comparison is the
three strategies on the same windows: the local and pooled baselines are not run, and a replay
writes no checkpoints (a stopped replay is run again)."""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path

from rich.table import Table

from fedcare.core.compression import parse_scheme
from fedcare.core.config import FederationConfig
from fedcare.data.modelcard import model_card
from fedcare.data.stream import load_stream
from fedcare.federation.drift import DriftNotice
from fedcare.federation.plan import make_plan
from fedcare.federation.runfolder import RunFolder, clear_for_new_run
from fedcare.federation.stream import STRATEGIES, run_stream
from fedcare.learning.tasks import load_plugins
from fedcare.transports.simulation import SimulationTransport

log = logging.getLogger("fedcare.stream")


def simulate_stream(cfg: FederationConfig, run_type: type):
    """Run the replay `cfg.stream` describes; returns `run_type` (api.Run) with the continued model."""
    started = time.perf_counter()
    load_plugins()
    s = cfg.stream
    data = load_stream(cfg.data, s.time_column, s.windows, s.window)  # type: ignore[arg-type]
    cfg = cfg.replace(data=[str(Path(p).resolve()) for p in cfg.data.files])
    plan = make_plan(cfg, data.shape, data.site_ids)
    clear_for_new_run(cfg.run_dir)
    folder = RunFolder(cfg.run_dir)
    folder.prepare(cfg)
    scheme = parse_scheme(cfg.compression.compress_broadcast)  # update compression travels in each request
    result = run_stream(plan, data, lambda sites: SimulationTransport(sites, broadcast=scheme), s, _log_window)
    summary = {"dataset": cfg.data.name, "task": data.shape.task, "sites": data.site_ids,
               "feature_names": list(data.shape.feature_names), "stream": result.block, "drift": result.drift,
               "preprocessing": data.preprocessing, "wall_seconds": time.perf_counter() - started}
    folder.write_metrics(result.rows)
    card = model_card(cfg.model, data.shape, data.preprocessing).to_meta()  # fedcare predict reads it
    folder.write_global(result.models["continued"], {"dataset": cfg.data.name, "algorithm": cfg.algorithm.name,
                                                     "stream_strategy": "continued",
                                                     "feature_names": list(data.shape.feature_names), **card})
    folder.write_summary(summary)
    folder.write_report(report(summary))
    return run_type(cfg.run_dir, cfg, summary, result.models["continued"])


def _log_window(record: dict, notices: list[DriftNotice]) -> None:
    log.info("window %d (%s..%s): %s", record["window"], record["from"], record["to"], window_line(record))
    for notice in notices:
        log.warning("window %d: %s", record["window"], notice.line())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def window_line(record: dict) -> str:
    """Each strategy's mean prequential metric, rounds and bytes in one window."""
    return " · ".join(f"{s} {_fmt(record['mean'][s])} ({record['rounds'][s]} rounds, "
                      f"{record['bytes'][s] / 1e6:.2f} MB)" for s in STRATEGIES)


def stream_table(summary: dict) -> Table:
    """The terminal's table: per window, each strategy's mean prequential metric, rounds and bytes."""
    stream = summary["stream"]
    table = Table(title=f"{summary['dataset']} · stream over {stream['time_column']} · prequential {stream['metric']}")
    table.add_column("window")
    table.add_column("time")
    for s in STRATEGIES:
        table.add_column(s, justify="right")
    for w in stream["windows"]:
        table.add_row(str(w["window"]), f"{w['from']}..{w['to']}",
                      *[f"{_fmt(w['mean'][s])} · {w['rounds'][s]} r · {w['bytes'][s] / 1e6:.2f} MB" for s in STRATEGIES])
    table.add_section()
    totals = stream["totals"]
    table.add_row("all", "windows 2+", *[f"{_fmt(totals[s]['mean_prequential'])} · {totals[s]['rounds']} r · "
                                         f"{totals[s]['bytes'] / 1e6:.2f} MB" for s in STRATEGIES])
    return table


def report(summary: dict) -> str:
    """report.html of a stream run: per window and strategy the prequential metric (mean and per
    site), rounds and bytes; the drift notices; the new categories."""
    stream, esc = summary["stream"], html.escape
    head = "".join(f"<th>{s} {esc(stream['metric'])}</th><th>rounds</th><th>MB</th>" for s in STRATEGIES)
    body = []
    for w in stream["windows"]:
        cells = "".join(f"<td>{_fmt(w['mean'][s])}</td><td>{w['rounds'][s]}</td><td>{w['bytes'][s] / 1e6:.2f}</td>"
                        for s in STRATEGIES)
        body.append(f"<tr><td>{w['window']}</td><td>{esc(w['from'])}..{esc(w['to'])}</td>{cells}</tr>")
    sites = []
    for w in stream["windows"][1:]:
        for sid, v in w["sites"].items():
            if "prequential" in v:
                cells = "".join(f"<td>{_fmt(v['prequential'][s])}</td>" for s in STRATEGIES)
                sites.append(f"<tr><td>{w['window']}</td><td>{esc(sid)}</td><td>{v['rows_new']}</td>{cells}</tr>")
    notices = "".join(f"<li>window {n['window']}: {esc(DriftNotice.from_json({k: v for k, v in n.items() if k != 'window'}).line())}</li>"
                      for n in summary["drift"]["notices"]) or "<li>none</li>"
    new = "".join(f"<li>window {esc(w)}, site {esc(sid)}: {esc(str(cols))}</li>"
                  for w, per in stream["new_categories"].items() for sid, cols in per.items()) or "<li>none</li>"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>fedcare stream</title></head><body>"
            f"<h1>Stream replay over '{esc(str(stream['time_column']))}'</h1>"
            "<p>Each window's rows are first scored by each strategy's model of the window before "
            "(prequential); window 1 trains all three alike.</p>"
            f"<table border='1'><tr><th>window</th><th>time</th>{head}</tr>{''.join(body)}</table>"
            f"<h2>Per site</h2><table border='1'><tr><th>window</th><th>site</th><th>new rows</th>"
            f"{''.join(f'<th>{s}</th>' for s in STRATEGIES)}</tr>{''.join(sites)}</table>"
            f"<h2>Drift notices</h2><ul>{notices}</ul>"
            f"<h2>Categories the first window's transform lacks (encoded as unseen)</h2><ul>{new}</ul>"
            f"<p>{esc(stream['transform'])}.</p></body></html>")
