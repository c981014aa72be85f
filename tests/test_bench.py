"""`fedcare benchmark`: entries × seeds in parallel processes, the evidence table, tuning on validation."""

import csv

import pytest

from fedcare.core.config import resolve_config
from fedcare.interfaces.bench import Entry, run_benchmark
from fedcare.core import ConfigError


def test_entry_syntax():
    e = Entry.parse("fedavg+ditto@median")
    assert (e.algorithm, e.personalization, e.aggregator, e.model) == ("fedavg", "ditto", "median", "personalized")
    assert Entry.parse("fedprox").name == "fedprox" and Entry.parse("fedavg@krum").model == "federated"


def test_benchmark_writes_table_csv_and_plot_with_baselines(tmp_path):
    base = resolve_config({"rounds": 2})
    result = run_benchmark(base, ["fedavg", "fedavg+finetune"], seeds=2, workers=2, out=tmp_path)
    names = [r["entry"] for r in result["rows"]]
    assert names == ["fedavg", "fedavg+finetune", "(local baseline, as fedavg)", "(pooled baseline, as fedavg)"]
    table = (tmp_path / "table.md").read_text()
    assert "± " in table and "worst-site accuracy" in table
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["entry"] for r in rows] == names
    svg = (tmp_path / "curves.svg").read_text()
    assert "<svg" in svg and svg.count('<g id="line2d_') >= 2  # matplotlib's lines, one per entry at least
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2
    assert (tmp_path / "runs" / "fedavg-seed1" / "summary.json").is_file()


def test_tuning_picks_from_the_grid_on_validation(tmp_path):
    result = run_benchmark(resolve_config({"rounds": 2}), ["fedavg"], seeds=1, workers=1, out=tmp_path, tune=True)
    assert result["rows"][0]["hyperparameters"]["lr"] in (0.01, 0.03, 0.1)
    assert "Validation score of each candidate" in (tmp_path / "table.md").read_text()


def test_a_bad_entry_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="personalization"):
        run_benchmark(resolve_config({"rounds": 1}), ["fedavg+nonsense"], seeds=1, workers=1, out=tmp_path)
    assert not (tmp_path / "runs").exists()
