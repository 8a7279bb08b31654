"""Demo: ``python -m sklearn_deltagrad``.

Fits a DeltaGrad logistic regression on scikit-learn's bundled digits data, removes
1% of the training rows with DeltaGrad and with the exact retrain on the same
schedule, and prints both times, the fidelity ratio and both test accuracies.
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sklearn_deltagrad")
    parser.add_argument("--share", type=float, default=0.01, help="rows to remove")
    parser.add_argument("--seed", type=int, default=0)
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

    retrained = copy.deepcopy(model)
    before = _parameters(model)
    start = time.perf_counter()
    retrained.partial_unfit(indices=removed, method="exact")
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.partial_unfit(indices=removed)
    deltagrad_seconds = time.perf_counter() - start

    w_exact, w_deltagrad = _parameters(retrained), _parameters(model)
    ratio = np.linalg.norm(w_deltagrad - w_exact) / np.linalg.norm(before - w_exact)
    print(f"digits: {len(y_train)} training rows, removing {n_remove} (1%)")
    print(f"compile (first calls, cached afterwards): {compile_seconds:.2f} s")
    print(f"fit:                  {fit_seconds:.3f} s")
    print(f"exact retrain:        {exact_seconds:.3f} s")
    print(
        f"DeltaGrad:            {deltagrad_seconds:.3f} s "
        f"({exact_seconds / deltagrad_seconds:.1f}x faster)"
    )
    print(f"fidelity ||w_DG - w_U|| / ||w - w_U||: {ratio:.4f} (0 = exact retrain)")
    print(f"test accuracy, exact retrain: {retrained.score(X_test, y_test):.4f}")
    print(f"test accuracy, DeltaGrad:     {model.score(X_test, y_test):.4f}")
    agree = np.mean(retrained.predict(X_test) == model.predict(X_test))
    print(f"test predictions that agree:  {agree:.2%}")


if __name__ == "__main__":
    main()
