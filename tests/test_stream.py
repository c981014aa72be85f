"""Streams in simulation and drift (issue #16): time windows, the drift contract, and replays of a
real cohort (SurvSet's Dialysis: 6,805 Brazilian dialysis patients, their real centres as sites)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.windows import cut_windows
from fedcare.federation.drift import (
    DriftConfig,
    DriftNotice,
    DriftStats,
    detect_drift,
    feature_stats,
    metric_drop,
    metric_judged,
    metric_se,
)


def test_windows_keep_ties_together_and_cut_dates_by_length():
    years = pd.Series(["2001", "2001", "2001", "2002", "2003", "2004", None, "2004"], dtype=object)
    cut = cut_windows(years, "year", windows=2)
    assert cut.index.tolist() == [0, 0, 0, 0, 1, 1, -1, 1]  # 2001's three rows stay in one window
    assert cut.bounds == [("2001", "2002"), ("2003", "2004")]
    dates = pd.Series(["2020-01-01", "2020-03-30", "2020-04-01", "2020-12-31"], dtype=object)
    by_length = cut_windows(dates, "seen", window="90d")
    assert by_length.index.tolist() == [0, 0, 1, 2]  # day 89 is window 0's last; the empty windows are left out
    assert by_length.bounds[2] == ("2020-12-31", "2020-12-31")
    with pytest.raises(DataError, match="row 2.*not a number"):
        cut_windows(pd.Series(["1", "soon"], dtype=object), "t", windows=2)
    with pytest.raises(DataError, match="row 1.*not a date"):
        cut_windows(pd.Series(["yesterday", "2020-01-01"], dtype=object), "t", window="1y")
    with pytest.raises(DataError, match="too few for 3 windows"):
        cut_windows(pd.Series(["1", "1", "2"], dtype=object), "t", windows=3)


def _stats(site: str, value: float, x: np.ndarray) -> DriftStats:
    return DriftStats(site, len(x), "roc_auc", value, True, feature_stats(x, ["age", "bmi"]), se=0.025)


def test_drift_contract_fires_on_a_drop_or_a_shift_and_travels_as_json():
    rng = np.random.default_rng(0)
    before, same = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    config = DriftConfig(drift_threshold=0.05, drift_smd=0.5)
    assert detect_drift(_stats("a", 0.80, before), _stats("a", 0.78, same), config) is None
    dropped = detect_drift(_stats("a", 0.80, before), _stats("a", 0.70, same), config)
    assert dropped.tests == ["metric"] and dropped.drop == pytest.approx(0.10)
    shifted = same + np.array([0.0, 1.0])  # bmi moves by one SD
    notice = detect_drift(_stats("a", 0.80, before), _stats("a", 0.80, shifted), config)
    assert notice.tests == ["inputs"] and list(notice.shifted) == ["bmi"]
    assert notice.shifted["bmi"]["smd"] == pytest.approx(1.0, abs=0.2)
    assert DriftNotice.from_json(json.loads(json.dumps(notice.to_json()))) == notice
    sent = _stats("a", 0.8, shifted)
    assert DriftStats.from_json(json.loads(json.dumps(sent.to_json()))) == sent
    lower = DriftStats("a", 300, "rmse", 1.0, False, {}, 0.05)  # a metric where lower is better: a rise is the drop
    assert detect_drift(lower, DriftStats("a", 300, "rmse", 1.2, False, {}, 0.05), config).tests == ["metric"]
    assert detect_drift(_stats("a", 0.8, before), _stats("a", 0.1, same[:10]), config) is None  # too few rows
    with pytest.raises(DataError, match="compares one site"):
        detect_drift(_stats("a", 0.8, before), _stats("b", 0.8, same), config)
    with pytest.raises(DataError, match="cannot be read"):
        DriftStats.from_json({"site_id": "a", "rows": 3, "metric": "auc", "value": float("nan")})
    with pytest.raises(DataError, match="negative"):
        DriftStats.from_json({**sent.to_json(), "features": {"age": {"count": 5, "mean": 0, "var": -1}}})


def test_a_metric_drop_counts_only_beyond_its_standard_error():
    config = DriftConfig()  # the defaults: a drop beyond 0.05 and 2 standard errors of the difference
    ref = DriftStats("a", 80, "c_index", 0.70, True, se=0.06)
    noisy = DriftStats("a", 80, "c_index", 0.60, True, se=0.06)  # 0.10 worse, but SE of the drop 0.085
    assert detect_drift(ref, noisy, config) is None
    sure = DriftStats("a", 2000, "c_index", 0.60, True, se=0.01)
    notice = detect_drift(DriftStats("a", 2000, "c_index", 0.70, True, se=0.01), sure, config)
    assert notice.tests == ["metric"] and notice.drop_se == pytest.approx(0.01 * 2 ** 0.5)
    assert "SE 0.014" in notice.line()
    small = DriftStats("a", 2000, "c_index", 0.67, True, se=0.001)  # significant, but within the threshold
    assert detect_drift(DriftStats("a", 2000, "c_index", 0.70, True, se=0.001), small, config) is None
    unknown = DriftStats("a", 2000, "c_index", 0.10, True)  # no interval, no SE: not judged, never guessed
    assert not metric_judged(ref, unknown, config) and detect_drift(ref, unknown, config) is None
    assert metric_se({"c_index": 0.7, "c_index_low": 0.6, "c_index_high": 0.8}, "c_index") == pytest.approx(0.051, abs=1e-3)
    assert metric_se({"rmse": 1.0}, "rmse") is None
    with pytest.raises(DataError, match="negative"):
        DriftStats.from_json({**ref.to_json(), "se": -0.1})


def test_unshifted_small_real_centres_do_not_fire_where_a_bare_threshold_would():
    """Six real Dialysis centres of 144-158 patients, each split 5 times at random into two halves of
    about 75 (one distribution: the control); the age-only risk score is scored as a site would, with its
    bootstrap interval. A bare 0.05 threshold fires on many halves by chance; the noise-aware test does
    not. A half scored by the reversed score (its relation to the outcome turned around) mostly fires."""
    from fedcare.learning.intervals import survival_intervals
    from fedcare.learning.metrics import survival_metrics

    frame = _dialysis_frame()
    frame = frame[frame["center"].isin([743, 1064, 1039, 5681, 1437, 120])]
    rng = np.random.default_rng(0)

    def stats(rows: pd.DataFrame, risk_sign: float = 1.0) -> DriftStats:
        t, e, risk = rows["time"].to_numpy(float), rows["event"].to_numpy(float), risk_sign * rows["age"].to_numpy(float)
        m = {**survival_metrics(t, e, risk), **survival_intervals(t, e, risk)}
        return DriftStats("c", len(rows), "c_index", m["c_index"], True, se=metric_se(m, "c_index"))

    config, fired, bare, reversed_fired = DriftConfig(), 0, 0, 0
    for _, centre in frame.groupby("center"):
        for _ in range(5):
            order = rng.permutation(len(centre))
            first, second = centre.iloc[order[: len(centre) // 2]], centre.iloc[order[len(centre) // 2:]]
            reference, new = stats(first), stats(second)
            fired += detect_drift(reference, new, config) is not None
            bare += metric_drop(reference, new) > config.drift_threshold
            reversed_fired += detect_drift(reference, stats(second, -1.0), config) is not None
    assert bare >= 5 and fired <= 1  # 30 unshifted halves: 6 drop beyond 0.05 by chance, 1 is a notice
    assert reversed_fired >= 20  # 22 of 30: on 75 rows even a reversed relation is not always beyond noise


def test_stream_options_refuse_what_they_cannot_do():
    from fedcare.core.config import resolve_config

    base = {"data": ["x.csv"], "label": "y", "site": "s"}
    with pytest.raises(ConfigError, match="set --time-column too"):
        resolve_config({**base, "windows": 3})
    with pytest.raises(ConfigError, match="one of --windows K"):
        resolve_config({**base, "time_column": "t", "windows": 3, "window": "90d"})
    with pytest.raises(ConfigError, match="not a length like 90d"):
        resolve_config({**base, "time_column": "t", "window": "3 months"})
    with pytest.raises(ConfigError, match="secure aggregation is not carried"):
        resolve_config({**base, "time_column": "t", "windows": 3, "secure_aggregation": True})
    with pytest.raises(ConfigError, match="window-patience stops on the validation metric"):
        resolve_config({**base, "time_column": "t", "windows": 3, "window_patience": 2})
    with pytest.raises(ConfigError, match="built-in"):
        resolve_config({"dataset": "heart-disease", "time_column": "t", "windows": 3})


def _dialysis_frame() -> pd.DataFrame:
    """SurvSet's Dialysis cohort, its columns named as the tests use them."""
    pytest.importorskip("SurvSet")
    from SurvSet.data import SurvLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        frame = SurvLoader().load_dataset("Dialysis")["df"]
    frame = frame.drop(columns=["pid"]).rename(columns=lambda c: c.removeprefix("num_").removeprefix("fac_"))
    return frame.astype({"disease": str, "center": int})


def _dialysis(tmp_path: Path) -> pd.DataFrame:
    """Three real centres of SurvSet's Dialysis cohort (690 patients)."""
    frame = _dialysis_frame()
    return frame[frame["center"].isin([2844, 562, 561])].reset_index(drop=True)


def _run(path: Path, out: Path, **extra) -> dict:
    import fedcare

    run = fedcare.simulate({"data": [str(path)], "time": "time", "event": "event", "site": "center",
                            "categorical": ["disease"], "time_column": "arrival", "windows": 2, "rounds": 4,
                            "rounds_per_window": 2, "out": str(out), **extra})
    return run.summary


def test_a_shifted_site_raises_a_drift_notice_and_the_unshifted_control_does_not(tmp_path: Path):
    frame = _dialysis(tmp_path)
    # arrival: a seeded random half of each centre's patients arrives second, so both windows come from
    # one distribution (the control); the shifted copy then changes only centre 562's second window
    frame["arrival"] = np.random.default_rng(0).permutation(np.arange(len(frame)) % 2) + 1
    control = tmp_path / "control.csv"
    frame.to_csv(control, index=False)
    later = (frame["center"] == 562) & (frame["arrival"] == 2)
    shifted = frame.copy()
    shifted.loc[later, "age"] += 20  # SHIFTED: these patients made 20 years older
    shifted.loc[shifted.index[later][:6], "disease"] = "newcode"  # a coding the first window never saw
    shifted_csv = tmp_path / "shifted.csv"
    shifted.to_csv(shifted_csv, index=False)

    quiet = _run(control, tmp_path / "control", replay_windows=1)
    moved = _run(shifted_csv, tmp_path / "shifted")
    assert quiet["drift"]["notices"] == []
    [notice] = moved["drift"]["notices"]
    assert notice["site_id"] == "562" and notice["window"] == 2 and "inputs" in notice["tests"]
    assert "age" in notice["shifted"] and notice["shifted"]["age"]["smd"] > 1
    assert moved["stream"]["new_categories"]["2"]["562"]["disease"]["newcode"] == 6  # reported, not dropped
    assert "newcode" not in json.dumps(quiet["stream"]["new_categories"])

    # the stream block: per window and site each strategy's prequential metric, rows seen, rounds, bytes
    first, second = moved["stream"]["windows"]
    assert first["rounds"] == {"frozen": 4, "continued": 4, "retrained": 4}  # window 1 trains all alike
    assert second["rounds"] == {"frozen": 0, "continued": 2, "retrained": 4}
    assert second["bytes"]["frozen"] == 0 < second["bytes"]["continued"] < second["bytes"]["retrained"]
    for sid, site in second["sites"].items():
        assert set(site["prequential"]) == {"frozen", "continued", "retrained"}
        assert all(0 <= v <= 1 for v in site["prequential"].values())
        assert site["prequential"]["frozen"] == site["prequential"]["continued"]  # one model until window 2 trains
        seen, kept = site["rows_seen"], quiet["stream"]["windows"][1]["sites"][sid]["rows_seen"]
        assert seen["frozen"] == kept["frozen"] and seen["continued"] == seen["retrained"]
        assert seen["continued"] == kept["frozen"] + kept["continued"]  # replay_windows 1 keeps only window 2
    run_dir = tmp_path / "shifted"
    assert json.loads((run_dir / "summary.json").read_text())["drift"] == moved["drift"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} == {"stream:frozen", "stream:continued", "stream:retrained"}
    assert "drift at 562" in (run_dir / "report.html").read_text()


def test_cli_replays_real_time_order_and_prints_the_windows(tmp_path: Path):
    from fedcare.interfaces.cli import app

    frame = _dialysis(tmp_path)
    path = tmp_path / "dialysis.csv"
    frame.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["simulate", "--data", str(path), "--time", "time", "--event", "event",
                                      "--site", "center", "--categorical", "disease", "--time-column", "begin",
                                      "--windows", "3", "--rounds", "3", "--rounds-per-window", "1",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "prequential c_index" in result.output and "windows 2+" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    windows = summary["stream"]["windows"]
    assert [w["from"] for w in windows] == sorted((w["from"] for w in windows), key=int)  # in time order
    assert sum(site["rows_new"] for w in windows for site in w["sites"].values()) == len(frame)
    assert summary["stream"]["totals"]["continued"]["rounds"] == 3 + 2 * 1
    import fedcare

    risk = fedcare.load_model(tmp_path / "run")(frame.head(20))  # the continued model, with its card
    assert risk.shape == (20, 1) and np.isfinite(risk.to_numpy()).all()
    bad = CliRunner().invoke(app, ["simulate", "--data", str(path), "--time", "time", "--event", "event",
                                   "--site", "center", "--time-column", "nope", "--windows", "3",
                                   "--out", str(tmp_path / "bad")])
    assert isinstance(bad.exception, DataError) and "column 'nope' not found" in str(bad.exception)
    assert not (tmp_path / "bad").exists()  # refused before any file is written


def test_continued_stops_a_window_when_its_validation_metric_stops_improving(tmp_path: Path):
    frame = _dialysis(tmp_path)
    path = tmp_path / "dialysis.csv"
    frame.to_csv(path, index=False)
    import fedcare

    run = fedcare.simulate({"data": [str(path)], "time": "time", "event": "event", "site": "center",
                            "categorical": ["disease"], "time_column": "begin", "windows": 3, "rounds": 4,
                            "val_fraction": 0.2, "rounds_per_window": 30, "window_patience": 1,
                            "out": str(tmp_path / "run")})
    stream = run.summary["stream"]
    assert stream["window_patience"] == 1 and stream["rounds_per_window"] == 30
    spent = [w["rounds"]["continued"] for w in stream["windows"][1:]]
    assert all(2 <= r < 30 for r in spent), spent  # stopped on validation, after at least one round without gain
    assert [w["rounds"]["retrained"] for w in stream["windows"][1:]] == [4, 4]  # retrained keeps its full rounds


def test_continued_keeps_the_learning_rate_that_scores_best_on_validation(tmp_path: Path):
    frame = _dialysis(tmp_path)
    path = tmp_path / "dialysis.csv"
    frame.to_csv(path, index=False)
    import fedcare

    def run(name: str, lrs: list[float]):
        return fedcare.simulate({"data": [str(path)], "time": "time", "event": "event", "site": "center",
                                 "categorical": ["disease"], "time_column": "begin", "windows": 2, "rounds": 3,
                                 "val_fraction": 0.2, "rounds_per_window": 6, "window_patience": 1,
                                 "window_metric": "neg_partial_loglik", "window_lrs": lrs,
                                 "out": str(tmp_path / name)})

    both, alone = run("both", [0.05, 0.4]), {lr: run(f"lr{lr}", [lr]) for lr in (0.05, 0.4)}
    window = both.summary["stream"]["windows"][1]
    tries = {t["lr"]: t for t in window["continued_tries"]}
    assert set(tries) == {0.05, 0.4} and window["continued_lr"] == min(tries, key=lambda lr: tries[lr]["val"])
    assert window["rounds"]["continued"] == sum(t["rounds"] for t in tries.values()) == sum(
        r.summary["stream"]["windows"][1]["rounds"]["continued"] for r in alone.values())  # every try is paid for
    kept = alone[window["continued_lr"]].global_params
    assert all(np.array_equal(both.global_params[k], kept[k]) for k in kept)  # the kept model is that try's, unchanged
    assert tries[0.05]["val"] != tries[0.4]["val"]  # the two tries did train differently
    from fedcare.core.config import resolve_config

    with pytest.raises(ConfigError, match="window-lrs keeps the learning rate"):
        resolve_config({"data": ["x.csv"], "label": "y", "site": "s", "time_column": "t", "windows": 3,
                        "val_fraction": 0.2, "window_lrs": [0.1]})
    with pytest.raises(ConfigError, match="finite number > 0"):
        resolve_config({"data": ["x.csv"], "label": "y", "site": "s", "time_column": "t", "windows": 3,
                        "val_fraction": 0.2, "window_patience": 2, "window_lrs": [0.1, -1]})
