"""The `fedcare` command as a user runs it: a real process, its exit code, stdout and stderr.

Bad input must end with exit code 2 and one line `error: ...` naming the problem — never a traceback.
The bad-input processes are started together (they are independent) to keep the suite fast.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HEART_SITES, built_once, cohort_frame, run_cli, write_csv


def test_simulate_prints_the_site_table_and_writes_the_run(tmp_path):
    proc = run_cli("simulate", "--rounds", "3", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    for word in (*HEART_SITES, "mean", "worst", "local", "federated", "pooled"):
        assert word in out, word
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"] == 3
    # the table shows the summary's numbers (3 decimals): one row per site, then mean and worst
    cells = {}
    for line in out.splitlines():
        parts = [c.strip() for c in line.strip("│ ").split("│")]
        if len(parts) == 5 and parts[0]:
            cells[parts[0]] = parts
    for site in HEART_SITES:
        expected = [f"{summary[m]['sites'][site]['accuracy']:.3f}" for m in ("local", "federated", "pooled")]
        assert cells[site][1] == str(summary["site_sizes"][site]["test"])
        assert cells[site][2:] == expected, site
    assert cells["mean"][2:] == [f"{summary[m]['mean']['accuracy']:.3f}" for m in ("local", "federated", "pooled")]
    assert [c.split()[0] for c in cells["worst"][2:]] == \
        [f"{summary[m]['worst_site']['accuracy']:.3f}" for m in ("local", "federated", "pooled")]
    for m in ("local", "federated", "pooled"):
        assert f"({summary[m]['worst_site']['site_id']})" in out
    for name in ("config.yaml", "metrics.jsonl", "global.safetensors"):
        assert (tmp_path / "run" / name).is_file()


def test_datasets_lists_heart_disease_sites(tmp_path):
    proc = run_cli("datasets", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "heart-disease" in proc.stdout
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃| ").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    heart = {"cleveland": 303, "hungarian": 261, "switzerland": 46, "va": 130}
    assert {k: v for k, v in rows.items() if k in heart} == heart
    assert "ovarian-genomics" in proc.stdout  # listed whether or not its optional extra is installed


def test_config_file_with_flag_override(tmp_path):
    """A flag wins over the same key in --config; the other keys come from the file."""
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"rounds": 5, "seed": 4, "algorithm": "fedsgd",
                                                       "lr": 0.2, "baselines": False}))
    proc = run_cli("simulate", "--config", "exp.yaml", "--rounds", "2", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["rounds"] == 2
    assert (written["seed"], written["algorithm"], written["lr"], written["baselines"]) == (4, "fedsgd", 0.2, False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"] == 2 and "local" not in summary


# ----- bad input ----------------------------------------------------------------------------------


def _files(root: Path) -> None:
    frame = cohort_frame("binary", sites=3, rows_per_site=30)
    write_csv(root / "cohort.csv", frame)
    tiny = frame.copy()
    tiny.loc[tiny.index[-2:], "hospital"] = "tiny"  # a site with 2 rows
    write_csv(root / "tiny_site.csv", tiny)
    dated = frame.copy()
    dated["admitted"] = [20210101 + i % 28 for i in range(len(dated))]
    write_csv(root / "dates.csv", dated)
    (root / "notes").mkdir()
    (root / "notes" / "mine.txt").write_text("not a run")
    one_class = frame.copy()
    one_class["y"] = 1
    write_csv(root / "one_class.csv", one_class)
    garbage = frame.copy()
    garbage["age"] = np.arange(len(garbage)) % 40 + 30
    garbage["age"] = garbage["age"].astype(object)
    garbage.loc[4, "age"] = "abc"  # 5th data row (line 6 of the file, after the header)
    write_csv(root / "garbage.csv", garbage)
    (root / "typo.yaml").write_text("rounds: 2\nroundz: 3\n")
    (root / "taken").write_text("a file where the run folder should go\n")


CSV = ("--site", "hospital", "--drop", "patient_id", "--rounds", "1")

# id -> (arguments, words the single error line must contain)
BAD_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "missing-file": (("--data", "nope.csv", "--label", "y"), ("nope.csv", "not found")),
    "unknown-label": (("--data", "cohort.csv", "--label", "outcome", *CSV), ("'outcome'", "not found", "hospital")),
    "unknown-site": (("--data", "cohort.csv", "--label", "y", "--site", "clinic", "--rounds", "1"),
                     ("'clinic'", "not found")),
    "yyyymmdd-dates": (("--data", "dates.csv", "--label", "y", *CSV), ("'admitted'", "YYYYMMDD", "--drop admitted")),
    "out-not-a-run-folder": (("--rounds", "1", "--no-baselines", "--out", "notes"),
                             ("'notes'", "not a fedcare run folder", "'mine.txt'")),
    "one-class-label": (("--data", "one_class.csv", "--label", "y", *CSV), ("label 'y'", "single value")),
    "garbage-number": (("--data", "garbage.csv", "--label", "y", *CSV), ("'age'", "row 5", "'abc'")),
    "unknown-algorithm": (("--algorithm", "fedfoo", "--rounds", "1"), ("unknown algorithm", "'fedfoo'")),
    "yaml-unknown-key": (("--config", "typo.yaml"), ("unknown config key", "'roundz'")),
    "yaml-missing": (("--config", "missing.yaml"), ("config file", "missing.yaml", "not found")),
    "zero-rounds": (("--rounds", "0",), ("rounds", "greater than or equal to 1")),
    "out-is-a-file": (("--rounds", "1", "--no-baselines", "--out", "taken"), ("taken",)),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, worker_id):
    """The 12 refused runs, made once per test session (conftest.built_once; 12 CLI starts on every
    xdist worker otherwise)."""

    def build(folder: Path) -> None:
        _, results = _bad_runs(folder / "bad")
        (folder / "bad-runs.json").write_text(json.dumps({case: [p.returncode, p.stdout, p.stderr]
                                                          for case, p in results.items()}))

    folder = built_once(tmp_path_factory, worker_id, "bad-runs", build)
    saved = json.loads((folder / "bad-runs.json").read_text())
    return folder / "bad", {case: subprocess.CompletedProcess([], code, out, err)
                            for case, (code, out, err) in saved.items()}


def _bad_runs(root: Path) -> tuple[Path, dict]:
    root.mkdir(exist_ok=True)
    _files(root)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case: pool.submit(run_cli, "simulate", *args, *(() if "--out" in args else
                                                                      ("--out", f"run-{case}")), cwd=root)
                   for case, (args, _) in BAD_INPUTS.items()}
        results = {case: f.result() for case, f in futures.items()}
    return root, results


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_an_error_naming_the_problem(bad_runs, case):
    root, results = bad_runs
    proc = results[case]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("error: ")
    message = " ".join(proc.stderr.split())  # undo any line wrapping before looking for the words
    for word in BAD_INPUTS[case][1]:
        assert word in message, (word, message)
    assert not (root / f"run-{case}" / "summary.json").exists()


def test_a_two_patient_site_trains_and_the_terminal_says_it_is_not_evaluated(bad_runs):
    root, _ = bad_runs
    proc = run_cli("simulate", "--data", "tiny_site.csv", "--label", "y", *CSV, "--out", "tiny", cwd=root)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "warning: site 'tiny' has 2 rows and none to test on" in said
    assert (root / "notes" / "mine.txt").read_text() == "not a run"  # the refused --out was left as it was


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_error_is_exactly_one_line(bad_runs, case):
    """Long messages too: a console that wraps at the terminal width would split them."""
    _, results = bad_runs
    lines = results[case].stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
