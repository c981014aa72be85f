"""`fedcare admin status` for a person: the run under way (or the last one), whom it waits for, its
rounds, the runs before it and, for a live federation, its versions, drift notices and the sites
left out. `--json` prints the coordinator's answer as it is instead."""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.console import Group
from rich.markup import escape
from rich.table import Table

SHOWN_ROUNDS = 10


def status_view(status: Mapping) -> Group:
    lines: list = []
    if status.get("status") == "idle":
        lines.append("no run yet: start one with `fedcare admin start`")
    else:
        head = f"run {status['run_id']}: {status['status']}"
        if status.get("reason"):
            head += f" ({status['reason']})"
        lines.append(escape(head))
        task = status.get("open_task")
        if task:
            lines.append(escape(f"task {task['id']}: {len(task['answered'])} of {len(task['sites'])} sites answered"))
        if status.get("waiting_for"):
            lines.append(escape(f"waiting for sites {', '.join(status['waiting_for'])}"))
        rounds = status.get("rounds") or []
        if rounds:
            shown = rounds[-SHOWN_ROUNDS:]
            title = "rounds" if len(shown) == len(rounds) else f"the last {len(shown)} of {len(rounds)} rounds (--json: all)"
            table = Table(title=title)
            for column in ("round", "answered", "refused"):
                table.add_column(column, justify="right" if column == "round" else "left")
            for r in shown:
                refused = "; ".join(f"{site}: {why}" for site, why in r["refused"].items()) or "-"
                table.add_row(str(r["round"]), escape(", ".join(r["answered"]) or "-"), escape(refused))
            lines.append(table)
    runs = status.get("runs") or []
    if runs:
        table = Table(title="runs (newest first)")
        for column in ("run", "status", "started", "finished"):
            table.add_column(column)
        for r in runs:
            table.add_row(r["run_id"], r["status"], _when(r["started"]), _when(r["finished"]))
        lines.append(table)
    if status.get("live"):
        lines.extend(escape(line) for line in live_lines(status["live"]))
    lines.append(escape(f"sites of the federation: {', '.join(status.get('sites', []))}"))
    return Group(*lines)


def live_lines(live: Mapping) -> list[str]:
    """A live federation's state in lines: the current version, each drift notice, who is left out."""
    versions = live.get("versions") or []
    if versions:
        v = versions[-1]
        value = "" if v.get("value") is None else f", {v['metric']} {v['value']:.3f}"
        sites = ", ".join(v["sites"])
        head = f"live: version {v['version']} of {len(versions)} (run {v['run_id']}, {v['rounds']} rounds{value}"
        lines = [f"{head}, sites {sites})"]
    else:
        lines = ["live: no model version yet"]
    if live.get("drift"):
        # imported here: it loads the learning layer (torch), which the rest of `admin status` does not need
        from fedcare.federation.drift import DriftNotice

        lines += [f"drift: {DriftNotice.from_json(n).line()}" for n in live["drift"]]
    for key, what in (("dropped_silent", "dropped for silence until they call again"),
                      ("left_out_silent", "left out of the next phase (not heard from)")):
        if live.get(key):
            lines.append(f"{what}: {', '.join(live[key])}")
    if live.get("left"):
        lines.append("left the federation: " + ", ".join(f"{s} ({why})" for s, why in sorted(live["left"].items())))
    return lines


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
