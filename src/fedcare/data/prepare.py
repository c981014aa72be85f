"""Prepare a dataset with sites that never show their rows: the coordinator asks, every site answers.

`prepare` (the coordinator) sends each question to every site through `ask`; `SitePreparation` (one
per site, holding that site's rows) answers it. Questions and answers are JSON objects. The
coordinator reads the answers in its own order of site ids, so the result does not depend on which
site answers first. Simulation runs this same exchange in one process (fedcare.data.assemble), so a
networked run prepares bit-identical arrays.

For a privacy officer -- what each phase sends (coordinator's question -> site's answer):

columns     which built-in dataset, if any -> the site's column names, its file name, and for a
            built-in dataset how many rows reading it dropped.
schema      the target and feature columns, the declared task -> the number of rows that have
            every target and of rows dropped for lacking one; per feature column, how many cells
            are present and how many of those are numbers. For a label: how many distinct values
            it has, whether they are all numbers, all integers, its first value that is not a
            number, and the sorted distinct values themselves -- unless they can only be a
            regression outcome (more than 2 numbers, not all integers or more than 20 of them, or
            --task regression), or there are more than 50. --task binary or multiclass declares
            them class names, so they are sent (for binary, up to 50; for multiclass, all). Not
            asked when a built-in dataset fixes the label encoding. For a survival target: its
            distinct event values (e.g. 0/1), at most 50; times are checked at the site, never sent.
categories  the categorical columns -> per column, its sorted distinct values (over all of the
            site's rows), or only their number when more than 50. The coordinator never asks it
            for a numeric column.
locate      one column whose cells are numbers except a few -> nothing: a site holding such a cell
            stops with an error that names the row and quotes the cell (a text, not a number). Only
            asked when that happens.
stats       label encoding, column types, split settings -> the site splits its own rows and sends
            its train/validation/test row counts and, from its training rows only, the aggregates of
            fedcare.data.preprocessing: per numeric column the count, sum, sum of squares and
            missing count; per categorical column the rows per category and the missing count.
counts      thresholds per numeric column -> how many of its training values are <= each threshold.
            About 50 times (every column in the same question), only for numeric columns with
            missing training values: the bisection that finds the pooled median.
finish      the fitted transform -> the site encodes its own rows, keeps them (`data`), and sends
            its row counts per split again.

Numbers leave a site only as counts, sums, and category or class names (e.g. cp = 1..4, label 0/1).
No row leaves it, no measurement (unless the user declares it a category or a class), and nothing of
its validation or test rows but their counts and the distinct values above. The coordinator is trusted
to ask honestly: a site checks that questions come in order and name only its feature columns, but
without secure aggregation a coordinator bent on it could ask one site for counts that locate values.
Errors: a site raises DataError with one line for its operator; the message may quote one of its
cells and its row number, and an agent that relays the message to the coordinator shares that much.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.builtin import get_builtin
from fedcare.data.columns import (ColumnTypes, check_categories, check_numbers, column_counts, decide_types,
                                  distinct_summary, typed_frame)
from fedcare.data.dataset import DataSpec, SiteData, TaskKind
from fedcare.data.labels import LabelEncoding, label_from_summaries, label_summary
from fedcare.data.preprocessing import (Transform, apply_transform, build_transform, check_count, check_number,
                                        count_at_most, fit_medians, merge_stats, site_stats, stats_from_json,
                                        stats_to_json, transform_from_json, transform_to_json)
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table
from fedcare.data.splitting import SplitIndices, split_site
from fedcare.data.survival import (SurvivalEncoding, check_columns, check_times, event_summary,
                                   survival_from_summaries)

Ask = Callable[[str, dict], Mapping[str, dict]]
MIN_SITE_ROWS = 4
SHOWN_COLUMNS = 12
_TASKS = (None, "binary", "multiclass", "regression", "survival")
_AGAIN = "check that the coordinator and the site run the same fedcare version"


@dataclass(frozen=True)
class PreparedDataset:
    """What the coordinator learns from preparing: names and fitted settings, no rows."""

    name: str
    task: TaskKind
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    preprocessing: dict[str, Any]  # the same content as FederatedDataset.preprocessing

    def __post_init__(self) -> None:
        # Rebuilt from stored JSON, the names arrive as lists: keep them hashable tuples of str.
        for name in ("feature_names", "classes"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))


# ----- the spec's options, checked before anything is read or asked ---------------------------


def check_options(spec: DataSpec) -> None:
    """Reject out-of-range or contradictory options (the coordinator's and the simulation's check)."""
    spec.check_values()
    if spec.task not in _TASKS:
        raise ConfigError(f"unknown task '{spec.task}': use binary, multiclass, regression or survival")
    if spec.dataset is not None:
        builtin = get_builtin(spec.dataset)
        for flag, value in (("site", spec.site), ("label", spec.label), ("time", spec.time), ("event", spec.event),
                            ("partition", spec.partition), ("drop", spec.drop), ("categorical", spec.categorical)):
            if value:
                raise ConfigError(f"--{flag} applies to --data files, not to the built-in dataset '{spec.dataset}'")
        if spec.task is not None and spec.task != builtin.task:
            raise ConfigError(f"dataset '{spec.dataset}' is a {builtin.task} task, not {spec.task}")
        return
    survival = spec.time is not None or spec.event is not None or spec.task == "survival"
    if not survival:
        if spec.label is None:
            raise ConfigError("--label is required with --data: name the column to predict "
                              "(or --time and --event for a survival task)")
        return
    if spec.label is not None:
        raise ConfigError("a survival task takes --time and --event instead of --label; drop --label")
    if spec.time is None or spec.event is None:
        missing = "--time" if spec.time is None else "--event"
        raise ConfigError(f"a survival task needs both --time (time to event or censoring) and --event "
                          f"(1 = event, 0 = censored); {missing} is missing")
    if spec.task not in (None, "survival"):
        raise ConfigError(f"--time and --event make a survival task, not {spec.task}; drop --task")


def columns_text(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:SHOWN_COLUMNS])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > SHOWN_COLUMNS else "")


def require_column(column: str, columns: Sequence[str], source: str) -> None:
    if column not in columns:
        raise DataError(f"column '{column}' not found in {source}; available columns: {columns_text(columns)}")


# ----- reading messages: anything malformed becomes one clear DataError -----------------------


def _strings(message: Mapping[str, Any], key: str) -> list[str]:
    value = message[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' should be a list of strings")
    return value


def _optional_text(message: Mapping[str, Any], key: str) -> str | None:
    value = message[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' should be a string or null")
    return value


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(f"{what} is malformed ({detail}); {_AGAIN}") from None


def _encoding_from_json(data: Mapping[str, Any]) -> LabelEncoding | SurvivalEncoding:
    if data["kind"] == "survival":
        return SurvivalEncoding.from_json(dict(data))
    if data["kind"] == "label":
        return LabelEncoding.from_json(dict(data))
    raise ValueError(f"unknown target kind {data['kind']!r}")



# ----- site side -------------------------------------------------------------------------------


class SitePreparation:
    """Site side. Holds one site's raw rows; answers the coordinator's questions; ends with SiteData.

    Answers carry only the aggregates listed in this module's docstring. After 'finish', `data` holds
    the site's encoded arrays and `row_counts` its rows per split; neither is ever sent.
    """

    def __init__(self, raw: RawSite, dataset: str | None = None, dropped_on_read: int = 0) -> None:
        self.site_id = raw.site_id
        self.source = raw.source
        self.dataset = dataset
        self.dropped_on_read = dropped_on_read
        self.data: SiteData | None = None
        self.row_counts: dict[str, int] = {}
        self._raw = raw.frame
        self._rows: pd.DataFrame | None = None  # rows with every target present
        self._features: list[str] = []  # the feature columns 'schema' named: later questions may name no other
        self._encoded: tuple[pd.DataFrame, np.ndarray, SplitIndices] | None = None  # typed rows, targets, split
        self._train: dict[str, np.ndarray] = {}  # numeric training values, for the median's counts

    @classmethod
    def from_file(cls, path: str | Path, site_id: str) -> SitePreparation:
        """The hospital's own CSV or Parquet file."""
        path = Path(path)
        return cls(RawSite(site_id, read_table(path), path.name))

    @classmethod
    def from_builtin(cls, dataset: str, site_id: str) -> SitePreparation:
        """One site's rows of a bundled dataset, for demos and tests."""
        builtin = get_builtin(dataset)
        if site_id not in builtin.site_ids:
            known = ", ".join(builtin.site_ids)
            raise DataError(f"dataset '{dataset}' has no site '{site_id}'; its sites are: {known}")
        raw, dropped = builtin.read_site(site_id)
        return cls(raw, dataset=builtin.name, dropped_on_read=dropped)

    def answer(self, phase: str, question: dict) -> dict:
        """Answer one question (JSON in, JSON out); bad data raises DataError with a one-line message."""
        handlers: dict[str, Callable[[Mapping[str, Any]], dict]] = {
            "columns": self._columns, "schema": self._schema, "categories": self._categories,
            "locate": self._locate, "stats": self._stats, "counts": self._counts, "finish": self._finish,
        }
        if phase not in handlers:
            raise DataError(f"site '{self.site_id}' got an unknown question '{phase}'; {_AGAIN}")
        if not isinstance(question, Mapping):
            raise DataError(f"site '{self.site_id}' got a '{phase}' question that is not an object; {_AGAIN}")
        return handlers[phase](question)

    # The handlers read the question first (inside _reading), then work on the rows.

    def _what(self, phase: str) -> str:
        return f"the '{phase}' question to site '{self.site_id}'"

    @property
    def _name(self) -> str:
        return f"'{self.source}' at site '{self.site_id}'" if self.source else f"the data of site '{self.site_id}'"

    def _rows_for(self, phase: str, columns: Sequence[str] = ()) -> pd.DataFrame:
        """The site's rows, once 'schema' has said which columns are features (and only those are asked)."""
        if self._rows is None:
            raise DataError(f"site '{self.site_id}' got '{phase}' before 'schema'; {_AGAIN}")
        unknown = [c for c in columns if c not in self._features]
        if unknown:
            raise DataError(f"site '{self.site_id}' was asked '{phase}' about '{unknown[0]}', which is not a "
                            f"feature column; {_AGAIN}")
        return self._rows

    def _columns(self, question: Mapping[str, Any]) -> dict:
        with _reading(self._what("columns")):
            dataset = _optional_text(question, "dataset")
        if dataset != self.dataset:
            holds = f"the built-in dataset '{self.dataset}'" if self.dataset else f"its own file '{self.source}'"
            asked = f"the built-in dataset '{dataset}'" if dataset else "the sites' own files"
            raise DataError(f"site '{self.site_id}' holds {holds} but the coordinator prepares {asked}; "
                            "start the site with the data the federation uses")
        return {"columns": [str(c) for c in self._raw.columns], "source": self.source,
                "dropped_on_read": int(self.dropped_on_read)}

    def _schema(self, question: Mapping[str, Any]) -> dict:
        with _reading(self._what("schema")):
            targets = _strings(question, "targets")
            features = _strings(question, "features")
            label = question["label"]
            if label is not None:
                label_column, task = str(label["column"]), label["task"]
                if task not in _TASKS:
                    raise ValueError(f"unknown task {task!r}")
            survival = question["survival"]
            if survival is not None:
                time, event = str(survival["time"]), str(survival["event"])
        for column in (*targets, *features):
            require_column(column, list(self._raw.columns), self._name)
        complete = self._raw[targets].notna().all(axis=1)
        rows = self._raw[complete]
        answer: dict[str, Any] = {"rows": len(rows), "dropped": int((~complete).sum()),
                                  "columns": column_counts(rows, features), "label": None, "events": None}
        if label is not None:
            answer["label"] = label_summary(rows[label_column].tolist(), task)
        if survival is not None:
            check_times(time, self.source, rows)
            answer["events"] = event_summary(rows, event)
        self._rows, self._features = rows, features
        return answer

    def _categories(self, question: Mapping[str, Any]) -> dict:
        with _reading(self._what("categories")):
            columns = _strings(question, "columns")
        return {"columns": distinct_summary(self._rows_for("categories", columns), columns)}

    def _locate(self, question: Mapping[str, Any]) -> dict:
        with _reading(self._what("locate")):
            column = str(question["column"])
            name_source = bool(question["name_source"])
        check_numbers(self._rows_for("locate", [column]), column, self.source if name_source else None)
        return {"found": False}

    def _stats(self, question: Mapping[str, Any]) -> dict:
        with _reading(self._what("stats")):
            encoding = _encoding_from_json(question["encoding"])
            types = ColumnTypes.from_json(question["types"])
            test_fraction = check_number(question["test_fraction"])
            val_fraction = check_number(question["val_fraction"])
            seed = check_count(question["split_seed"])
        rows = self._rows_for("stats")
        split = split_site(self.site_id, len(rows), encoding.strata(rows), test_fraction, val_fraction, seed)
        typed = typed_frame(rows, types)
        self._encoded = (typed, encoding.targets(rows), split)
        train = typed.iloc[split.train]
        self._train = {c: train[c].to_numpy(dtype=np.float64) for c in types.numeric}
        self.row_counts = {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
        return {"rows": dict(self.row_counts), "stats": stats_to_json(site_stats(train, types))}

    def _counts(self, question: Mapping[str, Any]) -> dict:
        if self._encoded is None:
            raise DataError(f"site '{self.site_id}' got 'counts' before 'stats'; {_AGAIN}")
        with _reading(self._what("counts")):
            asked = {str(c): [check_number(t) for t in ts] for c, ts in question["thresholds"].items()}
            unknown = [c for c in asked if c not in self._train]
            if unknown:
                raise ValueError(f"'{unknown[0]}' is not a numeric feature column")
        return {"counts": {c: [count_at_most(self._train[c], t) for t in ts] for c, ts in asked.items()}}

    def _finish(self, question: Mapping[str, Any]) -> dict:
        if self._encoded is None:
            raise DataError(f"site '{self.site_id}' got 'finish' before 'stats'; {_AGAIN}")
        typed, y, split = self._encoded
        with _reading(self._what("finish")):
            transform = transform_from_json(question["transform"])
            if not set(transform.order) <= set(typed.columns):
                raise ValueError("the transform names columns the site was not asked to type")
        self.data = _encode(self.site_id, typed, y, split, transform)
        return {"rows": dict(self.row_counts)}


def _encode(site_id: str, typed: pd.DataFrame, y: np.ndarray, split: SplitIndices, transform: Transform) -> SiteData:
    parts: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        rows = getattr(split, part)
        parts[f"x_{part}"] = apply_transform(typed.iloc[rows], transform)
        parts[f"y_{part}"] = y[rows]
    return SiteData(site_id=site_id, **parts)


def ask_in_process(sites: Sequence[SitePreparation]) -> Ask:
    """`ask` for simulation: every site answers in this process, in the order given."""

    def ask(phase: str, question: dict) -> dict[str, dict]:
        return {site.site_id: site.answer(phase, question) for site in sites}

    return ask


# ----- coordinator side ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """What the coordinator asks for: the spec's options, or a built-in dataset's own."""

    dataset: str | None
    label: str | None
    time: str | None
    event: str | None
    task: TaskKind | None
    drop: tuple[str, ...]
    categorical: tuple[str, ...]
    site_column: str | None  # a simulated layout's site column: not a feature
    encoding: LabelEncoding | None  # fixed by a built-in dataset instead of inferred
    name_source: bool  # whether a site's error names its file (always, unless one file holds every site)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.time, self.event) if self.time is not None else (self.label,)  # type: ignore[return-value]


def _recipe(spec: DataSpec) -> _Recipe:
    if spec.dataset is not None:
        b = get_builtin(spec.dataset)
        return _Recipe(b.name, b.label, b.time, b.event, None, (), b.categorical, None, b.label_encoding, True)
    return _Recipe(None, spec.label, spec.time, spec.event, spec.task, spec.drop, spec.categorical, spec.site,
                   None, len(spec.files) != 1)


class _Exchange:
    """Sends one question to every site; hands back the answers in the coordinator's site order."""

    def __init__(self, ask: Ask, site_ids: list[str]) -> None:
        self.ask, self.site_ids = ask, site_ids

    def __call__(self, phase: str, question: dict) -> list[tuple[str, Mapping[str, Any]]]:
        answers = self.ask(phase, question)
        out = []
        for site in self.site_ids:
            answer = answers.get(site) if isinstance(answers, Mapping) else None
            if not isinstance(answer, Mapping):
                raise DataError(f"site '{site}' sent no answer to the '{phase}' question: its agent stopped or "
                                "found a problem in its data (its log says which); fix it and start again")
            out.append((site, answer))
        return out


def prepare(spec: DataSpec, site_ids: Sequence[str], ask: Ask) -> PreparedDataset:
    """Coordinator side: drive the sites through the phases and learn the dataset's shape and transform.

    `ask(phase, question)` sends the same question to every site and returns site_id -> answer. The
    data paths of `spec` are not read: each site holds its own rows.
    """
    if spec.partition is not None:
        raise DataError("--partition splits one file into simulated sites, so it exists only in simulation; "
                        "over the network every site holds its own rows: drop --partition")
    check_options(spec)
    ids = [str(s) for s in site_ids]
    if not ids:
        raise DataError("no sites to prepare the data with; start at least one site")
    if len(set(ids)) != len(ids):
        twice = next(s for s in ids if ids.count(s) > 1)
        raise DataError(f"site id '{twice}' appears twice; every site needs its own id")
    recipe = _recipe(spec)
    exchange = _Exchange(ask, ids)
    sources, dropped_on_read, columns = _ask_columns(exchange, recipe)
    schema = _ask_schema(exchange, recipe, columns, sources[ids[0]])
    types = _ask_types(exchange, recipe, schema)
    for site in ids:
        if schema.rows[site] < MIN_SITE_ROWS:
            raise DataError(
                f"site '{site}' has {schema.rows[site]} rows, fewer than the {MIN_SITE_ROWS} needed "
                "to split it into train and test; merge it with another site or drop its rows"
            )
    split = {"test_fraction": spec.test_fraction, "val_fraction": spec.val_fraction, "split_seed": spec.split_seed}
    label = schema.label
    transform, site_rows = _fit(exchange, label, types, {"test_fraction": float(spec.test_fraction),
                                                         "val_fraction": float(spec.val_fraction),
                                                         "split_seed": int(spec.split_seed)})
    name = recipe.dataset or (Path(sources[ids[0]]).stem if sources[ids[0]] else ids[0])  # type: ignore[arg-type]
    preprocessing: dict[str, Any] = {
        **transform.to_dict(),
        "label": label.to_dict(),
        "split": {
            **split,
            "stratified_when": "2+ classes at the site and every class has more than 2 rows",
            **({"stratified_by": "event"} if label.task == "survival" else {}),
        },
        "site_rows": site_rows,
        **_extra(recipe, ids, sources, dropped_on_read, schema.dropped),
    }
    task: TaskKind = label.task  # type: ignore[assignment]
    return PreparedDataset(name, task, transform.feature_names, label.classes, preprocessing)


def _ask_columns(exchange: _Exchange, recipe: _Recipe) -> tuple[dict[str, str | None], dict[str, int], list[str]]:
    """Every site's columns must match the first site's; returns sources, rows dropped on reading, columns."""
    sources: dict[str, str | None] = {}
    dropped: dict[str, int] = {}
    columns: dict[str, list[str]] = {}
    for site, answer in exchange("columns", {"dataset": recipe.dataset}):
        with _reading(f"the 'columns' answer of site '{site}'"):
            columns[site] = _strings(answer, "columns")
            sources[site] = _optional_text(answer, "source")
            dropped[site] = check_count(answer["dropped_on_read"])
    first = exchange.site_ids[0]
    for site in exchange.site_ids[1:]:
        missing = [c for c in columns[first] if c not in columns[site]]
        extra = [c for c in columns[site] if c not in columns[first]]
        if missing or extra:
            what = f"lacks column '{missing[0]}'" if missing else f"has extra column '{extra[0]}'"
            if sources[site] and sources[first]:
                raise DataError(f"site '{site}': '{sources[site]}' {what} compared with '{sources[first]}' of site "
                                f"'{first}'; all sites need the same columns")
            raise DataError(f"site '{site}' {what} compared with site '{first}'; all sites need the same columns")
    return sources, dropped, columns[first]


@dataclass(frozen=True)
class _Schema:
    """What the 'schema' answers settle: features, the label encoding, rows kept and dropped per site."""

    features: list[str]
    label: LabelEncoding | SurvivalEncoding
    rows: dict[str, int]
    dropped: dict[str, int]
    counts: list[dict[str, dict[str, int]]]  # per site, in site order: per feature, present and numbers


def _distinct(data: Any) -> dict[str, Any]:
    """A site's distinct values (or only their number), checked: categories, event values."""
    values = data["values"]
    if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
        raise ValueError("'values' should be a list of strings or null")
    return {"distinct": check_count(data["distinct"]), "values": values}


def _label(data: Any) -> dict[str, Any]:
    """A site's label summary (fedcare.data.labels.label_summary), checked."""
    return {**_distinct(data), "numeric": bool(data["numeric"]), "integral": bool(data["integral"]),
            "first_text": _optional_text(data, "first_text")}


def _ask_schema(exchange: _Exchange, recipe: _Recipe, columns: list[str], source: str | None) -> _Schema:
    """Check the named columns, have the sites drop rows without a target, fix the label encoding."""
    where = f"'{source}'" if source else f"the data of site '{exchange.site_ids[0]}'"
    site_column = (recipe.site_column,) if recipe.site_column else ()
    for column in (*recipe.targets, *site_column, *recipe.drop, *recipe.categorical):
        require_column(column, columns, where)
    survival = recipe.time is not None
    if survival:
        check_columns(recipe.time, recipe.event)  # type: ignore[arg-type]
    excluded = {*recipe.targets, *site_column, *recipe.drop}
    features = [c for c in columns if c not in excluded]
    infer = not survival and recipe.encoding is None
    question = {
        "targets": list(recipe.targets),
        "features": features,
        "label": {"column": recipe.label, "task": recipe.task} if infer else None,
        "survival": {"time": recipe.time, "event": recipe.event} if survival else None,
    }
    rows: dict[str, int] = {}
    dropped: dict[str, int] = {}
    summaries: list[tuple[str, dict]] = []
    counts: list[dict[str, dict[str, int]]] = []
    for site, answer in exchange("schema", question):
        with _reading(f"the 'schema' answer of site '{site}'"):
            rows[site] = check_count(answer["rows"])
            dropped[site] = check_count(answer["dropped"])
            counts.append({c: {k: check_count(answer["columns"][c][k]) for k in ("present", "numbers")}
                           for c in features})
            if survival or infer:
                summaries.append((site, _distinct(answer["events"]) if survival else _label(answer["label"])))
    label: LabelEncoding | SurvivalEncoding
    if survival:
        label = survival_from_summaries(recipe.time, recipe.event, [s for _, s in summaries])  # type: ignore[arg-type]
    elif infer:
        label = label_from_summaries(recipe.label, summaries, recipe.task)  # type: ignore[arg-type]
    else:
        label = recipe.encoding  # type: ignore[assignment]
    if not features:
        what = "time, event" if survival else "label"
        raise DataError(f"no feature columns left in {where} after removing the {what}, site and --drop columns")
    return _Schema(features, label, rows, dropped, counts)


def _ask_types(exchange: _Exchange, recipe: _Recipe, schema: _Schema) -> ColumnTypes:
    """Type the features from the counts; check categorical columns' sizes; have a typo's site name its row."""
    types, typos = decide_types(schema.features, schema.counts, recipe.categorical)
    distinct: dict[str, list[dict[str, Any]]] = {c: [] for c in types.categorical}
    if types.categorical:
        for site, answer in exchange("categories", {"columns": list(types.categorical)}):
            with _reading(f"the 'categories' answer of site '{site}'"):
                for column in types.categorical:
                    distinct[column].append(_distinct(answer["columns"][column]))
    for column in schema.features:  # in column order, so the first problem is reported, as in one file
        if column in typos:
            # The site holding the odd cell raises its own error naming the row (in-process, that error
            # is what the caller sees); over the network its agent shows it, and this names the site.
            exchange.ask("locate", {"column": column, "name_source": recipe.name_source})
            site, counts = next((s, c[column]) for s, c in zip(exchange.site_ids, schema.counts)
                                if c[column]["numbers"] < c[column]["present"])
            raise DataError(f"column '{column}' is numeric but site '{site}' holds "
                            f"{counts['present'] - counts['numbers']} values that are not numbers (its log names "
                            f"the rows); fix them or pass --categorical {column}")
        if column in distinct:
            check_categories(column, distinct[column])
    return types


def _fit(exchange: _Exchange, label: LabelEncoding | SurvivalEncoding, types: ColumnTypes, split: dict[str, Any]
         ) -> tuple[Transform, dict[str, dict[str, int]]]:
    """Sites split and send aggregates; the median search; the transform goes back to every site."""
    stats = []
    site_rows: dict[str, dict[str, int]] = {}
    for site, answer in exchange("stats", {"encoding": label.to_json(), "types": types.to_json(), **split}):
        with _reading(f"the 'stats' answer of site '{site}'"):
            site_rows[site] = {k: check_count(answer["rows"][k]) for k in ("train", "val", "test")}
            stats.append(stats_from_json(answer["stats"], types))
            if stats[-1].rows != site_rows[site]["train"]:
                raise ValueError("its aggregates do not count its training rows")
    merged = merge_stats(stats)

    def count_many(asked: dict[str, list[float]]) -> dict[str, list[int]]:
        totals = {c: [0] * len(ts) for c, ts in asked.items()}
        for site, answer in exchange("counts", {"thresholds": asked}):
            with _reading(f"the 'counts' answer of site '{site}'"):
                for column, thresholds in asked.items():
                    counts = answer["counts"][column]
                    if len(counts) != len(thresholds):
                        raise ValueError(f"{len(counts)} counts for {len(thresholds)} thresholds")
                    totals[column] = [t + check_count(n) for t, n in zip(totals[column], counts)]
        return totals

    transform = build_transform(types, merged, fit_medians(types, merged, count_many))
    for site, answer in exchange("finish", {"transform": transform_to_json(transform)}):
        with _reading(f"the 'finish' answer of site '{site}'"):
            if answer["rows"] != site_rows[site]:
                raise ValueError("its row counts changed since 'stats'")
    return transform, site_rows


def _extra(recipe: _Recipe, ids: list[str], sources: dict[str, str | None], dropped_on_read: dict[str, int],
           dropped: dict[str, int]) -> dict[str, Any]:
    """The layout's own preprocessing entries: a built-in dataset's, or the files' and their dropped rows."""
    if recipe.dataset is not None:
        return get_builtin(recipe.dataset).extra(dict(dropped_on_read))
    by_file = all(sources[s] for s in ids) and len({sources[s] for s in ids}) == len(ids)
    per: dict[str, int] = {}
    for site in ids:
        key = sources[site] if by_file else site
        per[key] = per.get(key, 0) + dropped[site]  # type: ignore[index]
    return {
        "files": list(dict.fromkeys(sources[s] for s in ids if sources[s])),
        ("rows_dropped_missing_time_or_event" if recipe.time else "rows_dropped_missing_label"): per,
        "columns_dropped": list(recipe.drop),
        "site_column": recipe.site_column,
    }
