"""The ovarian-genomics studies written as a multimodal layout: real rows, two files per study.

    <folder>/study-4/clinical.csv   pid, time, event, debulk   (the outcome and the EHR input)
    <folder>/study-4/genes.csv      pid, 158 genes             (the omics input)
    ...

The same rows as the built-in `ovarian-genomics` (survset's dataOvarian1, time > 0), so a run on the
files gives the built-in dataset's arrays; `fedcare demo-multimodal` writes them for a user to see
the layout on real data. `layout_command` is the `fedcare simulate` line that joins them.
"""

from __future__ import annotations

from pathlib import Path

from fedcare.data.builtin import (OVARIAN, OVARIAN_EVENT, OVARIAN_SITE, OVARIAN_STUDIES, OVARIAN_TIME,
                                  _survset_ovarian)
from fedcare.data.values import canonical

PATIENT = "pid"
CLINICAL, GENES = "clinical.csv", "genes.csv"


def write_ovarian_layout(folder: Path) -> list[Path]:
    """One folder per study with its clinical and gene files; returns the study folders."""
    frame = _survset_ovarian()
    frame = frame[frame[OVARIAN_TIME] > 0]
    genes = [c for c in frame.columns if c.startswith("num_")]
    studies = frame[OVARIAN_SITE].map(lambda v: canonical(str(v)))
    out = []
    for study in OVARIAN_STUDIES:
        rows = frame[studies == study]
        site = Path(folder) / f"study-{study}"
        site.mkdir(parents=True, exist_ok=True)
        clinical = rows[[PATIENT, OVARIAN_TIME, OVARIAN_EVENT, "fac_debulk"]].rename(columns={"fac_debulk": "debulk"})
        clinical.to_csv(site / CLINICAL, index=False)
        rows[[PATIENT, *genes]].rename(columns={g: g.removeprefix("num_") for g in genes}).to_csv(
            site / GENES, index=False)
        out.append(site)
    return out


def layout_command(folder: Path) -> str:
    """The simulate command that joins the written files by patient."""
    sites = [Path(folder) / f"study-{s}" for s in OVARIAN_STUDIES]
    data = " ".join(f"--data {s / CLINICAL}" for s in sites)
    omics = " ".join(f"--omics {s / GENES}" for s in sites)
    return (f"fedcare simulate {data} {omics} --patient {PATIENT} --time {OVARIAN_TIME} --event {OVARIAN_EVENT} "
            f"--categorical debulk --out runs/{OVARIAN}-joined")
