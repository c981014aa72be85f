"""The reshaped core gives the results recorded before it was reshaped: summary.json (but
wall_seconds), metrics.jsonl and the final model, for a few of benchmarks/equivalence.py's cases
(that script runs all of them).

Bit for bit on the CPU they were recorded on. Another CPU's float kernels (torch picks them by
instruction set) round float32 sums differently in the last bits, which also moves a message's
printed train_loss by a digit or two: there every number must agree to float32 rounding and every
byte count to within a few bytes per message, and the file hashes are not compared."""

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
    if got["summary"] == stored["summary"]:
        assert got["metrics_sha256"] == stored["metrics_sha256"]
        assert got["global_sha256"] == stored["global_sha256"]
    else:
        differences = _differences(got["summary"], stored["summary"], "")
        assert not differences, differences


FLOAT32_ROUNDING = 1e-5  # relative; the differences seen across CPUs are about 1e-7
BYTES_SLACK = 0.01  # relative, for counts of bytes: a printed float may gain or lose a digit


def _differences(got, stored, path: str) -> list[str]:
    """Where `got` is not `stored` to float32 rounding (every key, list entry, int, string and bool exact but
    byte counts)."""
    if isinstance(stored, dict):
        if not isinstance(got, dict) or set(got) != set(stored):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(stored)}"]
        return [d for k in stored for d in _differences(got[k], stored[k], f"{path}/{k}")]
    if isinstance(stored, list):
        if not isinstance(got, list) or len(got) != len(stored):
            return [f"{path}: {got} != {stored}"]
        return [d for i, (g, s) in enumerate(zip(got, stored)) for d in _differences(g, s, f"{path}[{i}]")]
    if isinstance(stored, float) and isinstance(got, float):
        close = abs(got - stored) <= FLOAT32_ROUNDING * max(abs(stored), 1e-6)
        return [] if close else [f"{path}: {got} != {stored}"]
    counts_bytes = any(word in path for word in ("bytes", "upload", "broadcast"))
    if counts_bytes and type(stored) is int and type(got) is int:
        return [] if abs(got - stored) <= BYTES_SLACK * max(stored, 1) else [f"{path}: {got} != {stored}"]
    return [] if got == stored else [f"{path}: {got} != {stored}"]
