"""The reshaped core gives the results recorded before it was reshaped: summary.json (but
wall_seconds), metrics.jsonl and the final model, for a few of benchmarks/equivalence.py's cases
(that script runs all of them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "equivalence.py"
CASES = ["default", "heart-mlp-fedbn", "csv-multiclass-dirichlet", "ovarian"]


@pytest.fixture(scope="module")
def equivalence():
    spec = importlib.util.spec_from_file_location("equivalence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", CASES)
def test_same_results_as_recorded(equivalence, case, tmp_path):
    if case.startswith("ovarian"):
        pytest.importorskip("SurvSet")
    stored = json.loads(equivalence.STORED.read_text())[case]
    files = tmp_path / "files"
    files.mkdir()
    values = equivalence.cases(equivalence.write_files(files))[case]
    got = equivalence.result(values, tmp_path / "run", files)
    assert got["summary"] == stored["summary"]
    assert got["metrics_sha256"] == stored["metrics_sha256"]
    assert got["global_sha256"] == stored["global_sha256"]
