"""How the `fedcare` command talks: `--quiet`, `--verbose`, `--log-file`, and the progress of a run.

Progress is a bar per model on a terminal and one plain line per round elsewhere (a log file, a CI
job, a notebook), each with the round's validation metric and mean training loss. Third-party
warnings that are noise on a terminal (dp-accounting's RDP orders through absl, hundreds of lines
per DP run) are kept out of it and written to the log file, where nothing is lost.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

# loggers whose records stay out of the terminal (they still reach --log-file): dp-accounting's RDP
# orders (absl), the ONNX exporter's notes on operators of packages not installed
NOISY = ("absl", "torch.onnx")


@dataclass
class Output:
    quiet: bool = False
    verbose: bool = False


OUTPUT = Output()


def setup(quiet: bool, verbose: bool, log_file: Path | None) -> None:
    """Route Python logging: the terminal gets INFO (WARNING with --quiet, DEBUG with --verbose) minus
    the noisy third-party loggers; --log-file gets every record at DEBUG, those included."""
    OUTPUT.quiet, OUTPUT.verbose = quiet, verbose
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    terminal.addFilter(lambda record: not record.name.startswith(NOISY))
    terminal.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))  # as the services log
    root.addHandler(terminal)
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(to_file)
    root.setLevel(logging.DEBUG if verbose or log_file is not None else logging.INFO)
    for name in ("httpx", "httpcore", "urllib3", "matplotlib", "PIL", "alembic", "filelock", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)  # a line per request or file drowns what matters
    logging.captureWarnings(True)  # Python warnings become records: on the terminal once, in the file too


def describe(record) -> str:
    """The round's validation metric and mean training loss, as shown beside its progress."""
    parts = [] if record.val_score is None else [f"val {record.val_score:.3f}"]
    losses = [t["train_loss"] for t in record.train.values() if t.get("train_loss") is not None]
    if losses:
        parts.append(f"train loss {sum(losses) / len(losses):.3f}")
    return " · ".join(parts)


@dataclass
class RoundProgress:
    """The `progress` callback of fedcare.simulate for the terminal, a pipe or nothing (--quiet)."""

    console: Console
    rounds: int
    metric: str = ""
    bars: dict[str, int] = field(default_factory=dict)
    bar: Progress | None = None

    def __call__(self, name: str, record) -> None:
        if OUTPUT.quiet:
            return
        shown = describe(record).replace("val ", f"val {self.metric} " if self.metric else "val ", 1)
        if not self.console.is_terminal:
            print(f"{name} round {record.round}/{self.rounds}" + (f" · {shown}" if shown else ""), flush=True)
            return
        if self.bar is None:  # only once training runs, so an early error prints nothing else
            self.bar = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[score]}"), TimeElapsedColumn(), console=self.console,
                                transient=True)
            self.bar.start()
        if name not in self.bars:
            self.bars[name] = self.bar.add_task(escape(name), total=self.rounds, score="")
        self.bar.update(self.bars[name], completed=record.round, score=escape(shown))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def with_config_defaults(command) -> None:
    """Append `(default …)` to the help of every option of `command` that is a config key (their
    CLI default is None, so that the YAML file and the bundled dataset's settings can fill them)."""
    from fedcare.core.config import FederationConfig

    defaults = FederationConfig().flat(mode="json")
    for param in command.params:
        value = defaults.get(param.name)
        if value is None or value in ((), []) or "default" in (param.help or ""):
            continue
        shown = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        param.help = f"{param.help or ''} (default {shown})".strip()
