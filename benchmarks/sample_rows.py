"""How many rows the reference-corrected Hessian sample needs, per batch size.

The rule of ``hessian_rows="auto"`` with the reference correction (one sampled row
per 256 rows of a batch, 16 to 64) comes from this measurement. For each batch
size and each of ``--draws`` draws (the rows changed and the fit's
``random_state``), a deletion and an addition of ``--rate`` of covtype's training
rows (7 classes) are served by the exact retrain and by the ``"hessian"`` model
with the reference correction on each sample size, their runs alternating (best of
``--repeats``, compile excluded by a warm-up request). Columns: the request's
seconds, its share of the ceiling ``T / (j0 + (T - j0) / T0)`` over the replayed
iterations (the defaults' ``burn_in=10``, ``exact_period=10``), and the fidelity
ratio ``||w_DG - w_U|| / ||w - w_U||`` against the exact retrain. Fallbacks are off.

Usage (from the repository root, ``SKLEARN_DELTAGRAD_DATA`` set; about 6 minutes
on a 2-core machine)::

    python -m benchmarks.sample_rows
    python -m benchmarks.sample_rows --batch-sizes 4096 --rows 16 64 --draws 3
"""

import argparse
import copy
import csv
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sklearn_deltagrad import DeltaGradLogisticRegression

from .datasets import load
from .unlearning import (
    ceilings,
    distance,
    draw_rows,
    interleaved_best_of,
    log,
    markdown_table,
)


def measure_draw(X, y, batch_size, rows_options, rate, draw, repeats):
    """One result row per change (deletion, addition) and sample size of one draw."""
    n = X.shape[0]
    changed = draw_rows(n, rate, seed=draw)
    kept = np.setdiff1d(np.arange(n), changed)
    params = dict(
        batch_size=batch_size,
        curvature="hessian",
        reference_correction=True,
        max_drift=None,
        max_change_share=None,
        random_state=draw,
    )

    def remove(model, method):
        return model.partial_unfit(indices=changed, method=method)

    def add(model, method):
        return model.partial_fit(X[changed], y[changed], method=method)

    results = []
    for change, (X_fit, y_fit), serve in [
        ("deletion", (X, y), remove),
        ("addition", (X[kept], y[kept]), add),
    ]:
        fitted = DeltaGradLogisticRegression(**params).fit(X_fit, y_fit)
        for rows, share, ratio in measure_change(fitted, serve, rows_options, repeats):
            results.append(
                {
                    "batch": batch_size,
                    "draw": draw,
                    "change": change,
                    "rows": rows,
                    "share": share,
                    "ratio": ratio,
                }
            )
        log(
            f"batch {batch_size} draw {draw} {change}: "
            + ", ".join(
                f"{r['rows']} rows {r['share']:.0%} {r['ratio']:.4f}"
                for r in results[-len(rows_options) :]
            )
        )
    return results


def measure_change(fitted, serve, rows_options, repeats):
    """``(rows, share of the ceiling, fidelity ratio)`` per sample size for the
    request ``serve(model, method)`` on copies of ``fitted``."""

    def maker(**changes):
        return lambda: copy.deepcopy(fitted).set_params(**changes)

    candidates = [(maker(), lambda m: serve(m, "exact"))]
    candidates += [
        (maker(hessian_rows=rows), lambda m: serve(m, "deltagrad"))
        for rows in rows_options
    ]
    for make, run in candidates:
        run(make())  # compile and warm up outside the timing
    timings = interleaved_best_of(candidates, np.inf, repeats)
    exact_s, exact, _ = timings[0]
    report = exact.last_update_
    first = report.first_iteration
    ceiling = ceilings(
        first + report.n_exact_iterations, first, fitted.burn_in, fitted.exact_period
    )[1]
    before = distance(fitted, exact)
    return [
        (rows, exact_s / seconds / ceiling, distance(model, exact) / before)
        for rows, (seconds, model, _) in zip(rows_options, timings[1:], strict=True)
    ]


def summary(results, rows_options):
    """Per batch size and sample size: the range of shares and of ratios."""
    table = []
    for batch in sorted({r["batch"] for r in results}):
        for rows in rows_options:
            mine = [r for r in results if r["batch"] == batch and r["rows"] == rows]
            shares = [r["share"] for r in mine]
            ratios = [r["ratio"] for r in mine]
            table.append(
                [
                    str(batch),
                    str(rows),
                    f"{min(shares):.0%}–{max(shares):.0%}",
                    f"{min(ratios):.4f}–{max(ratios):.4f}",
                    f"{np.mean(ratios):.4f}",
                ]
            )
    headers = ["batch", "rows", "share of ceiling", "fidelity ratio", "mean ratio"]
    return markdown_table(headers, table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1024, 4096, 8192, 16384]
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="folder for sample_rows.csv")
    args = parser.parse_args(argv)
    X, _, y, _ = load("covtype", args.data_dir)
    start = time.perf_counter()
    results = []
    with threadpool_limits(1):
        for batch_size in args.batch_sizes:
            for draw in range(args.draws):
                results += measure_draw(
                    X, y, batch_size, args.rows, args.rate, draw, args.repeats
                )
    print(
        f"covtype (7 classes), deletion and addition of {args.rate:g}, "
        f"{args.draws} draws; hessian model with the reference correction; best of "
        f"{args.repeats}, one thread\n"
    )
    print(summary(results, args.rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "sample_rows.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
