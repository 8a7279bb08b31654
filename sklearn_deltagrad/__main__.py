"""Demo: ``python -m sklearn_deltagrad``.

Fits a DeltaGrad logistic regression on scikit-learn's bundled digits data, removes
1% (``--share``) of the training rows with DeltaGrad and with the exact retrain on
the same schedule, and prints both times (each the best of ``--repeats`` requests on
fresh copies of the fitted model), the fidelity ratio and both test accuracies.
On data this small (1,437 rows) the requests' fixed costs weigh: the benchmarks
(``docs/benchmarks.md``) show the speed-ups on larger data.
"""

import argparse
import copy
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import DeltaGradLogisticRegression


def _parameters(estimator):
    return np.concatenate([estimator.coef_.ravel(), estimator.intercept_.ravel()])


def _best_request(model, removed, method, repeats):
    """The updated copy of ``model`` and the best time of ``repeats`` requests, each
    on a fresh copy (copied outside the timer): one timing is at the mercy of a
    busy machine."""
    best = np.inf
    for _ in range(repeats):
        updated = copy.deepcopy(model)
        start = time.perf_counter()
        updated.partial_unfit(indices=removed, method=method)
        best = min(best, time.perf_counter() - start)
    return updated, best


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    """Run the demo and print its report; returns the measured values (a dict)."""
    parser = argparse.ArgumentParser(prog="python -m sklearn_deltagrad")
    parser.add_argument("--share", type=float, default=0.01, help="rows to remove")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="timed requests per method (the best is reported)",
    )
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.2, random_state=args.seed
    )
    model = DeltaGradLogisticRegression(
        batch_size=None, max_iter=100, random_state=args.seed
    )
    # The first fit and requests compile the Numba kernels (cached on disk).
    compile_start = time.perf_counter()
    warm = copy.deepcopy(model).fit(X_train[:200], y_train[:200])
    copy.deepcopy(warm).partial_unfit(indices=[0])
    warm.partial_unfit(indices=[0], method="exact")
    compile_seconds = time.perf_counter() - compile_start

    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    n_remove = max(1, int(round(args.share * len(y_train))))
    removed = rng.choice(model.sample_ids_, n_remove, replace=False)

    retrained, exact_seconds = _best_request(model, removed, "exact", args.repeats)
    updated, deltagrad_seconds = _best_request(
        model, removed, "deltagrad", args.repeats
    )

    before = _parameters(model)
    w_exact, w_deltagrad = _parameters(retrained), _parameters(updated)
    ratio = np.linalg.norm(w_deltagrad - w_exact) / np.linalg.norm(before - w_exact)
    report = {
        "n_train": len(y_train),
        "n_removed": n_remove,
        "compile_seconds": compile_seconds,
        "fit_seconds": fit_seconds,
        "exact_seconds": exact_seconds,
        "deltagrad_seconds": deltagrad_seconds,
        "fidelity_ratio": float(ratio),
        "exact_accuracy": retrained.score(X_test, y_test),
        "deltagrad_accuracy": updated.score(X_test, y_test),
        "agreement": float(
            np.mean(retrained.predict(X_test) == updated.predict(X_test))
        ),
    }
    print(
        f"digits: {report['n_train']} training rows, removing {n_remove} "
        f"({n_remove / report['n_train']:.1%})"
    )
    print(f"compile (first calls, cached afterwards): {compile_seconds:.2f} s")
    print(f"fit:                  {fit_seconds:.3f} s")
    print(f"exact retrain:        {exact_seconds:.3f} s (best of {args.repeats})")
    print(
        f"DeltaGrad:            {deltagrad_seconds:.3f} s (best of {args.repeats}; "
        f"the exact retrain takes {exact_seconds / deltagrad_seconds:.1f}x as long)"
    )
    print(f"fidelity ||w_DG - w_U|| / ||w - w_U||: {ratio:.4f} (0 = exact retrain)")
    print(f"test accuracy, exact retrain: {report['exact_accuracy']:.4f}")
    print(f"test accuracy, DeltaGrad:     {report['deltagrad_accuracy']:.4f}")
    print(f"test predictions that agree:  {report['agreement']:.2%}")
    return report


if __name__ == "__main__":
    main()
