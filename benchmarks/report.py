"""Markdown report: machine info, target verdicts, summary at the largest batch, full tables."""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from benchmarks.suite import LPGD_SIDES, PEER_ARGS, SOLVER_ARGS, Row

TARGET_PEER = 1 / 3  # (1) f+b <= 1/3 of cvxpylayers f+b (default gradient; one-sided LPGD alongside)
TARGET_PEER_SHARE = 0.8  # ... on at least this share of the problem/solver pairs (8 of 10)
TARGET_BATCH_ONE = 1.1  # batch 1: forward <= 1.1x raw build+solve
TARGET_RAW = 1.2  # (2) forward <= 1.2x raw solver
TARGET_ONE_SIDE, TARGET_CENTRAL = 1.0, 2.0  # (3) backward / forward
TARGET_BUILD_S, TARGET_PEAK = 10.0, 3 * 2**30  # (4) 10^5 LP build


def _version(name: str) -> str:
    if name == "cvxlpgd":  # importable from the checkout without being installed
        import cvxlpgd

        return cvxlpgd.__version__
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """CPU model, core count, library versions, date."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "CPU": cpu,
        "cores (os.cpu_count)": str(os.cpu_count()),
        "python": platform.python_version(),
    }
    for pkg in ("cvxlpgd", "torch", "cvxpy", "scs", "clarabel", "diffcp", "cvxpylayers", "numpy", "scipy"):
        info[pkg] = _version(pkg)
    return info


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= limit else "**not met**"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


class Index:
    """Rows by (problem, solver, batch, variant)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = {(r.problem, r.solver, r.batch, r.variant): r for r in rows}
        self.problems = list(dict.fromkeys(r.problem for r in rows))
        self.solvers = list(dict.fromkeys(r.solver for r in rows))
        self.batches = sorted({r.batch for r in rows})

    def get(self, problem: str, solver: str, batch: int, variant: str, field: str) -> float | None:
        row = self.rows.get((problem, solver, batch, variant))
        return None if row is None else getattr(row, field)

    def lpgd_forward(self, problem: str, solver: str, batch: int) -> float | None:
        """The LPGD forward (same for every side): median of the three variants' medians."""
        return self._median(problem, solver, batch, [f"lpgd-{s}" for s in LPGD_SIDES], "forward")

    def forward_over_raw(self, problem: str, solver: str, batch: int) -> float | None:
        """The forward over raw build+solve: median of the paired ratios of every variant whose
        forward is a plain solve of each item (the three LPGD sides and the default)."""
        variants = [f"lpgd-{s}" for s in LPGD_SIDES] + ["default"]
        return self._median(problem, solver, batch, variants, "raw_ratio")

    def _median(self, problem: str, solver: str, batch: int, variants: list[str], field: str) -> float | None:
        values = sorted(v for name in variants if (v := self.get(problem, solver, batch, name, field)))
        return values[len(values) // 2] if values else None


def _targets(ix: Index, scale: list[dict], titles: dict[str, str]) -> list[str]:
    big = ix.batches[-1]
    out = [f"## Targets (batch {big}, per item)", ""]
    rows = []
    defaults: list[float | None] = []
    for p in ix.problems:
        for s in ix.solvers:
            fwd = ix.lpgd_forward(p, s, big)
            r1, r2 = ix.get(p, s, big, "lpgd-lower", "peer_ratio"), ix.forward_over_raw(p, s, big)
            r_default = ix.get(p, s, big, "default", "peer_ratio")
            defaults.append(r_default)
            floor = _two_raw_solves(ix, p, s, big)
            lower = _ratio(ix.get(p, s, big, "lpgd-lower", "backward"), fwd)
            upper = _ratio(ix.get(p, s, big, "lpgd-upper", "backward"), fwd)
            central = _ratio(ix.get(p, s, big, "lpgd-central", "backward"), fwd)
            one_side = max(lower or 0, upper or 0) or None
            rows.append(
                [
                    titles.get(p, p),
                    s,
                    f"{_fmt(r_default)} ({_verdict(r_default, TARGET_PEER)})",
                    f"{_fmt(r1)} ({_verdict(r1, TARGET_PEER)})",
                    _fmt(floor),
                    f"{_fmt(r2)} ({_verdict(r2, TARGET_RAW)})",
                    f"{_fmt(lower)} / {_fmt(upper)} ({_verdict(one_side, TARGET_ONE_SIDE)})",
                    f"{_fmt(central)} ({_verdict(central, TARGET_CENTRAL)})",
                ]
            )
    out += _table(
        [
            "problem",
            "solver",
            "(1) fwd+default bwd / cvxpylayers f+b, median of paired repeats (<= 0.33)",
            "(1) one-sided: fwd+lower bwd / cvxpylayers f+b (<= 0.33)",
            "floor of one-sided (1): two raw solves / cvxpylayers f+b",
            "(2) fwd / raw, median of paired repeats (<= 1.2)",
            "(3) lower / upper bwd / fwd (<= 1.0)",
            "(3) central bwd / fwd (<= 2.0)",
        ],
        rows,
    )
    out += [
        "",
        _pair_count(
            defaults,
            TARGET_PEER,
            f"(1) with the default gradient (at least {TARGET_PEER_SHARE:.0%} of the pairs)",
            math.ceil(TARGET_PEER_SHARE * len(defaults)),
        ),
    ]
    big_scale = [r for r in scale if r.get("n") == 100_000]
    out += [""]
    if big_scale:
        r = big_scale[0]
        build, peak = r.get("build_s"), max(r.get("rss_delta", 0), r.get("tracemalloc_peak", 0))
        ok = "error" not in r and build is not None and build < TARGET_BUILD_S and peak < TARGET_PEAK
        out.append(
            f"(4) 10^5-variable LP: build {_fmt(build)} s, peak {peak / 2**20:.0f} MiB "
            f"(max of ru_maxrss delta and tracemalloc peak): **{'met' if ok else 'not met'}**"
            + (f" — {r['error']}" if "error" in r else "")
        )
    else:
        out.append("(4) 10^5-variable LP: not run (quick mode or --no-scale).")
    return out + [""]


def _pair_count(ratios: list[float | None], limit: float, what: str, needed: int | None = None) -> str:
    """How many problem/solver pairs meet ``limit``: all of them, or at least ``needed``."""
    known = [r for r in ratios if r is not None]
    met = sum(r <= limit for r in known)
    enough = known and met >= (len(ratios) if needed is None else needed)
    return f"{what}: met on {met} of {len(ratios)} pairs: **{'met' if enough else 'not met'}**"


def _batch_one(ix: Index, titles: dict[str, str]) -> list[str]:
    """Batch 1, per call: the layer's forward against the raw solver (the layer's own work is
    the difference), and forward + default backward against cvxpylayers'."""
    if 1 not in ix.batches:
        return []
    out = ["## Batch 1 (ms per call, median)", ""]
    rows, ratios = [], []
    for p in ix.problems:
        for s in ix.solvers:
            raw, fwd = ix.get(p, s, 1, "raw-build", "forward"), ix.lpgd_forward(p, s, 1)
            ratio = ix.forward_over_raw(p, s, 1)
            ratios.append(ratio)
            peer = ix.get(p, s, 1, "default", "peer_ratio")
            own = None if fwd is None or raw is None else fwd - raw
            rows.append(
                [
                    titles.get(p, p),
                    s,
                    _fmt(raw, 3),
                    _fmt(fwd, 3),
                    _fmt(own, 3),
                    f"{_fmt(ratio)} ({_verdict(ratio, TARGET_BATCH_ONE)})",
                    _fmt(ix.get(p, s, 1, "default", "total"), 3),
                    _fmt(ix.get(p, s, 1, "cvxpylayers", "total"), 3),
                    _fmt(peer),
                ]
            )
    out += _table(
        [
            "problem",
            "solver",
            "raw build+solve",
            "fwd (LPGD)",
            "fwd - raw",
            f"fwd / raw build+solve, median of paired repeats (<= {TARGET_BATCH_ONE})",
            "f+b default",
            "f+b cvxpylayers",
            "f+b default / cvxpylayers f+b (paired)",
        ],
        rows,
    )
    return out + [
        "",
        _pair_count(ratios, TARGET_BATCH_ONE, f"forward <= {TARGET_BATCH_ONE}x raw at batch 1"),
        "",
    ]


def _two_raw_solves(ix: Index, problem: str, solver: str, batch: int) -> float | None:
    """What (1) cannot go below with a backward that re-solves: the raw solver run twice on the
    forward's data (the cheaper of building fresh and updating one object), over cvxpylayers'
    forward + backward (medians, not paired)."""
    raws = [ix.get(problem, solver, batch, v, "forward") for v in ("raw-build", "raw-update")]
    known = [r for r in raws if r is not None]
    peer = ix.get(problem, solver, batch, "cvxpylayers", "total")
    return _ratio(2 * min(known), peer) if known else None


def _summary(ix: Index, titles: dict[str, str]) -> list[str]:
    big = ix.batches[-1]
    out = [f"## Summary at batch {big} (ms per item, median)", ""]
    rows = []
    for p in ix.problems:
        for s in ix.solvers:
            g = lambda v, f, p=p, s=s: ix.get(p, s, big, v, f)  # noqa: E731
            rows.append(
                [
                    titles.get(p, p),
                    s,
                    _fmt(g("raw-build", "forward")),
                    _fmt(g("raw-update", "forward")),
                    _fmt(ix.lpgd_forward(p, s, big)),
                    _fmt(g("lpgd-lower", "backward")),
                    _fmt(g("lpgd-upper", "backward")),
                    _fmt(g("lpgd-central", "backward")),
                    _fmt(g("lpgd-lower", "total")),
                    _fmt(g("default", "total")),
                    _fmt(g("implicit", "total")),
                    _fmt(g("cvxpylayers", "total")),
                ]
            )
    return (
        out
        + _table(
            [
                "problem",
                "solver",
                "raw build+solve",
                "raw update+solve",
                "fwd (LPGD)",
                "bwd lower",
                "bwd upper",
                "bwd central",
                "f+b lower",
                "f+b default",
                "f+b implicit",
                "f+b cvxpylayers",
            ],
            rows,
        )
        + [""]
    )


def _details(ix: Index, rows: list[Row], titles: dict[str, str]) -> list[str]:
    out = ["## All measurements (ms per item, median of repeats)", ""]
    for p in ix.problems:
        out += [f"### {titles.get(p, p)}", ""]
        body = []
        for r in rows:
            if r.problem != p:
                continue
            is_ours = r.variant.startswith(("lpgd", "implicit", "default"))
            body.append(
                [
                    r.solver,
                    str(r.batch),
                    r.variant,
                    _fmt(r.forward),
                    _fmt(r.backward),
                    _fmt(r.total),
                    _fmt(r.raw_ratio) if is_ours else "",
                    _fmt(r.peer_ratio) if is_ours else "",
                    str(r.repeats),
                    r.note,
                ]
            )
        out += _table(
            [
                "solver",
                "B",
                "variant",
                "fwd",
                "bwd",
                "f+b",
                "fwd/raw (paired)",
                "f+b/cvxpylayers (paired)",
                "n",
                "note",
            ],
            body,
        )
        out.append("")
    return out


def _scale(scale: list[dict]) -> list[str]:
    if not scale:
        return []
    out = ["## Scale sweep: sparse LP, batch 1", ""]
    body = []
    for r in scale:
        peak_tm, rss = r.get("tracemalloc_peak"), r.get("rss_delta")
        dense = r.get("dense_bytes")
        dense_hit = dense and max(peak_tm or 0, rss or 0) >= dense / 4
        fwd, bwd, raw = r.get("forward_s"), r.get("backward_s"), r.get("raw_s")
        body.append(
            [
                f"{r['n']:,}",
                str(r.get("rows", "")),
                _fmt(r.get("build_s")),
                "–" if rss is None else f"{rss / 2**20:.0f}",
                "–" if peak_tm is None else f"{peak_tm / 2**20:.0f}",
                "–"
                if not dense
                else f"{dense / 2**20:,.0f}"
                + (" (build failed)" if "error" in r else " (**reached**)" if dense_hit else " (no)"),
                _fmt(fwd, 3),
                _fmt(bwd, 3),
                _fmt(raw, 3),
                _fmt(_ratio(fwd, raw)),
                _fmt(_ratio(bwd, fwd)),
                r.get("error", r.get("status", "")),
            ]
        )
    out += _table(
        [
            "n",
            "conic rows",
            "build s",
            "ru_maxrss delta MiB",
            "tracemalloc peak MiB",
            "dense n x rows MiB (peak >= 1/4 of it?)",
            "fwd s",
            "LPGD lower bwd s",
            "raw s",
            "fwd/raw",
            "bwd/fwd",
            "status",
        ],
        body,
    )
    return out + [""]


def _training(dfl: dict[str, dict[str, float]], grids: list[dict]) -> list[str]:
    out: list[str] = []
    if dfl:
        out += [
            "## Decision-focused learning: one epoch, 5x5 shortest path (1000 items, batch 32, 1 worker)",
            "",
        ]
        variants = list(next(iter(dfl.values())))
        out += _table(
            ["solver", *[f"{v} s/epoch" for v in variants]],
            [[s, *[_fmt(t) for t in times.values()]] for s, times in dfl.items()],
        )
        out.append("")
    if grids:
        out += ["## Problem size: shortest path, batch 8, forward per item vs raw solver (setup + solve)", ""]
        out += _table(
            ["solver", "grid", "edges", "fwd ms", "raw ms", "fwd/raw (paired median)"],
            [
                [
                    r["solver"],
                    f"{r['grid']}x{r['grid']}",
                    str(r["edges"]),
                    _fmt(r["forward_ms"]),
                    _fmt(r["raw_ms"]),
                    _fmt(r["ratio"]),
                ]
                for r in grids
            ],
        )
        out.append("")
    return out


def render(
    rows: list[Row],
    scale: list[dict],
    titles: dict[str, str],
    meta: dict,
    dfl: dict[str, dict[str, float]] | None = None,
    grids: list[dict] | None = None,
) -> str:
    """The whole RESULTS.md text."""
    ix = Index(rows)
    lines = ["# cvxlpgd benchmark results", ""]
    lines += [f"Command: `{meta['command']}` (wall time {meta['wall_s']:.0f} s).", ""]
    lines += _table(["", ""], [[k, v] for k, v in machine_info().items()]) + [""]
    lines += [
        "Settings: cvxlpgd `solver_args` "
        + ", ".join(f"{s}: `{a}`" for s, a in SOLVER_ARGS.items())
        + "; LPGD tau=1, rho=0. cvxpylayers: `CvxpyLayer(problem, parameters, variables, solver_args=...)` "
        "(default solver=None, i.e. its diffcp path, diffcp's default derivative mode) with solver_args "
        + ", ".join(f"{s}: `{a}`" for s, a in PEER_ARGS.items())
        + ".",
        f"Repeats per batch size: {meta['repeats']}; thread pool workers: {os.cpu_count()}. "
        "Per-item time = median call time / batch size. See benchmarks/README.md.",
        "",
    ]
    if meta.get("peer_note"):
        lines += [f"cvxpylayers: {meta['peer_note']}", ""]
    lines += (
        _targets(ix, scale, titles)
        + _batch_one(ix, titles)
        + _summary(ix, titles)
        + _training(dfl or {}, grids or [])
    )
    lines += _scale(scale) + _details(ix, rows, titles)
    return "\n".join(lines) + "\n"


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the markers of benchmark ``name`` in ``path``, keeping every other
    benchmark's section: ``make bench`` (name "suite"), benchmarks/dfl.py and
    benchmarks/build_scale.py each own one section of RESULTS.md."""
    start, end = f"<!-- benchmarks.{name}: start -->", f"<!-- benchmarks.{name}: end -->"
    old = path.read_text() if path.exists() else ""
    block = f"{start}\n{text.strip()}\n{end}\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block
    path.write_text(new)
