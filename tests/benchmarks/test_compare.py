"""Comparing two runs' summaries: matched by figure, ratios side by side, figures one run lacks."""

from __future__ import annotations

import math

from bench.compare import compare_rows, main


def test_rows_match_by_figure_and_show_how_the_ratio_moved():
    before = [["boot", "3.0 / 1.5 ms", 2.0, "<= 1.5x"], ["old figure", "1 s", 0.5, "< 3 s"]]
    after = [["boot", "2.2 / 1.5 ms", 1.5, "<= 1.5x"], ["new figure", "9 MB", 0.2, "< 60 MB"]]
    rows = compare_rows(before, after)
    assert [r[0] for r in rows] == ["boot", "new figure", "old figure"]
    assert rows[0][1:6] == ["3.0 / 1.5 ms", "2.2 / 1.5 ms", 2.0, 1.5, 0.75]
    assert rows[1][1] == "-" and math.isnan(rows[1][3]) and math.isnan(rows[1][5])
    assert rows[2][2] == "-" and rows[2][6] == "< 3 s"


def test_sub_rows_of_the_same_wording_under_different_figures_stay_apart():
    # "the same in the nodes' CPU a record" sits under both the recorded and the exported cost
    before = [["recorded", "x", 0.12, "< 0.10"], ["  the same in CPU", "143 µs", 0.127, "(context)"],
              ["exported", "y", 0.17, "< 0.10"], ["  the same in CPU", "153 µs", 0.188, "(context)"]]
    after = [["recorded", "x", 0.10, "< 0.10"], ["  the same in CPU", "140 µs", 0.110, "(context)"],
             ["exported", "y", 0.16, "< 0.10"], ["  the same in CPU", "168 µs", 0.134, "(context)"]]
    rows = compare_rows(before, after)
    assert [r[0] for r in rows] == ["recorded", "  the same in CPU", "exported", "  the same in CPU"]
    assert rows[1][1:5] == ["143 µs", "140 µs", 0.127, 0.110]
    assert rows[3][1:5] == ["153 µs", "168 µs", 0.188, 0.134]


def test_an_incomplete_results_directory_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "not a complete results directory" in capsys.readouterr().err
