"""`fedcare admin status` for a person: the run under way (or the last one), whom it waits for, its
rounds, and the runs before it. `--json` prints the coordinator's answer as it is instead."""

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
    lines.append(escape(f"sites of the federation: {', '.join(status.get('sites', []))}"))
    return Group(*lines)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
