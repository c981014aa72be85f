"""A site's rows as NumPy blocks (fedcare.data.sitetable) give the cells, counts and statistics the
DataFrame path gives, bit for bit; one file's sites are views of its blocks."""

from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.data.columns import ColumnTypes, TypedRows
from fedcare.data.loader import _sites_from_column
from fedcare.data.preprocessing import site_stats
from fedcare.data.readers import read_table, read_table_typed
from fedcare.data.sitetable import SiteTable
from fedcare.data.values import parse_numbers, present_cells


def test_parsed_and_present_cells_match_the_frame_rules():
    frame = pd.DataFrame({"a": [1.5, np.nan, np.inf, 4.0], "t": pd.Series(["1", None, "x", "2e3"], dtype=object),
                          "s": pd.Series(["u", "v", None, "w"], dtype=object)})
    table = SiteTable.from_frame(frame)
    columns = ["t", "a", "s"]
    np.testing.assert_array_equal(table.parsed(columns), parse_numbers(frame[columns]))  # inf: NaN, 'x': NaN
    np.testing.assert_array_equal(table.present(columns), present_cells(frame[columns]))
    np.testing.assert_array_equal(table.complete(["a", "s"]), frame[["a", "s"]].notna().all(axis=1).to_numpy())
    part = table.take(np.array([True, False, True, True]))
    assert list(part.index) == [0, 2, 3] and part["s"].tolist() == ["u", None, "w"]


def test_the_sites_of_one_file_are_views_of_its_blocks_in_file_order():
    frame = pd.DataFrame({"x": np.arange(6, dtype=np.float64),
                          "site": pd.Series(["b", "a", "b", "a", "c", "b"], dtype=object)})
    sites = _sites_from_column(frame, "site", "f.csv")
    assert [s.site_id for s in sites] == ["b", "a", "c"]
    assert [s.frame["x"].tolist() for s in sites] == [[0.0, 2.0, 5.0], [1.0, 3.0], [4.0]]
    assert [list(s.frame.index) for s in sites] == [[0, 2, 5], [1, 3], [4]]
    assert all(np.shares_memory(s.frame.numbers, sites[0].frame.numbers.base) for s in sites)  # no copy per site
    typed = sites[0].frame.parsed(["x"])  # the typed numbers: the same block, read-only
    assert np.shares_memory(typed, sites[0].frame.numbers) and not typed.flags.writeable


def test_site_stats_at_once_equal_one_column_at_a_time_bit_for_bit():
    rng = np.random.default_rng(7)
    types = ColumnTypes(("a", "b", "c"), ("a", "b", "c"), ())
    for rows in (1, 3, 250, 1001):
        block = rng.normal(loc=[1e4, -3.0, 0.0], scale=[1e-3, 7.0, 1e6], size=(rows, 3))
        for missing in (False, rows > 1):
            if missing:
                block[0, 1] = np.nan  # one missing value: every column one at a time
            stats = site_stats(TypedRows(types.numeric, block, {}), types)
            for i, column in enumerate(types.numeric):
                present = block[:, i][~np.isnan(block[:, i])]
                mean = float(present.mean())
                assert stats.numeric[column].mean == mean
                assert stats.numeric[column].m2 == float(np.square(present - mean).sum())
                assert stats.numeric[column].count == present.size


def test_text_columns_cleaned_once_per_distinct_cell_and_odd_numbers_stay_text(tmp_path: Path):
    path = tmp_path / "f.csv"
    path.write_text("site,code,n,odd,y\n"
                    " A ,x,1,-nan,0\n"
                    "A, NA ,2.5,1,1\n"
                    "B,,3e2,2,0\n"
                    " A ,x ,4,3,1\n")
    typed, text = read_table_typed(path, {"site", "y"}), read_table(path)
    assert typed["n"].dtype == np.float64 and typed["n"].tolist() == [1.0, 2.5, 300.0, 4.0]
    assert typed["odd"].dtype == object  # '-nan' is no number and no missing token: the column is text
    assert typed.drop(columns="n").equals(text.drop(columns="n"))
    assert typed["site"].tolist() == ["A", "A", "B", "A"] and typed["code"].tolist() == ["x", None, None, "x"]


def test_reading_in_blocks_types_and_cells_as_reading_whole(tmp_path: Path):
    """Small blocks: a column of numbers whose text comes only in a later block, one whose numbers
    come only later (missing first), one of missing cells only, and a late 'inf' are typed exactly
    as when the file is one block, and the cells are the same."""
    rows = 400
    lines = ["site,late_text,late_numbers,empty,late_inf,n,y"]
    for i in range(rows):
        lines.append(",".join([f"s{i // 50}", "x" if i == rows - 3 else f"{i * 0.5:g}",
                               "NA" if i < 300 else f" {i} ", "" if i % 2 else "na",
                               "inf" if i == rows - 1 else str(i), f"{i / 7:.6g}", str(i % 2)]))
    path = tmp_path / "blocks.csv"
    path.write_text("\n".join(lines) + "\n")
    whole = read_table_typed(path, {"site", "y"})
    blocks = read_table_typed(path, {"site", "y"}, block_bytes=256)  # about 30 blocks of rows
    assert [str(t) for t in whole.dtypes] == ["object", "object", "float64", "object", "object", "float64", "object"]
    assert blocks.dtypes.equals(whole.dtypes) and blocks.equals(whole)
    assert blocks["late_text"].iloc[0] == "0" and blocks["late_text"].iloc[rows - 3] == "x"
    text = read_table(path)
    assert blocks.drop(columns=["late_numbers", "n"]).equals(text.drop(columns=["late_numbers", "n"]))
    np.testing.assert_array_equal(blocks["late_numbers"].to_numpy(), parse_numbers(text["late_numbers"]))
    numbers = read_table_typed(path, {"site", "y", "late_text", "empty", "late_inf"}, block_bytes=256)
    sites = _sites_from_column(numbers, "site", "blocks.csv")  # every site a view of the one block read
    block = sites[0].frame.numbers.base
    assert block.shape == (rows, 2) and all(s.frame.numbers.base is block for s in sites)
    assert np.shares_memory(block, numbers["n"].to_numpy())
    assert [s.frame["n"].tolist() for s in sites] == [whole["n"].iloc[i:i + 50].tolist() for i in range(0, rows, 50)]
