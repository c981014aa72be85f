"""report.html and the benchmark page in a real headless Chromium: each page renders (every figure
decodes), no block overlaps another or leaves the window, and the numbers shown are summary.json's."""

from __future__ import annotations

import csv
import json
import math

import pytest
from browser import assert_no_overlap, chromium, screenshot
from conftest import cohort_frame, write_csv

import fedcare
from fedcare.core.config import resolve_config
from fedcare.interfaces import figures, htmlreport
from fedcare.interfaces.bench import run_benchmark

IMAGES_JS = "return Array.from(document.images).map(i => [i.closest('figure').id, i.naturalWidth, i.width]);"
CELLS_JS = """return Array.from(document.querySelectorAll('#sites td[data-value]')).map(td =>
  [td.dataset.model, td.dataset.site, td.dataset.metric, td.dataset.value, td.textContent]);"""


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _check_page(driver, run_dir, shot) -> tuple[dict, set[str]]:
    """Load one run's report.html; after checking the page against it, return its summary and the
    models its table shows."""
    summary = json.loads((run_dir / "summary.json").read_text())
    driver.get((run_dir / "report.html").as_uri())
    assert driver.title == f"{summary['dataset']} · {summary['algorithm']}"
    images = driver.execute_script(IMAGES_JS)
    assert images and all(natural > 0 and 0 < shown <= 1280 for _, natural, shown in images), images
    assert_no_overlap(driver)
    cells = driver.execute_script(CELLS_JS)
    sites = summary["federated"]["sites"]
    assert {c[1] for c in cells} >= set(sites) | {"mean", "worst"}
    for model, site, metric, value, text in cells:
        block = summary[model]
        expected = (block["mean"] if site == "mean" else block["worst_site"] if site == "worst"
                    else block["sites"][site])[metric]
        assert float(value) == expected and text.startswith(f"{expected:.3f}")
        low = block["sites"].get(site, {}).get(f"{metric}_low")
        if low is not None:  # a site's interval is shown beside its value, and holds it
            assert f"[{low:.3f}, " in text and low <= expected <= block["sites"][site][f"{metric}_high"]
    screenshot(driver, shot)
    return summary, {c[0] for c in cells}


def test_reports_of_dp_attack_personalized_and_200_site_runs_and_a_benchmark_page(tmp_path, browser, monkeypatch):
    monkeypatch.setenv("FEDCARE_REPORT_FIGURES", "1")
    runs = {
        "dp": {"rounds": 2, "site_dp_epsilon": 5.0, "baselines": False},  # record-level DP costs ~30 s of accounting
        "attack": {"rounds": 2, "attack": "sign-flip", "attackers": 1, "aggregator": "median", "baselines": False},
        "personalized": {"rounds": 2, "personalization": "ditto"},
        "sites200": {"data": str(write_csv(tmp_path / "c200.csv", cohort_frame(sites=200, rows_per_site=20))),
                     "label": "y", "site": "hospital", "drop": ["patient_id"], "rounds": 1, "baselines": False},
    }
    pages = {}
    for name, settings in runs.items():
        fedcare.simulate(out=str(tmp_path / name), **settings)
        summary, models = _check_page(browser, tmp_path / name, tmp_path / f"{name}.png")
        ids = set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        assert {"fig-sites", "fig-baselines", "fig-rounds", "fig-train-loss", "config"} <= ids, ids
        assert models == {m for m in ("local", "federated", "personalized", "pooled", "constant") if m in summary}
        pages[name] = (summary, ids, browser.find_element("tag name", "body").text)

    summary, ids, text = pages["dp"]
    assert "fig-epsilon" in ids
    assert f"site-level DP: ε spent {summary['privacy']['epsilon']:.3f} of 5.0" in text

    summary, ids, text = pages["attack"]
    attacker = summary["attack"]["sites"][0]
    assert {"fig-anomaly-cosine_consensus", "fig-anomaly-norm_ratio", "flags"} <= ids
    assert f"sign-flip by {attacker}" in text and attacker in summary["anomalies"]["flagged_sites"]
    assert f"flagged sites: {', '.join(summary['anomalies']['flagged_sites'])}" in text

    summary, ids, text = pages["personalized"]
    swiss, cleveland = (summary["federated"]["sites"][s] for s in ("switzerland", "cleveland"))  # 16 test rows, 104
    assert swiss["accuracy_high"] - swiss["accuracy_low"] > 1.5 * (cleveland["accuracy_high"] - cleveland["accuracy_low"])
    assert all(v["roc_auc_low"] <= v["roc_auc"] <= v["roc_auc_high"] for v in summary["federated"]["sites"].values())
    assert "personalized" in summary and "fig-sites" in ids  # its column and forest rows: checked in the loop
    assert "fig-reliability" in ids  # a binary task: calibration of the federated and personalized models
    assert f"federated {summary['calibration']['federated']['pooled']['brier']:.3f}" in text

    summary, ids, text = pages["sites200"]
    assert len(summary["federated"]["sites"]) == 200 and "H200" in text
    assert "spread per round as a band" in browser.find_element("css selector", "#fig-rounds figcaption").text

    bench = tmp_path / "bench"
    run_benchmark(resolve_config({"rounds": 2}), ["fedavg"], seeds=2, workers=2, out=bench)
    browser.get((bench / "report.html").as_uri())
    assert_no_overlap(browser)
    images = browser.execute_script(IMAGES_JS)
    assert [i[0] for i in images] == ["fig-curve", "fig-worst"] and all(i[1] > 0 for i in images)
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#evidence tr')).slice(1)"
                                   ".map(tr => Array.from(tr.cells).map(td => td.textContent));")
    with (bench / "table.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [row[:4] for row in shown] == [[r["entry"], r["hyperparameters"].replace("{}", "defaults"), r["mean"],
                                           r["worst_site"]] for r in table]
    screenshot(browser, tmp_path / "bench.png")


def test_legends_sit_outside_the_axes_and_rounds_are_whole_numbers():
    fig = figures.lines({f"site{i}": [(1, 0.1 * i), (2, 0.2 * i), (3, 0.25 * i)] for i in range(5)}, "cosine",
                        budget=1.0, marks={"site0": [(2, 0.0)]})
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())
    assert all(float(t).is_integer() for t in ax.get_xticks() if 1 <= t <= 3)
    assert len(ax.get_legend().get_texts()) == 7  # five sites, the budget, the flagged rounds
    assert not math.isnan(ax.get_ylim()[0])
    one = figures.per_site_rounds({"federated": {"a": [(1, 0.5)], "b": [(1, 0.7)]}}, "test accuracy")
    one.canvas.draw()
    ax = one.axes[0]
    assert list(ax.get_xticks()) == [1]  # a one-round run: round 1, not 0.95 ... 1.05
    assert all(line.get_marker() == "o" for line in ax.get_lines())  # one point per line, drawn as a point


def test_many_sites_are_one_artist_and_beyond_the_threshold_a_band_with_the_worst_named():
    curves = {f"s{i:02d}": [(1, 0.5 + i / 100), (2, 0.6 + i / 100)] for i in range(30)}
    ax = figures.per_site_rounds({"federated": curves}, "test accuracy").axes[0]
    assert [len(c.get_segments()) for c in ax.collections] == [30]  # one artist, a LineCollection
    assert [line.get_label() for line in ax.get_lines()] == ["mean over sites"]
    curves |= {f"s{i:02d}": [(1, 0.5 + i / 100), (2, 0.6 + i / 100)] for i in range(30, 60)}
    curves["s07"] = [(1, 0.1), (2, 0.95)]  # lowest once, but not at the end: not among the worst
    ax = figures.per_site_rounds({"federated": curves}, "test accuracy", band_above=50).axes[0]
    span, quartiles = (c.get_paths()[0].vertices[:, 1] for c in ax.collections)
    assert (span.min(), span.max()) == (0.1, 0.6 + 59 / 100) and 0.1 < quartiles.min() < quartiles.max() < span.max()
    assert [t.get_text() for t in ax.texts] == ["worst sites (red): s00, s01, s02"]
    assert len([line for line in ax.get_lines() if line.get_color() == "#d62728"]) == 3
    assert figures.lines(curves, "ε spent", higher_is_better=False).axes[0].texts[0].get_text().endswith("s59, s58, s57")
    assert htmlreport.BAND_SITES == figures.BAND_SITES and htmlreport.WORST_NAMED == figures.WORST_NAMED
