"""The benchmark report's issue-23 tables: which figures they take and how they count the pairs."""

from __future__ import annotations

from benchmarks.report import Index, _batch_one, _pair_count, _targets
from benchmarks.suite import Row

PROBLEMS = [f"p{k}" for k in range(5)]
SOLVERS = ["SCS", "CLARABEL"]


def _rows(default_peer: dict[tuple[str, str], float], raw_ratio: float) -> list[Row]:
    """Rows at batches 1 and 128: every pair's default f+b / cvxpylayers as given, forward over
    raw-build ``raw_ratio`` for the four plain-forward variants (the default's off by 10, so a
    mean would show it and the median does not)."""
    rows = []
    for p in PROBLEMS:
        for s in SOLVERS:
            for batch in (1, 128):
                rows.append(Row(p, s, batch, "raw-build", 1.0, None, 1.0, 3))
                rows.append(Row(p, s, batch, "cvxpylayers", 5.0, 5.0, 10.0, 3))
                for side in ("lower", "upper", "central"):
                    rows.append(Row(p, s, batch, f"lpgd-{side}", 1.0, 1.0, 2.0, 3, "", 0.2, raw_ratio))
                rows.append(
                    Row(p, s, batch, "default", 1.0, 2.0, 3.0, 3, "", default_peer[p, s], 10 * raw_ratio)
                )
    return rows


def _peer(meeting: int) -> dict[tuple[str, str], float]:
    pairs = [(p, s) for p in PROBLEMS for s in SOLVERS]
    return {pair: 0.3 if k < meeting else 0.5 for k, pair in enumerate(pairs)}


def test_default_gradient_target_needs_eight_of_ten_pairs():
    for meeting, verdict in ((8, "**met**"), (7, "**not met**")):
        text = "\n".join(_targets(Index(_rows(_peer(meeting), 1.05)), [], {}))
        assert f"met on {meeting} of 10 pairs: {verdict}" in text
        assert text.count("0.30 (met)") == meeting and text.count("0.50 (**not met**)") == 10 - meeting


def test_batch_one_table_takes_the_paired_median_of_the_plain_forwards():
    met = "\n".join(_batch_one(Index(_rows(_peer(10), 1.05)), {}))
    assert met.count("1.05 (met)") == 10 and "met on 10 of 10 pairs: **met**" in met
    missed = "\n".join(_batch_one(Index(_rows(_peer(10), 1.15)), {}))
    assert missed.count("1.15 (**not met**)") == 10 and "met on 0 of 10 pairs: **not met**" in missed


def test_pair_count_without_measurements_is_not_met():
    assert _pair_count([None, None], 1.1, "x") == "x: met on 0 of 2 pairs: **not met**"
