"""Prepare a dataset with sites that never show their rows: the coordinator asks, every site answers.

`prepare` (the coordinator) sends each question to every site through `ask`; `SitePreparation` (one
per site, holding that site's rows) answers it. Questions and answers are JSON objects. The
coordinator reads the answers in its own order of site ids, so the result does not depend on which
site answers first. Simulation runs this same exchange in one process (fedcare.data.loader), so a
networked run prepares bit-identical arrays.

A site's feature columns form its named inputs: the columns an input kind claims (`omics_columns`
for omics) and, for the rest, `tabular`. Each input asks its own questions under its own name
(fedcare.data.inputs): the exchange below is the same whatever the inputs are.

For a privacy officer -- what each phase sends (coordinator's question -> site's answer):

columns     which built-in dataset, if any -> the site's column names, its file name (only with
            share_name: a simulation's files; a site agent keeps it), and for a
            built-in dataset how many rows reading it dropped.
schema      the target and feature columns, the declared task, which columns form which input ->
            the number of rows that have every target and of rows dropped for lacking one; per
            feature column, how many cells are present, how many of those are numbers, whole
            numbers and YYYYMMDD dates, and how many distinct numbers there are. For a
            label: how many distinct values it has, whether they are all numbers, all integers, its
            first value that is not a number, and the sorted distinct values themselves -- unless
            they can only be a regression outcome (more than 2 numbers, not all integers or more than
            20 of them, or --task regression), or there are more than 50. --task binary or
            multiclass declares them class names, so they are sent (for binary, up to 50; for
            multiclass, all). Not asked when a built-in dataset fixes the label encoding. For a
            survival target: its distinct event values (e.g. 0/1), at most 50; times are checked at
            the site, never sent. With --treatment: the site's rows per arm (the arm names and their
            counts, like class names).
<input>.categories, <input>.locate
            (before the split) the distinct values of a tabular categorical column that at least
            MIN_CATEGORY_COUNT (5) of the site's rows hold (sorted, or only their number when more
            than 50), and how many rarer values it withheld (they are "(other)" at the site); nothing
            but an error naming the row, for a number column holding text. An omics input refuses
            to send any column's values.
split       label encoding (and the arms in order), split settings -> the site splits its own rows and
            sends its train/validation/test row counts. It answers one split per run: asked again with
            other settings, it refuses, so that no two sums over different training rows can be compared.
<input>.stats, <input>.counts
            (after the split, from the training rows only) per numeric column the count, mean, M2
            and missing count; per categorical column the rows per category (rare ones as
            "(other)") and the missing count; during a median search (only for numeric columns with
            missing training values, about 10 times, at most 40 per column and run) how many
            training values are <= each threshold.
image.probe, image.stats
            (an image input, fedcare.data.inputs.image) its images' axes and channels; after the
            split, per channel the voxel count, mean and sum of squared deviations of its training
            images. A mask target (fedcare.data.masks) sends, in 'schema', its masks' distinct values.
finish      each input's fitted preprocessing and shape -> the site encodes its own rows, keeps them
            (`data`), and sends its row counts per split again.
joined      (patients joined from several files, fedcare.data.multimodal) in 'columns', which columns
            came from which input kind's file; in 'schema' and 'split', per input some patients
            lack, how many of the site's patients (per split) have it. Every question of an input is
            answered over the patients that have it; a site where none has it answers {"absent":
            true} and nothing more, and encodes zeros with a '<input>.present' companion of 0.0.

Numbers leave a site only as counts, means, M2s, and category or class names (e.g. cp = 1..4, label 0/1).
No row leaves it, no measurement (unless the user declares it a category or a class), and nothing of
its validation or test rows but their counts and the distinct values above. A site checks that
questions come in order and name only its feature columns, and answers a bounded number of threshold
questions; docs/data.md says what an honest and a curious coordinator can learn.
Errors: a site raises DataError with one line for its operator; the message may quote one of its
cells and its row number, and an agent that relays the message to the coordinator shares that much.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.absent import present_name, sub_split, with_absent
from fedcare.data.arms import ArmEncoding, arm_counts, arms_from_counts
from fedcare.data.answers import AGAIN, check_count, check_number, optional_text, read_distinct, reading, strings
from fedcare.data.builtin import get_builtin
from fedcare.data.columns import COUNT_KEYS, MIN_CATEGORY_COUNT, column_counts
from fedcare.data.dataset import SPLITS, DataShape, DataSpec, SiteData
from fedcare.data.lazy import examples_of
from fedcare.data.inputs import DEFAULT_KIND, Fitted, InputJob, SiteInput, input_kind, input_kinds
from fedcare.data.labels import LabelEncoding, label_from_summaries, label_summary
from fedcare.data.manifest import read_manifest
from fedcare.data.masks import MaskEncoding, mask_from_summaries, mask_summary
from fedcare.data.patients import split_patients
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table
from fedcare.data.sitetable import SiteTable
from fedcare.data.splitting import SplitIndices, split_site
from fedcare.data.survival import (SurvivalEncoding, check_columns, check_times, event_summary,
                                   survival_from_summaries)
from fedcare.data.targets import check_task, label_rules, reads

Ask = Callable[[str, dict], Mapping[str, dict]]
SHOWN_COLUMNS = 12


@dataclass(frozen=True)
class PreparedDataset:
    """What the coordinator learns from preparing: the data's shape and the fitted settings, no rows."""

    name: str
    shape: DataShape
    preprocessing: dict[str, Any]  # the same content as FederatedDataset.preprocessing

    def to_json(self) -> dict[str, Any]:
        """What a coordinator keeps, to resume a run without preparing again."""
        return {"name": self.name, "shape": self.shape.to_json(features=True), "preprocessing": self.preprocessing}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedDataset:
        try:
            return cls(str(data["name"]), DataShape.from_json(data["shape"]), dict(data["preprocessing"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataError("this run's stored data preparation was written by another fedcare version; "
                            "start a new run") from None


# ----- the spec's options, checked before anything is read or asked ---------------------------


def check_options(spec: DataSpec) -> None:
    """Reject out-of-range or contradictory options (the coordinator's and the simulation's check)."""
    spec.check_values()
    check_task(spec.task)
    if spec.dataset is not None:
        builtin = get_builtin(spec.dataset)
        claims = [(k.columns_key.replace("_", "-"), getattr(spec, k.columns_key))
                  for k in input_kinds() if k.columns_key]
        for flag, value in (("site", spec.site), ("label", spec.label), ("time", spec.time), ("event", spec.event),
                            ("partition", spec.partition), ("drop", spec.drop), ("categorical", spec.categorical),
                            *claims):
            if value:
                raise ConfigError(f"--{flag} applies to --data files, not to the built-in dataset '{spec.dataset}'")
        if spec.task is not None and label_rules(spec.task) != builtin.task and not (
                builtin.mask is not None and reads(spec.task) == "mask"):
            raise ConfigError(f"dataset '{spec.dataset}' is a {builtin.task} task, not {spec.task}")
        return
    if spec.images is not None:
        return  # the manifest names its own columns (fedcare.data.manifest)
    survival = spec.time is not None or spec.event is not None or reads(spec.task) == "survival"
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
    if spec.task is not None and reads(spec.task) != "survival":
        raise ConfigError(f"--time and --event make a survival task, not {spec.task}; drop --task")


def columns_text(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:SHOWN_COLUMNS])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > SHOWN_COLUMNS else "")


def require_column(column: str, columns: Sequence[str], source: str) -> None:
    if column not in columns:
        raise DataError(f"column '{column}' not found in {source}; available columns: {columns_text(columns)}")


def _encoding_from_json(data: Mapping[str, Any]) -> LabelEncoding | SurvivalEncoding | MaskEncoding:
    if data["kind"] == "survival":
        return SurvivalEncoding.from_json(dict(data))
    if data["kind"] == "mask":
        return MaskEncoding.from_json(data)
    if data["kind"] == "label":
        return LabelEncoding.from_json(dict(data))
    raise ValueError(f"unknown target kind {data['kind']!r}")


# ----- site side -------------------------------------------------------------------------------


class SitePreparation:
    """Site side. Holds one site's raw rows; answers the coordinator's questions; ends with SiteData.

    Answers carry only the aggregates listed in this module's docstring. After 'finish', `data` holds
    the site's encoded examples and `row_counts` its rows per split; neither is ever sent.
    """

    def __init__(self, raw: RawSite, dataset: str | None = None, dropped_on_read: int = 0,
                 share_name: bool = False, min_category_count: int = MIN_CATEGORY_COUNT,
                 release_rows: bool = False) -> None:
        self.site_id = raw.site_id
        self.release_rows = release_rows  # after 'finish', keep only `data` (it answers only 'finish' again)
        self.min_category_count = min_category_count  # the site's own small-cell limit (no question lowers it)
        self.source = raw.source
        self.share_name = share_name  # whether the answers name the file (see from_file)
        self.dataset = dataset
        self.dropped_on_read = dropped_on_read
        self.data: SiteData | None = None
        self.row_counts: dict[str, int] = {}
        self._raw = raw.frame if isinstance(raw.frame, SiteTable) else SiteTable.from_frame(raw.frame)
        self._own_inputs = {str(k): tuple(v) for k, v in raw.inputs.items()}  # kind -> its file's columns
        self._present_raw = {str(k): np.asarray(v, dtype=bool) for k, v in raw.present.items()}
        self._present: dict[str, np.ndarray] = {}  # input -> which kept rows have it (absent: all)
        self._rows: SiteTable | None = None  # rows with every target present
        self._inputs: dict[str, SiteInput] = {}  # the inputs 'schema' named: later questions may name no other
        self._target_columns: tuple[str, ...] = ()
        self._split: SplitIndices | None = None
        self._split_asked: tuple | None = None  # the first split's settings: the only ones answered
        self._targets: dict[str, np.ndarray] = {}  # every row's encoded targets
        self._finished_with: dict | None = None  # the fitted settings 'finish' encoded with

    @classmethod
    def from_file(cls, path: str | Path, site_id: str, share_name: bool = False) -> SitePreparation:
        """The hospital's own CSV or Parquet file. Its name shows in this site's own messages; it is
        sent in the answers only with `share_name` (a simulation, where every file is the user's)."""
        path = Path(path)
        return cls(RawSite(site_id, read_table(path), path.name), share_name=share_name)

    @classmethod
    def from_manifest(cls, path: str | Path, site_id: str, skip_bad_images: bool = False) -> SitePreparation:
        """The hospital's image manifest (fedcare.data.manifest): its files checked, paths made absolute."""
        manifest = read_manifest(path, None, skip_bad_images)
        return cls(RawSite(site_id, manifest.frame, Path(path).name))

    @classmethod
    def from_builtin(cls, dataset: str, site_id: str) -> SitePreparation:
        """One site's rows of a bundled dataset, for demos and tests."""
        builtin = get_builtin(dataset)
        if site_id not in builtin.site_ids:
            known = ", ".join(builtin.site_ids)
            raise DataError(f"dataset '{dataset}' has no site '{site_id}'; its sites are: {known}")
        raw, dropped = builtin.read_site(site_id)
        # public data whose codes are published: nothing to suppress, and the features stay FLamby's
        return cls(raw, dataset=builtin.name, dropped_on_read=dropped, share_name=True, min_category_count=1)

    def answer(self, phase: str, question: dict) -> dict:
        """Answer one question (JSON in, JSON out); bad data raises DataError with a one-line message."""
        if not isinstance(question, Mapping):
            raise DataError(f"site '{self.site_id}' got a '{phase}' question that is not an object; {AGAIN}")
        handlers: dict[str, Callable[[Mapping[str, Any]], dict]] = {
            "columns": self._columns, "schema": self._schema, "split": self._split_rows, "finish": self._finish}
        if self.release_rows and self.data is not None and phase != "finish":
            raise DataError(f"site '{self.site_id}' has finished preparing and released its rows; it answers "
                            f"'{phase}' no more; {AGAIN}")
        if phase in handlers:
            return handlers[phase](question)
        name, _, sub = phase.partition(".")
        if name not in self._inputs:
            if self._rows is None and sub:
                raise DataError(f"site '{self.site_id}' got '{phase}' before 'schema'; {AGAIN}")
            raise DataError(f"site '{self.site_id}' got an unknown question '{phase}'; {AGAIN}")
        if name not in self._present:
            return self._inputs[name].answer(sub, question, self._rows, self._split)  # type: ignore[arg-type]
        present = self._present[name]
        if not present.any():
            return {"absent": True}  # a site without this input sends nothing about it
        split = None if self._split is None else sub_split(self._split, present)
        return self._inputs[name].answer(sub, question, self._rows.take(present), split)  # type: ignore[union-attr]

    def _what(self, phase: str) -> str:
        return f"the '{phase}' question to site '{self.site_id}'"

    @property
    def _name(self) -> str:
        return f"'{self.source}' at site '{self.site_id}'" if self.source else f"the data of site '{self.site_id}'"

    def _columns(self, question: Mapping[str, Any]) -> dict:
        with reading(self._what("columns")):
            dataset = optional_text(question, "dataset")
        if dataset != self.dataset:
            holds = f"the built-in dataset '{self.dataset}'" if self.dataset else f"its own file '{self.source}'"
            asked = f"the built-in dataset '{dataset}'" if dataset else "the sites' own files"
            raise DataError(f"site '{self.site_id}' holds {holds} but the coordinator prepares {asked}; "
                            "start the site with the data the federation uses")
        return {"columns": list(self._raw.columns), "source": self.source if self.share_name else None,
                "dropped_on_read": int(self.dropped_on_read),
                **({"inputs": {kind: list(cols) for kind, cols in self._own_inputs.items()}} if self._own_inputs else {})}

    def _schema(self, question: Mapping[str, Any]) -> dict:
        with reading(self._what("schema")):
            targets = strings(question, "targets")
            features = strings(question, "features")
            label = question["label"]
            if label is not None:
                label_column, task = str(label["column"]), label["task"]
                check_task(task)
            survival = question["survival"]
            if survival is not None:
                time, event = str(survival["time"]), str(survival["event"])
            inputs = {str(name): (str(part["kind"]), strings(part, "columns"))
                      for name, part in question["inputs"].items()}
            claimed = [c for _, columns in inputs.values() for c in columns]
            if sorted(claimed) != sorted(features):
                raise ValueError("the inputs do not split the feature columns between them")
            arm = question.get("treatment")
            arm_column = None if arm is None else str(arm["column"])
        names = list(self._raw.columns)
        for column in (*targets, *features, *([arm_column] if arm_column else [])):
            require_column(column, names, self._name)
        complete = self._raw.complete(targets + ([arm_column] if arm_column else []))
        rows = self._raw if bool(complete.all()) else self._raw.take(complete)  # no copy of a complete site
        self._present = {name: self._present_raw[name][complete] for name in inputs if name in self._present_raw}
        answer: dict[str, Any] = {"rows": len(rows), "dropped": int((~complete).sum()),
                                  "columns": column_counts(rows, features), "label": None, "events": None}
        if self._present:
            answer["present"] = {name: int(p.sum()) for name, p in self._present.items()}
        if label is not None:
            answer["label"] = (mask_summary([str(p) for p in rows[label_column].tolist()]) if reads(task) == "mask"
                               else label_summary(rows[label_column].tolist(), task))
        if survival is not None:
            check_times(time, self.source, rows)
            answer["events"] = event_summary(rows, event)
        if arm_column is not None:
            answer["arms"] = arm_counts(rows[arm_column].tolist())
        self._rows, self._target_columns, self._split, self._targets = rows, tuple(targets), None, {}
        self._inputs = {name: input_kind(kind).site(columns, self.source, self.site_id)
                        for name, (kind, columns) in inputs.items()}
        self._kinds = {name: kind for name, (kind, _) in inputs.items()}
        for site_input in self._inputs.values():  # a kind that sends category names honours the site's limit
            if hasattr(site_input, "min_count"):
                site_input.min_count = self.min_category_count
        return answer

    def _split_rows(self, question: Mapping[str, Any]) -> dict:
        if self._rows is None:
            raise DataError(f"site '{self.site_id}' got 'split' before 'schema'; {AGAIN}")
        with reading(self._what("split")):
            encoding = _encoding_from_json(question["encoding"])
            test_fraction = check_number(question["test_fraction"])
            val_fraction = check_number(question["val_fraction"])
            seed = check_count(question["split_seed"])
            patient = optional_text(question, "patient") if "patient" in question else None
            if tuple(encoding.columns) != self._target_columns:
                raise ValueError("its encoding names other columns than the schema's targets")
            arms = None if question.get("treatment") is None else ArmEncoding.from_json(question["treatment"])
        asked = (encoding.to_json(), test_fraction, val_fraction, seed, patient)
        if self._split_asked is not None and asked != self._split_asked:
            raise DataError(f"site '{self.site_id}' was asked to split its rows again with other settings; it "
                            "answers one split per run, so that no sums over other training rows can be "
                            f"compared with the first; {AGAIN}")
        self._split_asked = asked
        rows = self._rows
        if patient is not None:
            require_column(patient, list(rows.columns), self._name)  # type: ignore[union-attr]
            self._split = split_patients(self.site_id, rows[patient].tolist(), encoding.strata(rows), test_fraction,
                                         val_fraction, seed)
        else:
            self._split = split_site(self.site_id, len(rows), encoding.strata(rows), test_fraction, val_fraction,
                                     seed)
        self._targets = encoding.targets(rows)
        if arms is not None:
            self._targets["treatment"] = arms.encode(rows)
        self.row_counts = {part: len(getattr(self._split, part)) for part in SPLITS}
        present = {name: {part: int(p[getattr(self._split, part)].sum()) for part in SPLITS}
                   for name, p in self._present.items()}
        return {"rows": dict(self.row_counts), **({"present": present} if present else {})}

    def file_rows(self) -> dict[str, np.ndarray]:
        """Per split, the 0-based data row of the file each of its examples came from (after 'split'):
        what tells a live site's newly arrived rows from those it had before."""
        if self._split is None:
            raise DataError(f"site '{self.site_id}' has not split its rows yet")
        index = np.asarray(self._rows.index)
        return {part: index[getattr(self._split, part)] for part in SPLITS}

    def _finish(self, question: Mapping[str, Any]) -> dict:
        if self._split is None:
            raise DataError(f"site '{self.site_id}' got 'finish' before 'split'; {AGAIN}")
        with reading(self._what("finish")):
            fitted = {str(name): dict(part) for name, part in question["inputs"].items()}
            if self.release_rows and self.data is not None:  # asked again: the same fit, the same answer
                if fitted != self._finished_with:
                    raise ValueError("the site has finished with other fitted settings")
                return {"rows": dict(self.row_counts)}
            if set(fitted) != set(self._inputs):
                raise ValueError("the fitted inputs are not the inputs the schema named")
            shapes = {name: [check_count(n) for n in question["shapes"][name]] for name in self._present}
        encoded = {name: self._inputs[name].encode(fitted[name], self._split) for name in fitted
                   if name not in self._present}
        partial = {name: self._inputs[name].encode(fitted[name], sub_split(self._split, p)) if p.any() else None
                   for name, p in self._present.items()}
        splits = {}
        for part in SPLITS:
            rows = getattr(self._split, part)
            columns: dict[str, Any] = {}
            for name in fitted:
                if name in encoded:
                    columns[name] = encoded[name][part]
                    continue
                present, inner = self._present[name][rows], partial[name]
                in_memory = input_kind(self._kinds[name]).encoder == "vector"
                columns[name] = with_absent(None if inner is None else inner[part], present, shapes[name], in_memory)
                columns[present_name(name)] = present.astype(np.float32)
            splits[part] = examples_of({**columns, **{name: values[rows] for name, values in self._targets.items()}})
        self.data, self._finished_with = SiteData(self.site_id, splits), fitted
        if self.release_rows:  # encoded: the text and typed rows go (10,000 sites in one process)
            self._raw, self._rows, self._inputs = self._raw.take(slice(0, 0)), None, {}
        return {"rows": dict(self.row_counts)}


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
    task: str | None
    drop: tuple[str, ...]
    categorical: tuple[str, ...]
    claims: Mapping[str, tuple[str, ...]]  # input kind -> the column patterns it takes (the rest: tabular)
    site_column: str | None  # a simulated layout's site column: not a feature
    encoding: LabelEncoding | None  # fixed by a built-in dataset instead of inferred
    name_source: bool  # whether a site's error names its file (always, unless one file holds every site)
    treatment: str | None = None  # the arm column (fedcare.data.arms)
    control: str | None = None
    patient: str | None = None  # a patient's rows stay in one split; not a feature
    image_size: tuple[int, ...] | None = None  # the common size of images and masks

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.time, self.event) if self.time is not None else (self.label,)  # type: ignore[return-value]


def _recipe(spec: DataSpec) -> _Recipe:
    builtin = get_builtin(spec.dataset) if spec.dataset is not None else None
    return dataclasses.replace(_layout(spec), patient=spec.patient or (builtin.patient if builtin else None),
                               image_size=spec.image_size or (builtin.image_size if builtin else None))


def _layout(spec: DataSpec) -> _Recipe:
    if spec.dataset is not None:
        b = get_builtin(spec.dataset)
        encoding = b.label_encoding  # fixed; a registered task following its rules takes it under its own name
        if encoding is not None and spec.task is not None:
            encoding = dataclasses.replace(encoding, task=spec.task)
        label = b.mask if b.mask is not None and reads(spec.task) == "mask" else b.label
        return _Recipe(b.name, label, b.time, b.event, spec.task, b.drop_for(spec.task), b.categorical, b.inputs,
                       None, encoding if label == b.label else None, True)
    claims = {kind.name: tuple(getattr(spec, kind.columns_key)) for kind in input_kinds() if kind.columns_key}
    return _Recipe(None, spec.label, spec.time, spec.event, spec.task, spec.drop, spec.categorical, claims,
                   spec.site, None, len(spec.files) != 1, spec.treatment, spec.control)


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


def prepare(spec: DataSpec, site_ids: Sequence[str], ask: Ask, reuse: PreparedDataset | None = None
            ) -> PreparedDataset:
    """Coordinator side: drive the sites through the phases and learn the dataset's shape and transforms.

    `ask(phase, question)` sends the same question to every site and returns site_id -> answer. The
    data paths of `spec` are not read: each site holds its own rows. With `reuse` (a live
    federation's current version) the sites encode their rows with its transforms instead of the
    ones fitted now, so the model keeps its inputs; categories it does not know (encoded as all
    zeros) are listed in `preprocessing["new_categories"]` by site and column.
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
    sources, dropped_on_read, columns, joined = _ask_columns(exchange, recipe)
    if joined:  # the columns of each joined file form its kind's input
        recipe = dataclasses.replace(recipe, claims={**recipe.claims, **joined})
    where = f"'{sources[ids[0]]}'" if sources[ids[0]] else f"the data of site '{ids[0]}'"
    schema = _ask_schema(exchange, recipe, columns, where)
    holders = {name: _holders(name, schema.present, ids) for name in schema.inputs}
    jobs = {name: InputJob(name, tuple(cols),
                           [{c: counts[c] for c in cols} for site, counts in zip(ids, schema.counts)
                            if site in holders[name]], holders[name],
                           recipe.categorical, recipe.name_source, _asker(exchange, name, holders[name]),
                           _teller(exchange, name), spec=spec.model_copy(update={"image_size": recipe.image_size}))
            for name, (_, cols) in schema.inputs.items()}
    kinds = {name: input_kind(kind) for name, (kind, _) in schema.inputs.items()}
    planned = {name: kinds[name].plan_columns(job) for name, job in jobs.items()}
    for site in ids:
        if schema.rows[site] == 0:
            raise DataError(f"site '{site}' has no rows with every target present; drop the site or fill its "
                            f"{', '.join(recipe.targets)}")
    label = schema.label
    split = {"test_fraction": float(spec.test_fraction), "val_fraction": float(spec.val_fraction),
             "split_seed": int(spec.split_seed), **({"patient": recipe.patient} if recipe.patient else {})}
    site_rows, present = _ask_split(exchange, label, split, schema.arms)
    fitted: dict[str, Fitted] = {}
    for name, job in jobs.items():
        train = {site: present.get(site, {}).get(name, site_rows[site])["train"] for site in job.site_ids}
        fitted[name] = kinds[name].fit(dataclasses.replace(job, train_rows=train), planned[name])
    shapes = {name: list(f.shape.shape) for name, f in fitted.items()}
    if reuse is not None:  # the fit above too: the sites' inputs expect it
        return _prepare_with(reuse, exchange, jobs, label, site_rows, shapes)
    for site, answer in exchange("finish", {"inputs": {name: f.to_json() for name, f in fitted.items()},
                                            "shapes": shapes}):
        with reading(f"the 'finish' answer of site '{site}'", site):
            if answer["rows"] != site_rows[site]:
                raise ValueError("its row counts changed since 'split'")
    name = recipe.dataset or spec.name  # the coordinator's own files, never a name a site sent
    preprocessing: dict[str, Any] = {
        **_merge_descriptions([f.describe() for f in fitted.values()]),
        "label": label.to_dict(),
        "split": {
            **split,
            "stratified_when": "2+ classes at the site and every class has more than 2 rows",
            **({"stratified_by": "event"} if isinstance(label, SurvivalEncoding) else {}),
        },
        "site_rows": site_rows,
        **({"patients_with_input": _with_input(present)} if any(present.values()) else {}),
        "encoding": {n: f.to_json() for n, f in fitted.items()},  # loadable: what encodes new patients
        **({"treatment": schema.arms.to_json()} if schema.arms is not None else {}),
        **_extra(recipe, ids, sources, dropped_on_read, schema.dropped),
    }
    shape = DataShape(label.task, label.classes, {name: f.shape for name, f in fitted.items()})
    return PreparedDataset(name, shape, preprocessing)


def _prepare_with(fitted: PreparedDataset, exchange: _Exchange, jobs: Mapping[str, InputJob], label: Any,
                  site_rows: dict, shapes: Mapping[str, list[int]]) -> PreparedDataset:
    """The finish of `prepare` with a fitted dataset's transforms, and the categories they do not know."""
    encoding = fitted.preprocessing.get("encoding", {})
    columns_moved = any(set(encoding[n].get("order", job.columns)) != set(job.columns)
                        for n, job in jobs.items() if n in encoding)
    if set(encoding) != set(jobs) or columns_moved or tuple(label.classes) != tuple(fitted.shape.classes):
        raise DataError(f"the sites' data no longer fits the current model (its inputs' columns or its classes "
                        f"{list(fitted.shape.classes)} changed: now {list(label.classes)}); start a new federation "
                        "for the new columns or classes")
    new: dict[str, dict[str, list[str]]] = {}
    for name, job in jobs.items():
        known = {c: set(r["categories"]) for c, r in encoding[name].get("categorical", {}).items()}
        if not known:
            continue
        for site, answer in job.ask("categories", {"columns": sorted(known)}):
            with reading(f"the '{name}.categories' answer of site '{site}'", site):
                for column, values in known.items():
                    unseen = sorted(set(read_distinct(answer["columns"][column])["values"] or ()) - values)
                    if unseen:
                        new.setdefault(site, {})[column] = unseen
    for site, answer in exchange("finish", {"inputs": encoding, "shapes": shapes}):
        with reading(f"the 'finish' answer of site '{site}'", site):
            if answer["rows"] != site_rows[site]:
                raise ValueError("its row counts changed since 'split'")
    preprocessing = {**fitted.preprocessing, "site_rows": site_rows, "new_categories": new}
    return PreparedDataset(fitted.name, fitted.shape, preprocessing)


def _asker(exchange: _Exchange, name: str, holders: Sequence[str]
           ) -> Callable[[str, dict], list[tuple[str, Mapping[str, Any]]]]:
    """An input's questions; only the answers of the sites that hold the input are read."""
    return lambda phase, question: [(site, answer) for site, answer in exchange(f"{name}.{phase}", question)
                                    if site in holders]


def _holders(name: str, present: Mapping[str, Mapping[str, int]], ids: Sequence[str]) -> list[str]:
    """The sites with at least one patient having input `name` (a site that does not say: all its rows)."""
    holders = [site for site in ids if present[site].get(name, 1) > 0]
    if not holders:
        raise DataError(f"no site has a patient with the {name} input; check the {name} file's patient ids, "
                        f"or leave the input out")
    return holders


def _with_input(present: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, dict[str, int]]]:
    """summary.json's count of patients per input, site and split, for the inputs some patients lack."""
    names = dict.fromkeys(name for by_input in present.values() for name in by_input)
    return {name: {site: dict(by_input[name]) for site, by_input in present.items() if name in by_input}
            for name in names}


def _teller(exchange: _Exchange, name: str) -> Callable[[str, dict], object]:
    return lambda phase, question: exchange.ask(f"{name}.{phase}", question)


def _ask_columns(exchange: _Exchange, recipe: _Recipe
                 ) -> tuple[dict[str, str | None], dict[str, int], list[str], dict[str, tuple[str, ...]]]:
    """Every site's columns must match the first site's; returns sources, rows dropped on reading, columns,
    and, for patients joined from several files, the columns of each kind's file (as exact patterns)."""
    sources: dict[str, str | None] = {}
    dropped: dict[str, int] = {}
    columns: dict[str, list[str]] = {}
    joined: dict[str, dict[str, list[str]]] = {}
    for site, answer in exchange("columns", {"dataset": recipe.dataset}):
        with reading(f"the 'columns' answer of site '{site}'", site):
            columns[site] = strings(answer, "columns")
            sources[site] = optional_text(answer, "source")
            dropped[site] = check_count(answer["dropped_on_read"])
            joined[site] = {str(kind): strings(answer["inputs"], kind) for kind in answer.get("inputs", {})}
    first = exchange.site_ids[0]
    for site in exchange.site_ids[1:]:
        if joined[site] != joined[first]:
            raise DataError(f"site '{site}' joins other input files than site '{first}' "
                            f"({sorted(joined[site])} against {sorted(joined[first])}); every site needs the same "
                            "inputs, each file with the same columns (a site without an input has its file "
                            "with no rows)")
    for site in exchange.site_ids[1:]:
        missing = [c for c in columns[first] if c not in columns[site]]
        extra = [c for c in columns[site] if c not in columns[first]]
        if missing or extra:
            what = f"lacks column '{missing[0]}'" if missing else f"has extra column '{extra[0]}'"
            if sources[site] and sources[first]:
                raise DataError(f"site '{site}': '{sources[site]}' {what} compared with '{sources[first]}' of site "
                                f"'{first}'; all sites need the same columns")
            raise DataError(f"site '{site}' {what} compared with site '{first}'; all sites need the same columns")
    return sources, dropped, columns[first], {k: tuple(glob.escape(c) for c in v) for k, v in joined[first].items()}


@dataclass(frozen=True)
class _Schema:
    """What the 'schema' answers settle: the inputs, the target encoding, rows kept and dropped per site."""

    inputs: dict[str, tuple[str, list[str]]]  # input name -> (kind, its columns), in model order
    label: LabelEncoding | SurvivalEncoding
    rows: dict[str, int]
    dropped: dict[str, int]
    counts: list[dict[str, dict[str, int]]]  # per site, in site order: per feature, present and numbers
    arms: ArmEncoding | None = None
    present: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # site -> input -> patients


def _label(data: Any) -> dict[str, Any]:
    """A site's label summary (fedcare.data.labels.label_summary), checked."""
    return {**read_distinct(data), "numeric": bool(data["numeric"]), "integral": bool(data["integral"]),
            "first_text": optional_text(data, "first_text")}


def assign_inputs(features: Sequence[str], claims: Mapping[str, Sequence[str]], categorical: Sequence[str],
                  where: str) -> dict[str, tuple[str, list[str]]]:
    """Which feature columns form which input: a column matching a kind's patterns (and not declared
    categorical: a category is never gene expression) goes to that kind, the others to tabular.
    Inputs come in the order of their first column, each with its columns in file order."""
    owner: dict[str, str] = {}
    for kind, patterns in claims.items():
        if not patterns or not features:
            continue
        taken = [c for c in features if c not in categorical and c not in owner
                 and any(fnmatch.fnmatchcase(c, p) for p in patterns)]
        if not taken:
            flag = (input_kind(kind).columns_key or kind).replace("_", "-")
            raise DataError(f"--{flag} {' '.join(patterns)} matches no feature column of {where}; "
                            f"its columns are: {columns_text(list(features))}")
        owner.update({c: kind for c in taken})
    inputs: dict[str, tuple[str, list[str]]] = {}
    for column in features:
        kind = owner.get(column, DEFAULT_KIND)
        inputs.setdefault(kind, (kind, []))[1].append(column)
    return inputs


def _ask_schema(exchange: _Exchange, recipe: _Recipe, columns: list[str], where: str) -> _Schema:
    """Check the named columns, have the sites drop rows without a target, fix the label encoding."""
    site_column = (recipe.site_column,) if recipe.site_column else ()
    site_column += (recipe.patient,) if recipe.patient else ()
    arm = (recipe.treatment,) if recipe.treatment else ()
    for column in (*recipe.targets, *site_column, *recipe.drop, *recipe.categorical, *arm):
        require_column(column, columns, where)
    survival = recipe.time is not None
    if survival:
        check_columns(recipe.time, recipe.event)  # type: ignore[arg-type]
    excluded = {*recipe.targets, *site_column, *recipe.drop, *arm}
    features = [c for c in columns if c not in excluded]
    inputs = assign_inputs(features, recipe.claims, recipe.categorical, where)
    infer = not survival and recipe.encoding is None
    question = {
        "targets": list(recipe.targets),
        "features": features,
        "label": {"column": recipe.label, "task": recipe.task} if infer else None,
        "survival": {"time": recipe.time, "event": recipe.event} if survival else None,
        "inputs": {name: {"kind": kind, "columns": cols} for name, (kind, cols) in inputs.items()},
        **({"treatment": {"column": recipe.treatment}} if arm else {}),
    }
    arm_answers: dict[str, dict[str, int]] = {}
    rows: dict[str, int] = {}
    dropped: dict[str, int] = {}
    summaries: list[tuple[str, dict]] = []
    counts: list[dict[str, dict[str, int]]] = []
    present: dict[str, dict[str, int]] = {}
    for site, answer in exchange("schema", question):
        with reading(f"the 'schema' answer of site '{site}'", site):
            rows[site] = check_count(answer["rows"])
            present[site] = {str(n): check_count(c) for n, c in answer.get("present", {}).items() if n in inputs}
            dropped[site] = check_count(answer["dropped"])
            counts.append({c: {k: check_count(answer["columns"][c][k]) for k in COUNT_KEYS} for c in features})
            if arm:
                arm_answers[site] = {str(a): check_count(n) for a, n in answer["arms"].items()}
            if survival or infer:
                summaries.append((site, read_distinct(answer["events"]) if survival
                                  else answer["label"] if reads(recipe.task) == "mask" else _label(answer["label"])))
    label: LabelEncoding | SurvivalEncoding
    if survival:
        label = survival_from_summaries(recipe.time, recipe.event, [s for _, s in summaries],  # type: ignore[arg-type]
                                        recipe.task)
    elif infer and reads(recipe.task) == "mask":
        with reading("the sites' mask summaries"):
            label = mask_from_summaries(recipe.label, recipe.task, summaries, recipe.image_size)  # type: ignore
    elif infer:
        label = label_from_summaries(recipe.label, summaries, recipe.task)  # type: ignore[arg-type]
    else:
        label = recipe.encoding  # type: ignore[assignment]
    if not features:
        what = "time, event" if survival else "label"
        raise DataError(f"no feature columns left in {where} after removing the {what}, site and --drop columns")
    arms = arms_from_counts(recipe.treatment, arm_answers, recipe.control) if arm else None
    return _Schema(inputs, label, rows, dropped, counts, arms, present)


def _ask_split(exchange: _Exchange, label: LabelEncoding | SurvivalEncoding, split: dict[str, Any],
               arms: ArmEncoding | None = None) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, dict[str, int]]]]:
    """Every site splits its own rows; their row counts per split, and per split the patients having
    each input some patients lack (site -> input -> split -> count)."""
    site_rows: dict[str, dict[str, int]] = {}
    present: dict[str, dict[str, dict[str, int]]] = {}
    arm = {"treatment": arms.to_json(counts=False)} if arms is not None else {}
    for site, answer in exchange("split", {"encoding": label.to_json(), **split, **arm}):
        with reading(f"the 'split' answer of site '{site}'", site):
            site_rows[site] = {k: check_count(answer["rows"][k]) for k in SPLITS}
            present[site] = {str(n): {k: check_count(c[k]) for k in SPLITS}
                             for n, c in answer.get("present", {}).items()}
    return site_rows, present


def _merge_descriptions(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The inputs' entries for summary.json, as one: lists side by side and mappings merged, in model
    order; other values (the method) as the first input gives them."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
            elif isinstance(value, list):
                out[key] += value
            elif isinstance(value, dict):
                out[key].update(value)
    return out


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
