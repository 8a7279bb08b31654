"""What one approximate iteration of the replay costs, per curvature model.

The share of the ceiling that a request reaches is set by how much an approximate
iteration costs next to an exact one. This script fits one model, then times a
removal under several curvature settings and the exact retrain, their runs
alternating (best of ``--repeats``), and derives per setting::

    approximate iteration = (request - exact share) / approximate iterations

where the exact share is the retrain's time per iteration times the request's
exact iterations, both counts read from the requests' reports
(``update_log_``). The request's fixed work (the schedule edit, the rows'
compaction) is included: it is spread over the approximate iterations.

Usage (from the repository root, ``SKLEARN_DELTAGRAD_DATA`` set)::

    python -m benchmarks.iteration_cost --dataset covtype --batch-size 1024
    python -m benchmarks.iteration_cost --quick   # a synthetic problem, seconds
"""

import argparse
import copy

import numpy as np
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

from sklearn_deltagrad import DeltaGradLogisticRegression

from .datasets import load
from .unlearning import draw_rows, interleaved_best_of, markdown_table

HESSIAN = {"curvature": "hessian"}

# (name, parameters set on a copy of the fitted model before the request).
SETTINGS = [
    ("lbfgs m=2", {"curvature": "lbfgs", "lbfgs_memory": 2}),
    (
        "hessian 1, no corrections",
        {
            **HESSIAN,
            "hessian_rows": 1,
            "reference_correction": False,
            "secant_correction": False,
        },
    ),
    ("hessian 1 ref", {**HESSIAN, "hessian_rows": 1}),
    ("hessian 8 ref", {**HESSIAN, "hessian_rows": 8}),
    ("hessian 32 ref", {**HESSIAN, "hessian_rows": 32}),
    ("hessian 64 ref", {**HESSIAN, "hessian_rows": 64}),
    ("hessian 64", {**HESSIAN, "hessian_rows": 64, "reference_correction": False}),
]


def measure(X, y, batch_size, rate, repeats, settings=SETTINGS):
    """One row per setting, after the retrain's: the request's best seconds, its
    exact and approximate iterations, and the derived microseconds per approximate
    iteration (per iteration for the retrain)."""
    fitted = DeltaGradLogisticRegression(
        batch_size=batch_size, curvature="hessian", max_drift=None, random_state=0
    ).fit(X, y)
    rows = draw_rows(X.shape[0], rate)

    def maker(params):
        return lambda: copy.deepcopy(fitted).set_params(**(params or {}))

    def removal(method):
        return lambda estimator: estimator.partial_unfit(indices=rows, method=method)

    candidates = [(maker(None), removal("exact"))]
    candidates += [(maker(params), removal("deltagrad")) for _, params in settings]
    timings = interleaved_best_of(candidates, repeat_below_s=np.inf, repeats=repeats)
    exact_s, retrained, _ = timings[0]
    per_exact = exact_s / retrained.update_log_[-1].n_exact_iterations
    table = [
        {
            "setting": "exact retrain",
            "seconds": exact_s,
            "exact": retrained.update_log_[-1].n_exact_iterations,
            "approximate": 0,
            "us": 1e6 * per_exact,
        }
    ]
    for (name, _), (seconds, updated, _) in zip(settings, timings[1:], strict=True):
        report = updated.update_log_[-1]
        approximate_s = seconds - per_exact * report.n_exact_iterations
        table.append(
            {
                "setting": name,
                "seconds": seconds,
                "exact": report.n_exact_iterations,
                "approximate": report.n_approximate_iterations,
                "us": 1e6 * approximate_s / max(report.n_approximate_iterations, 1),
            }
        )
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="covtype")
    parser.add_argument("--data-dir")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        X, y = make_classification(
            4000, 20, n_informative=10, n_classes=4, random_state=0
        )
        args.batch_size, args.repeats = 256, 2
    else:
        X, _, y, _ = load(args.dataset, args.data_dir)
    with threadpool_limits(1):
        table = measure(X, y, args.batch_size, args.rate, args.repeats)
    name = "synthetic (4 classes)" if args.quick else args.dataset
    print(
        f"{name}, batch {args.batch_size}, removal of {args.rate:g}; best of "
        f"{args.repeats}, one thread. us: per approximate iteration, the request's "
        "fixed work included (per iteration for the retrain)\n"
    )
    headers = ["setting", "request s", "exact", "approximate", "us"]
    rows = [
        [
            row["setting"],
            f"{row['seconds']:.3f}",
            str(row["exact"]),
            str(row["approximate"]),
            f"{row['us']:.1f}",
        ]
        for row in table
    ]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
