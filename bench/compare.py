"""Two runs of the suite side by side: ``python -m bench.compare BEFORE [AFTER]``.

Each argument is a directory of results as ``python -m bench`` writes them (``bench/results/``;
copy it aside before a change: ``cp -r bench/results /tmp/before``); AFTER defaults to the last
run's. Every figure of the summary table is shown with both runs' measurements and ratios to
their own baselines, and how the ratio moved (ratios, not times: each run's baselines were
measured on that run's machine and load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.__main__ import summary
from bench.report import RESULTS, table


def keyed(rows: list[list]) -> dict[tuple[str, str], list]:
    """Each summary row under its figure and, for a sub-row (indented: "  the same in the
    nodes' CPU a record"), the figure above it: sub-rows of the same wording under different
    figures are different figures."""
    out: dict[tuple[str, str], list] = {}
    parent = ""
    for row in rows:
        label = row[0]
        if label.startswith(" "):
            out[(parent, label)] = row
        else:
            parent = label
            out[("", label)] = row
    return out


def compare_rows(before: list[list], after: list[list]) -> list[list]:
    """``[figure, measured before, measured after, ratio before, ratio after, after / before, target]``
    for every figure either run has, in the order the newer run lists them."""
    old, new = keyed(before), keyed(after)
    order = list(new) + [key for key in old if key not in new]
    rows = []
    for key in order:
        b, a = old.get(key), new.get(key)
        ratio_b, ratio_a = (b[2] if b else float("nan")), (a[2] if a else float("nan"))
        change = ratio_a / ratio_b if b and a and ratio_b else float("nan")
        rows.append([key[1], b[1] if b else "-", a[1] if a else "-", ratio_b, ratio_a, change, (a or b)[3]])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="a results directory from an earlier run")
    parser.add_argument("after", type=Path, nargs="?", default=RESULTS, help="default: bench/results/")
    args = parser.parse_args(argv)
    runs = []
    for where in (args.before, args.after):
        try:
            runs.append(summary(where))
        except FileNotFoundError as exc:
            print(f"bench.compare: {where} is not a complete results directory ({exc.filename} is missing): "
                  "run `python -m bench` and copy bench/results/ aside", file=sys.stderr)
            return 2
    (before, machine_b), (after, machine_a) = runs
    print(f"before: {args.before} ({machine_b['date']}, {machine_b['cpus']} CPUs)\n"
          f"after:  {args.after} ({machine_a['date']}, {machine_a['cpus']} CPUs)\n")
    print(table(["figure", "before", "after", "ratio before", "ratio after", "after / before", "target"],
                compare_rows(before, after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
