"""Benchmark: DeltaGrad unlearning against the exact retrain and against sklearn.

Run from the repository root::

    python -m benchmarks.unlearning --quick       # smoke run, under 5 minutes
    python -m benchmarks.unlearning               # full run
    python -m benchmarks.unlearning --datasets covtype houses --out /tmp/results

The data folder is ``--data-dir``, else ``$SKLEARN_DELTAGRAD_DATA``, else
``shared/data`` next to (or inside) the repository. Markdown tables go to stdout
(progress to stderr); CSV files, ``results.md`` and PNG plots go to ``--out``
(default ``benchmarks/results/``, or ``benchmarks/results/quick/`` with ``--quick``).

Everything is measured side by side in one process, with ``time.perf_counter``:

* **Compile**: the first call of each operation on a tiny problem, before any timing
  (the Numba kernels then come from Numba's on-disk cache when it exists), and the
  same in a subprocess with an empty ``NUMBA_CACHE_DIR`` (a true cold compile).
* **Requests**: for every data set, setting (``defaults``, ``paper`` and
  ``batch16384``, see :func:`make_settings`) and change (deletion or addition of a
  share 1e-4, 1e-3, 1e-2 of the training rows; the added rows are held out at fit),
  the time of the DeltaGrad request and of the exact retrain on the same schedule
  (``method="exact"`` on a ``copy.deepcopy`` of the same fitted estimator), the
  speed-up and the ceiling of DeltaGrad's iteration count, the fidelity ratio
  ``||w_DG - w_U|| / ||w - w_U||`` on the full parameter vector, test scores of
  ``w_U`` and ``w_DG`` and how often their predictions agree, and the cache's bytes.
  A request is timed as the best of 3 runs (a fresh deep copy each time) when one
  run takes under 5 s (1 s with ``--quick``), the DeltaGrad and exact runs
  alternating so that a slow spell of a shared machine hits both, after one
  untimed request per data set that compiles the variants of its row layout
  (sparse, float32).
* **Online**: sequential single-row deletions from the ``defaults`` model (100, or 20
  with ``--quick``): time per request, and the final fidelity ratio against the exact
  retrain without the same rows.
* **What a user would do instead**, on the same changed rows: sklearn
  ``LogisticRegression(C=1/(alpha n))`` refit cold and warm-started, at the default
  tolerance and at ``tol=1e-10``; ``SGDClassifier(loss="log_loss")``; for ridge,
  ``Ridge(alpha=alpha n)`` and an exact Sherman-Morrison-Woodbury downdate (deletion).
  Their fidelity is ``||w_new - w*'|| / ||w* - w*'||`` against the ``tol=1e-10``
  optima before (``w*``) and after (``w*'``) the change; DeltaGrad and the exact
  retrain are shown in the same metric.
* **Training**: DeltaGrad ``fit`` against ``SGDClassifier``/``SGDRegressor`` for the
  same number of epochs (``max_iter`` of the defaults, ``tol=None``).

numpy and sklearn run with one BLAS/OpenMP thread (``--threads``), like the Numba
kernels: on a loaded 2-core machine their default two threads per pool made sklearn
5 to 100 times slower (oversubscription).

Duration on the 2-core machine this was written on (AMD EPYC, shared with other
jobs): ``--quick`` 3.5 minutes, the full run 14 minutes (2026-11-25; about a third of
it in sklearn's ``tol=1e-10`` ``LogisticRegression`` fits, and much longer with
``--threads 0`` on a loaded machine).

Reuters-21578 runs on its sparse CSR rows (never densified).
"""

import argparse
import copy
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import (
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from threadpoolctl import threadpool_limits

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

from .datasets import DATA_ENV, data_dir, load

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
ESTIMATORS = {
    "covtype": DeltaGradLogisticRegression,
    "covtype_binary": DeltaGradLogisticRegression,
    "mnist": DeltaGradLogisticRegression,
    "a9a": DeltaGradLogisticRegression,
    "reuters": DeltaGradLogisticRegression,  # sparse CSR rows
    "houses": DeltaGradRidge,
    "pol": DeltaGradRidge,
}
RATES = (1e-4, 1e-3, 1e-2)
TIGHT = {"tol": 1e-10, "max_iter": 10_000}
RIDGE_AGREEMENT_TOL = 0.01  # targets are standardised: 1% of a standard deviation


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    datasets: tuple
    settings: tuple = ("defaults", "paper", "batch16384")
    deletion_rates: tuple = RATES
    addition_rates: tuple = RATES
    online_requests: int = 100
    repeat_below_s: float = 5.0  # best of 3 for timings shorter than this
    sgd_fit_datasets: tuple = ("covtype", "houses")

    @classmethod
    def from_args(cls, args):
        if args.quick:
            return cls(
                datasets=tuple(args.datasets or ("covtype", "houses", "mnist")),
                deletion_rates=(1e-3,),
                addition_rates=(1e-3,),
                online_requests=20,
                repeat_below_s=1.0,
            )
        return cls(datasets=tuple(args.datasets or ESTIMATORS))


# --------------------------------------------------------------------------- timing
def timed(function, *args):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def best_of(make, run, repeat_below_s=1.0, repeats=3):
    """Best time of ``run(make())`` (``make`` untimed), repeated while it is short.

    Returns ``(best seconds, result of the last run, number of runs)``.
    """
    return interleaved_best_of([(make, run)], repeat_below_s, repeats)[0]


def interleaved_best_of(candidates, repeat_below_s=1.0, repeats=3):
    """:func:`best_of` for several ``(make, run)`` pairs, their runs alternating
    (A, B, A, B, ...), so that a slow spell of a shared machine hits both rather
    than one: a ratio of their times is then measured side by side.

    Returns one ``(best seconds, result of the last run, number of runs)`` per
    pair; a pair stops repeating once one of its runs takes ``repeat_below_s``.
    """
    best = [np.inf] * len(candidates)
    results = [None] * len(candidates)
    n_runs = [0] * len(candidates)
    done = [False] * len(candidates)
    for _ in range(repeats):
        for which, (make, run) in enumerate(candidates):
            if done[which]:
                continue
            seconds, results[which] = timed(run, make())
            best[which] = min(best[which], seconds)
            n_runs[which] += 1
            done[which] = seconds >= repeat_below_s
    return list(zip(best, results, n_runs, strict=True))


def retrain_copy(fitted):
    """A copy of ``fitted`` for the exact retrain alone: without the ``"gram"``
    model's matrices, which an exact request of a Gram model also keeps up to date
    for later DeltaGrad requests (a9a: about 20 ms of a 0.5 s retrain), a cost
    that is not the retrain's."""
    estimator = copy.deepcopy(fitted)
    if estimator._cache.grams is not None:
        estimator.set_params(curvature="lbfgs")  # the exact retrain ignores it
    return estimator


def quiet(function, *args):
    """Call ``function`` with warnings (convergence, deprecation) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


# ----------------------------------------------------------------------------- data
@dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray

    @property
    def estimator(self):
        return ESTIMATORS[self.name]

    @property
    def regression(self):
        return self.estimator is DeltaGradRidge

    @property
    def n_train(self):
        return self.X_train.shape[0]

    def score(self, model):
        return float(model.score(self.X_test, self.y_test))

    def agreement(self, model_a, model_b):
        """Share of test rows where two models predict the same."""
        a, b = model_a.predict(self.X_test), model_b.predict(self.X_test)
        if self.regression:
            return float(np.mean(np.abs(a - b) <= RIDGE_AGREEMENT_TOL))
        return float(np.mean(a == b))


@dataclass(frozen=True)
class Change:
    """A deletion or an addition of the training rows ``rows`` (positions).

    At a given rate the deleted rows and the held-out-then-added rows are the same,
    so that both directions share the two training sets (and the sklearn optima).
    """

    kind: str
    rate: float
    rows: np.ndarray

    def before(self, n):
        """Rows the model is trained on before the change."""
        everything = np.arange(n)
        return everything if self.kind == "deletion" else self._rest(n)

    def after(self, n):
        """Rows of the training set after the change."""
        return self._rest(n) if self.kind == "deletion" else np.arange(n)

    def _rest(self, n):
        return np.setdiff1d(np.arange(n), self.rows)

    def apply(self, estimator, data, method):
        """Send the change to a fitted DeltaGrad estimator."""
        if self.kind == "deletion":
            return estimator.partial_unfit(indices=self.rows, method=method)
        X, y = data.X_train[self.rows], data.y_train[self.rows]
        return estimator.partial_fit(X, y, method=method)


def draw_rows(n, rate, seed=0):
    """``max(1, round(rate n))`` distinct training positions, sorted."""
    size = max(1, round(rate * n))
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def parameters(model):
    """The full parameter vector: ``coef_`` and ``intercept_`` concatenated."""
    return np.concatenate([np.ravel(model.coef_), np.ravel(model.intercept_)])


def distance(a, b):
    return float(np.linalg.norm(parameters(a) - parameters(b)))


# ------------------------------------------------------------------------- settings
def make_settings(estimator, auto_learning_rate):
    """The compared parameter sets; ``paper`` is the DeltaGrad paper's setting.

    ``paper`` needs a constant learning rate: the ``"auto"`` value of the
    ``defaults`` fit on the full training set. ``batch16384`` is skipped (with a
    note) when it equals ``defaults``.
    """
    settings = {
        "defaults": {"random_state": 0},
        "paper": {
            "alpha": 0.005,
            "learning_rate": auto_learning_rate,
            "batch_size": 16384,
            "exact_period": 10,
            "burn_in": 10,
            "curvature": "lbfgs",
            "lbfgs_memory": 2,
            "random_state": 0,
        },
        "batch16384": {"batch_size": 16384, "random_state": 0},
    }
    defaults = estimator(**settings["defaults"]).get_params()
    if estimator(**settings["batch16384"]).get_params() == defaults:
        settings["batch16384"] = None
    return settings


def ceilings(n_iterations, first_iteration, burn_in, exact_period):
    """Speed-up ceilings ``T/(j0 + (T-j0)/T0)``: plain and over the replayed span."""

    def ceiling(total, n_burn_in):
        n_burn_in = min(n_burn_in, total)
        return total / (n_burn_in + (total - n_burn_in) / exact_period)

    replayed = n_iterations - first_iteration
    burn_in_replayed = max(burn_in - first_iteration, 0)
    return ceiling(n_iterations, burn_in), ceiling(replayed, burn_in_replayed)


def scheduled_exact(n_iterations, first_iteration, burn_in, exact_period):
    """Exact iterations the replay schedules over ``first..T-1`` (no safeguards)."""
    t = np.arange(first_iteration, n_iterations)
    return int(np.sum((t < burn_in) | ((t - burn_in) % exact_period == 0)))


# -------------------------------------------------------------------------- compile
def probe_compile():
    """First- and second-call times of each operation on a tiny problem.

    Run before anything else in a process: the difference is the compile (or the
    load from Numba's on-disk cache). Both estimators share their kernels, so the
    second one listed shows only what the first did not compile.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 6))
    targets = {
        DeltaGradLogisticRegression: rng.integers(0, 3, 240),
        DeltaGradRidge: X @ rng.standard_normal(6),
    }
    rows = []
    for estimator, y in targets.items():
        fitted = estimator(random_state=0, max_iter=20)
        operations = {
            # The first fit is the one kept: it must not run before its timing.
            "fit": (lambda f=fitted: f, lambda e, y=y: e.fit(X[:200], y[:200])),
        }
        for method in ("deltagrad", "exact"):
            operations[f"partial_unfit {method}"] = (
                lambda f=fitted: copy.deepcopy(f),
                lambda e, m=method: e.partial_unfit(indices=[0, 1, 2], method=m),
            )
            operations[f"partial_fit {method}"] = (
                lambda f=fitted: copy.deepcopy(f),
                lambda e, m=method, y=y: e.partial_fit(X[200:], y[200:], method=m),
            )
        for name, (make, run) in operations.items():
            first, _ = timed(run, make())
            second, _ = timed(run, make())
            rows.append(
                {
                    "estimator": estimator.__name__,
                    "operation": name,
                    "first_call_s": first,
                    "second_call_s": second,
                    "compile_s": max(first - second, 0.0),
                }
            )
    return rows


def probe_cold_compile():
    """:func:`probe_compile` in a fresh interpreter with an empty Numba cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        code = (
            "import json; from benchmarks.unlearning import probe_compile; "
            "print(json.dumps(probe_compile()))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_table(warm_rows, cold_rows):
    cold = {(r["estimator"], r["operation"]): r["compile_s"] for r in cold_rows}
    for row in warm_rows:
        row["cold_compile_s"] = cold.get((row["estimator"], row["operation"]))
    return warm_rows


def replay_compile_seconds(compile_rows, estimator):
    """What the first DeltaGrad request of a process pays (either kind)."""
    operations = ("partial_unfit deltagrad", "partial_fit deltagrad")
    return sum(
        row["compile_s"]
        for row in compile_rows
        if row["estimator"] == estimator.__name__ and row["operation"] in operations
    )


# ------------------------------------------------------------------------- requests
@dataclass
class Outcome:
    """Models of one request, kept for the comparison with sklearn."""

    exact: object
    deltagrad: object
    deltagrad_s: float
    exact_s: float


def run_request(data, setting, change, fitted, fit_s, compile_s, repeat_below_s):
    """Time one request both ways; return the table row and the two new models."""
    (dg_s, dg, dg_runs), (exact_s, exact, exact_runs) = interleaved_best_of(
        [
            (
                lambda: copy.deepcopy(fitted),
                lambda e: change.apply(e, data, "deltagrad"),
            ),
            (
                lambda: retrain_copy(fitted),
                lambda e: change.apply(e, data, "exact"),
            ),
        ],
        repeat_below_s,
    )
    report = dg.last_update_
    params = dg.get_params()
    n_iterations = (
        report.first_iteration
        + report.n_exact_iterations
        + report.n_approximate_iterations
    )
    plain, replayed = ceilings(
        n_iterations, report.first_iteration, params["burn_in"], params["exact_period"]
    )
    speedup = exact_s / dg_s
    moved, missed = distance(fitted, exact), distance(dg, exact)
    row = {
        "dataset": data.name,
        "estimator": data.estimator.__name__,
        "setting": setting,
        "change": change.kind,
        "rate": change.rate,
        "n_changed": change.rows.size,
        "n_train_before": change.before(data.n_train).size,
        "n_iterations": n_iterations,
        "first_iteration": report.first_iteration,
        "fit_s": fit_s,
        "compile_s": compile_s,
        "deltagrad_s": dg_s,
        "replay_s": report.seconds,
        "exact_replay_s": exact.last_update_.seconds,
        "exact_s": exact_s,
        "runs": min(dg_runs, exact_runs),
        "speedup": speedup,
        "ceiling_replayed": replayed,
        "ceiling_plain": plain,
        "share_of_ceiling": speedup / replayed,
        "n_exact": report.n_exact_iterations,
        "n_approximate": report.n_approximate_iterations,
        "n_exact_scheduled": scheduled_exact(
            n_iterations,
            report.first_iteration,
            params["burn_in"],
            params["exact_period"],
        ),
        "dist_w_wU": moved,
        "dist_wDG_wU": missed,
        "fidelity_ratio": missed / moved if moved > 0 else float("nan"),
        "score_wU": data.score(exact),
        "score_wDG": data.score(dg),
        "agreement": data.agreement(dg, exact),
        "cache_MB": dg.cache_nbytes_ / 1e6,
    }
    return row, Outcome(exact, dg, dg_s, exact_s)


def fit_estimator(data, params, rows=None):
    rows = np.arange(data.n_train) if rows is None else rows
    estimator = data.estimator(**params)
    seconds, _ = timed(estimator.fit, data.X_train[rows], data.y_train[rows])
    return seconds, estimator


def run_online(data, fitted, n_requests, seed=1):
    """Sequential single-row deletions; the final model against the exact retrain."""
    rows = draw_rows(data.n_train, n_requests / data.n_train, seed=seed)
    estimator = copy.deepcopy(fitted)
    seconds = [
        timed(lambda row=row: estimator.partial_unfit(indices=[row]))[0] for row in rows
    ]
    exact = retrain_copy(fitted)
    exact_s, _ = timed(lambda: exact.partial_unfit(indices=rows, method="exact"))
    moved, missed = distance(fitted, exact), distance(estimator, exact)
    summary = {
        "dataset": data.name,
        "requests": rows.size,
        "first_s": seconds[0],
        "median_s": statistics.median(seconds),
        "last_s": seconds[-1],
        "total_s": sum(seconds),
        "exact_all_rows_s": exact_s,
        "dist_w_wU": moved,
        "dist_wDG_wU": missed,
        "fidelity_ratio": missed / moved if moved > 0 else float("nan"),
        "agreement": data.agreement(estimator, exact),
    }
    return summary, seconds


# ------------------------------------------------------------------------ baselines
@dataclass
class LinearFit:
    """A linear regression given by its coefficients (the Woodbury downdate)."""

    coef_: np.ndarray
    intercept_: float

    def predict(self, X):
        return X @ self.coef_ + self.intercept_

    def score(self, X, y):
        residual = y - self.predict(X)
        return 1.0 - residual @ residual / np.sum((y - y.mean()) ** 2)


def _with_ones(X):
    return np.hstack([X, np.ones((X.shape[0], 1))])


def normal_equations(X, y, penalty):
    """``(Z'Z + penalty P)^-1`` and ``Z'y``, ``Z = [X, 1]`` (intercept unpenalised)."""
    Z = _with_ones(X)
    gram = Z.T @ Z
    gram[np.arange(X.shape[1]), np.arange(X.shape[1])] += penalty
    return np.linalg.inv(gram), Z.T @ y


def woodbury_downdate(inverse, moment, X_removed, y_removed, alpha):
    """Exact ridge solution without the removed rows, by Sherman-Morrison-Woodbury.

    With ``alpha`` fixed the penalty ``alpha n`` shrinks by ``alpha k`` too, so
    ``A' = A - V'V`` with ``V = [Z_R; sqrt(alpha k) [I, 0]]``:
    ``A'^-1 = M + M V' (I - V M V')^-1 V M``. Returns the model and ``A'^-1``.
    """
    n_removed, n_features = X_removed.shape
    V = np.vstack(
        [
            _with_ones(X_removed),
            np.sqrt(alpha * n_removed) * np.eye(n_features, n_features + 1),
        ]
    )
    MV = inverse @ V.T
    inner = np.eye(V.shape[0]) - V @ MV
    new_inverse = inverse + MV @ np.linalg.solve(inner, MV.T)
    w = new_inverse @ (moment - _with_ones(X_removed).T @ y_removed)
    return LinearFit(w[:-1], float(w[-1])), new_inverse


def training_sets(change):
    """Keys of the training sets before and after a change: ``"full"`` or the rest.

    ``("rest", rate)`` is the training set without the rows of that rate, which a
    deletion leads to and an addition starts from.
    """
    rest = ("rest", change.rate)
    return ("full", rest) if change.kind == "deletion" else (rest, "full")


class Baselines:
    """What a user would do instead, for one data set and one ``alpha``.

    Fits are memoised by training set (see :func:`training_sets`). :meth:`methods`
    maps a method's name to ``(seconds, model, note)``; :meth:`optimum` is the
    reference optimum of a training set.
    """

    def __init__(self, data, alpha):
        self.data, self.alpha = data, alpha
        self._rows = {"full": np.arange(data.n_train)}
        self._memo = {}

    def rows(self, key):
        return self._rows[key]

    def register(self, change):
        """Make the training sets of ``change`` known."""
        self._rows[("rest", change.rate)] = np.setdiff1d(
            self._rows["full"], change.rows
        )

    def _memoised(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _fit(self, model, key):
        rows = self.rows(key)
        seconds, _ = timed(
            quiet, model.fit, self.data.X_train[rows], self.data.y_train[rows]
        )
        return seconds, model

    def methods(self, change):
        raise NotImplementedError

    def optimum(self, key):
        raise NotImplementedError

    def fidelity(self, change, model):
        """``||w - w*'|| / ||w* - w*'||``."""
        before, after = (self.optimum(key) for key in training_sets(change))
        return distance(model, after) / distance(before, after)


class LogisticBaselines(Baselines):
    def _logistic(self, key, start=None, tight=False):
        """Fit ``LogisticRegression`` on a training set, warm-started from ``start``."""
        model = LogisticRegression(
            C=1.0 / (self.alpha * self.rows(key).size),
            warm_start=start is not None,
            **(TIGHT if tight else {}),
        )
        if start is not None:
            model.coef_ = start.coef_.copy()
            model.intercept_ = start.intercept_.copy()
        return self._fit(model, key)

    def _cold(self, key, tight=False):
        return self._memoised(
            ("cold", key, tight), lambda: self._logistic(key, tight=tight)
        )

    def _optimum_fit(self, key):
        """The ``tol=1e-10`` fit: cold on all rows, warm from that on the rest."""
        if key == "full":
            return self._cold("full", tight=True)
        start = self.optimum("full")
        return self._memoised(
            ("optimum", key), lambda: self._logistic(key, start, tight=True)
        )

    def optimum(self, key):
        return self._optimum_fit(key)[1]

    def methods(self, change):
        old, new = training_sets(change)
        results = {}
        cold_s, cold = self._cold(new)
        results["LR cold"] = (cold_s, cold, _iterations(cold))
        warm_s, warm = self._logistic(new, start=self._cold(old)[1])
        results["LR warm"] = (warm_s, warm, _iterations(warm))
        results.update(self._tight_methods(old, new))
        sgd_s, sgd = self._memoised(
            ("sgd", new),
            lambda: self._fit(
                SGDClassifier(loss="log_loss", alpha=self.alpha, random_state=0), new
            ),
        )
        results["SGD"] = (sgd_s, sgd, f"{sgd.n_iter_} epochs")
        return results

    def _tight_methods(self, old, new):
        full_s, full = self._cold("full", tight=True)
        if new == "full":
            cold = (full_s, full, _iterations(full))
            warm_s, warm = self._logistic(new, self.optimum(old), tight=True)
        else:
            # Removing <= 1% of the rows does not change the cost of a cold fit:
            # its time is the one on all rows; its model is the optimum w*'.
            cold = (full_s, self.optimum(new), "time of the cold fit on all rows")
            warm_s, warm = self._optimum_fit(new)
        return {
            "LR cold tight": cold,
            "LR warm tight": (warm_s, warm, _iterations(warm)),
        }


class RidgeBaselines(Baselines):
    def optimum(self, key):
        return self._ridge(key)[1]

    def _ridge(self, key):
        model = Ridge(alpha=self.alpha * self.rows(key).size)
        return self._memoised(("ridge", key), lambda: self._fit(model, key))

    def methods(self, change):
        new = training_sets(change)[1]
        results = {"Ridge": (*self._ridge(new), "")}
        if change.kind == "deletion":
            results["SMW downdate"] = self._downdate(change.rows)
        return results

    def _downdate(self, removed):
        data = self.data
        prepare_s, (inverse, moment) = self._memoised(
            "normal equations",
            lambda: timed(
                normal_equations,
                data.X_train,
                data.y_train,
                self.alpha * data.n_train,
            ),
        )
        seconds, (model, _) = timed(
            woodbury_downdate,
            inverse,
            moment,
            data.X_train[removed],
            data.y_train[removed],
            self.alpha,
        )
        return seconds, model, f"inverse of the normal equations: {prepare_s:.2g} s"


def _iterations(model):
    n_iter = int(np.max(model.n_iter_))
    converged = n_iter < model.max_iter
    return f"{n_iter} iterations" + ("" if converged else " (not converged)")


def make_baselines(data, alpha):
    baselines = RidgeBaselines if data.regression else LogisticBaselines
    return baselines(data, alpha)


def baseline_rows(baselines, change, outcomes):
    """Rows of the comparison: sklearn's methods, then DeltaGrad and its reference.

    ``outcomes`` maps each DeltaGrad setting with this ``alpha`` to its
    :class:`Outcome` for ``change``.
    """
    data = baselines.data
    baselines.register(change)
    models = dict(baselines.methods(change))
    for setting, outcome in outcomes.items():
        models[f"DeltaGrad ({setting})"] = (outcome.deltagrad_s, outcome.deltagrad, "")
        models[f"exact retrain ({setting})"] = (outcome.exact_s, outcome.exact, "")
    reference = baselines.optimum(training_sets(change)[1])
    rows = []
    for method, (seconds, model, note) in models.items():
        rows.append(
            {
                "dataset": data.name,
                "alpha": baselines.alpha,
                "change": change.kind,
                "rate": change.rate,
                "method": method,
                "seconds": seconds,
                "score": data.score(model),
                "fidelity_vs_optimum": baselines.fidelity(change, model),
                "is_reference": model is reference,
                "note": note,
            }
        )
    return rows


# -------------------------------------------------------------------------- running
@dataclass
class Results:
    compile: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    online: list = field(default_factory=list)
    online_seconds: dict = field(default_factory=dict)
    baselines: list = field(default_factory=list)
    sgd_fits: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_changes(n, config):
    return [
        Change(kind, rate, draw_rows(n, rate))
        for kind, rates in (
            ("deletion", config.deletion_rates),
            ("addition", config.addition_rates),
        )
        for rate in rates
    ]


def compile_fit(data):
    """An untimed short ``fit`` on a few rows of ``data``, in its row layout.

    Sparse or float32 rows compile their own variants of the training loop at
    their first ``fit`` (Reuters: about 9 s with an empty Numba cache), which the
    timed ``fit`` must not include. Every class is among the rows.
    """
    rows = np.arange(min(256, data.n_train))
    if not data.regression:
        _, first = np.unique(data.y_train, return_index=True)
        rows = np.union1d(rows, first)
    data.estimator(random_state=0, max_iter=1).fit(
        data.X_train[rows], data.y_train[rows]
    )


def warm_up(fitted):
    """One untimed DeltaGrad request on a copy of ``fitted``.

    The compile probe runs on dense float64 rows; sparse or float32 rows compile
    their own variants of the replay at their first request (Reuters: 6.3 s), which
    must not be timed. ``fit`` already compiled the exact retrain's loop.
    """
    copy.deepcopy(fitted).partial_unfit(indices=fitted.sample_ids_[:1])


def run_dataset(data, config, results):
    """Every setting and change of one data set, then its sklearn comparison."""
    changes = make_changes(data.n_train, config)
    compile_fit(data)
    defaults_fit = fit_estimator(data, {"random_state": 0})
    warm_up(defaults_fit[1])
    settings = make_settings(data.estimator, defaults_fit[1].learning_rate_)
    outcomes = {}  # setting -> {(kind, rate): Outcome}
    for setting in config.settings:
        params = settings[setting]
        if params is None:
            results.notes.append(
                f"{data.name}: setting {setting} is identical to defaults and "
                "was not run again."
            )
            continue
        fit_s, full = (
            defaults_fit if setting == "defaults" else fit_estimator(data, params)
        )
        outcomes[setting] = {}
        for change in changes:
            log(f"{data.name} {setting} {change.kind} {change.rate:g}")
            if change.kind == "deletion":
                change_fit_s, fitted = fit_s, full
            else:
                change_fit_s, fitted = fit_estimator(
                    data, params, change.before(data.n_train)
                )
            compile_s = replay_compile_seconds(results.compile, data.estimator)
            row, outcome = run_request(
                data,
                setting,
                change,
                fitted,
                change_fit_s,
                compile_s,
                config.repeat_below_s,
            )
            results.requests.append(row)
            outcomes[setting][change.kind, change.rate] = outcome
        if setting == "defaults" and config.online_requests:
            log(f"{data.name} online, {config.online_requests} deletions")
            summary, seconds = run_online(data, full, config.online_requests)
            results.online.append(summary)
            results.online_seconds[data.name] = seconds
    run_baselines(data, config, settings, changes, outcomes, results)
    if data.name in config.sgd_fit_datasets:
        results.sgd_fits.extend(run_sgd_fits(data, config.repeat_below_s))


def run_baselines(data, config, settings, changes, outcomes, results):
    by_alpha = {}
    for setting in outcomes:
        alpha = data.estimator(**settings[setting]).alpha
        by_alpha.setdefault(alpha, []).append(setting)
    for alpha, alpha_settings in by_alpha.items():
        baselines = make_baselines(data, alpha)
        for change in changes:
            log(f"{data.name} sklearn, alpha={alpha:g}, {change.kind} {change.rate:g}")
            same_alpha = {
                s: outcomes[s][change.kind, change.rate] for s in alpha_settings
            }
            results.baselines.extend(baseline_rows(baselines, change, same_alpha))


def run_sgd_fits(data, repeat_below_s):
    """Training time of DeltaGrad (defaults) and of sklearn's SGD, same epochs."""
    log(f"{data.name} fit time against sklearn SGD")
    deltagrad_s, deltagrad, deltagrad_runs = best_of(
        lambda: data.estimator(random_state=0),
        lambda model: model.fit(data.X_train, data.y_train),
        repeat_below_s,
    )
    params = deltagrad.get_params()
    sgd_class = SGDRegressor if data.regression else SGDClassifier
    loss = {} if data.regression else {"loss": "log_loss"}
    sgd_s, sgd, runs = best_of(
        lambda: sgd_class(
            alpha=params["alpha"],
            max_iter=params["max_iter"],
            tol=None,
            random_state=0,
            **loss,
        ),
        lambda model: model.fit(data.X_train, data.y_train),
        repeat_below_s,
    )
    rows = []
    for name, seconds, model, n_runs, note in (
        (
            type(deltagrad).__name__,
            deltagrad_s,
            deltagrad,
            deltagrad_runs,
            f"batch {params['batch_size']}",
        ),
        (sgd_class.__name__, sgd_s, sgd, runs, "one row per step"),
    ):
        rows.append(
            {
                "dataset": data.name,
                "estimator": name,
                "epochs": params["max_iter"],
                "seconds": seconds,
                "runs": n_runs,
                "score": data.score(model),
                "note": note,
            }
        )
    return rows


# ------------------------------------------------------------------------ reporting
def fmt(value, digits=3):
    """Numbers for the tables: ``digits`` significant digits, ``-`` when missing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    if not np.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def markdown_table(headers, rows):
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def compile_section(rows):
    return markdown_table(
        [
            "estimator",
            "operation",
            "first call s",
            "second call s",
            "compile s (disk cache)",
            "compile s (empty cache)",
        ],
        [
            [
                r["estimator"],
                r["operation"],
                r["first_call_s"],
                r["second_call_s"],
                r["compile_s"],
                r.get("cold_compile_s"),
            ]
            for r in rows
        ],
    )


def _case(r):
    return [r["dataset"], r["setting"], r["change"], f"{r['rate']:g}", r["n_changed"]]


def speed_section(rows):
    headers = [
        "data set",
        "setting",
        "change",
        "rate",
        "rows",
        "T",
        "first it.",
        "fit s",
        "compile s",
        "DeltaGrad s",
        "replay s",
        "exact s",
        "speed-up",
        "ceiling T'",
        "ceiling T",
        "share",
        "exact / approx (scheduled)",
        "cache MB",
    ]
    body = [
        _case(r)
        + [
            r["n_iterations"],
            r["first_iteration"],
            r["fit_s"],
            r["compile_s"],
            r["deltagrad_s"],
            r["replay_s"],
            r["exact_s"],
            r["speedup"],
            r["ceiling_replayed"],
            r["ceiling_plain"],
            f"{100 * r['share_of_ceiling']:.0f}%",
            f"{r['n_exact']} / {r['n_approximate']} ({r['n_exact_scheduled']})",
            r["cache_MB"],
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def fidelity_section(rows):
    headers = [
        "data set",
        "setting",
        "change",
        "rate",
        "rows",
        "‖w − w_U‖",
        "‖w_DG − w_U‖",
        "ratio",
        "score w_U",
        "score w_DG",
        "agree",
    ]
    body = [
        _case(r)
        + [
            r["dist_w_wU"],
            r["dist_wDG_wU"],
            r["fidelity_ratio"],
            f"{r['score_wU']:.4f}",
            f"{r['score_wDG']:.4f}",
            f"{100 * r['agreement']:.2f}%",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def online_section(rows):
    headers = [
        "data set",
        "requests",
        "first s",
        "median s",
        "last s",
        "total s",
        "exact retrain (all rows) s",
        "‖w − w_U‖",
        "‖w_DG − w_U‖",
        "ratio",
        "agree",
    ]
    body = [
        [
            r["dataset"],
            r["requests"],
            r["first_s"],
            r["median_s"],
            r["last_s"],
            r["total_s"],
            r["exact_all_rows_s"],
            r["dist_w_wU"],
            r["dist_wDG_wU"],
            r["fidelity_ratio"],
            f"{100 * r['agreement']:.2f}%",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def baseline_section(rows):
    """One row per change, one column per method: ``seconds · ratio · score``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cases = {}
    for r in rows:
        case = (r["dataset"], fmt(r["alpha"]), r["change"], f"{r['rate']:g}")
        ratio = "w*'" if r["is_reference"] else fmt(r["fidelity_vs_optimum"], 2)
        cell = f"{fmt(r['seconds'])} s · {ratio} · "
        cases.setdefault(case, {})[r["method"]] = cell + f"{r['score']:.4f}"
    body = [
        list(case) + [cells.get(m, "-") for m in methods]
        for case, cells in cases.items()
    ]
    return markdown_table(["data set", "alpha", "change", "rate", *methods], body)


def sgd_section(rows):
    return markdown_table(
        ["data set", "estimator", "epochs", "fit s", "runs", "test score", "note"],
        [
            [
                r["dataset"],
                r["estimator"],
                r["epochs"],
                r["seconds"],
                r["runs"],
                f"{r['score']:.4f}",
                r["note"],
            ]
            for r in rows
        ],
    )


LEGENDS = {
    "compile": (
        "First and second call of each operation on a 240 x 6 problem; compile = "
        "first - second. 'disk cache': this process, kernels loaded from Numba's "
        "on-disk cache when present; 'empty cache': a fresh interpreter with an "
        "empty NUMBA_CACHE_DIR. The estimators share kernels, so the second one "
        "shows only what the first left to compile."
    ),
    "speed": (
        "rows: rows changed. T: SGD iterations; first it.: first iteration whose "
        "batch changed (both methods start there). fit s: fit of the model the "
        "request starts from. compile s: compile of the DeltaGrad replay paid by "
        "the first request of a process (excluded from the timings). DeltaGrad s / "
        "exact s: the partial_unfit / partial_fit call (best of 3 when one run is "
        "short: under 5 s, 1 s with --quick; "
        "replay s: the part inside the replay, last_update_.seconds). speed-up = "
        "exact s / DeltaGrad s. ceiling T' = T'/(j0' + (T'-j0')/T0) over the "
        "replayed iterations, ceiling T = T/(j0 + (T-j0)/T0); share = speed-up / "
        "ceiling T'. exact / approx: iterations of the replay (scheduled exact "
        "iterations in brackets; more means the safeguards forced exact ones)."
    ),
    "fidelity": (
        "w: the model before the change; w_U: the exact retrain on the same "
        "schedule; w_DG: DeltaGrad. Full parameter vector (coef_ and intercept_). "
        "ratio = ||w_DG - w_U|| / ||w - w_U|| (smaller is better; 1 = forgot "
        "nothing). Score: test accuracy (R² for ridge). agree: test rows with the "
        f"same prediction (ridge: within {RIDGE_AGREEMENT_TOL} of a target "
        "standard deviation)."
    ),
    "online": (
        "One row deleted per request, each request from the model the previous one "
        "left. ratio: the final model against one exact retrain without all the "
        "deleted rows (its time in 'exact retrain')."
    ),
    "baselines": (
        "Same changed rows as the requests. LR = LogisticRegression(C=1/(alpha n)), "
        "lbfgs; cold: from scratch; warm: warm_start from the model of the same "
        "method before the change; tight: tol=1e-10, max_iter=10000. SGD = "
        "SGDClassifier(loss='log_loss', alpha) with its defaults. Ratio = "
        "||w_new - w*'|| / ||w* - w*'|| with w*, w*' the tol=1e-10 optima before "
        "and after the change (w*' marks the fit that is the reference). For a "
        "deletion the cold tight time is the cold fit on all rows (removing <= 1% "
        "of the rows does not change its cost) and w*' is warm-started from w*. "
        "DeltaGrad and its exact retrain run a fixed number of SGD epochs: their "
        "ratio here measures how far SGD is from the optimum, not the unlearning "
        "error (see the fidelity table for that)."
    ),
    "ridge": (
        "Ridge(alpha=alpha n) is the exact optimum (so it is w*'); SMW downdate: "
        "Sherman-Morrison-Woodbury update of the inverse normal equations, the "
        "penalty's alpha k change included, from an inverse computed once at fit "
        "(deletion only). DeltaGrad's ratio here is SGD's distance from the "
        "optimum, as above."
    ),
    "sgd": (
        "Training time for the same number of epochs: DeltaGrad's mini-batch SGD "
        "(with its cache) against sklearn's per-row SGD (max_iter=epochs, "
        "tol=None, alpha as in the defaults)."
    ),
}


def report(results, config, elapsed):
    """The Markdown of a run."""
    regression = {n for n, e in ESTIMATORS.items() if e is DeltaGradRidge}
    classifier_rows = [r for r in results.baselines if r["dataset"] not in regression]
    ridge_rows = [r for r in results.baselines if r["dataset"] in regression]
    sections = [
        ("Compile time", "compile", compile_section(results.compile)),
        ("Requests: time", "speed", speed_section(results.requests)),
        (
            "Requests: fidelity and test score",
            "fidelity",
            fidelity_section(results.requests),
        ),
        (
            f"Online: {config.online_requests} sequential single-row deletions "
            "(defaults)",
            "online",
            online_section(results.online),
        ),
        (
            "What a user would do instead: classifiers (cell: seconds · ratio vs "
            "the optimum · test accuracy)",
            "baselines",
            baseline_section(classifier_rows),
        ),
        (
            "What a user would do instead: ridge (cell: seconds · ratio vs the "
            "optimum · test R²)",
            "ridge",
            baseline_section(ridge_rows),
        ),
        (
            "Training time: DeltaGrad fit against sklearn SGD",
            "sgd",
            sgd_section(results.sgd_fits),
        ),
    ]
    parts = [
        f"### {title}\n\n{LEGENDS[legend]}\n\n{table}"
        for title, legend, table in sections
        if table.count("\n") > 1
    ]
    notes = results.notes + [f"Total run time: {elapsed / 60:.1f} min."]
    parts.append("### Notes\n\n" + "\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


def write_csv(path, rows):
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(results, markdown, out):
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compile.csv", results.compile)
    write_csv(out / "requests.csv", results.requests)
    write_csv(out / "online.csv", results.online)
    write_csv(
        out / "online_requests.csv",
        [
            {"dataset": name, "request": i, "seconds": seconds}
            for name, times in results.online_seconds.items()
            for i, seconds in enumerate(times)
        ],
    )
    write_csv(out / "baselines.csv", results.baselines)
    write_csv(out / "sgd_fit.csv", results.sgd_fits)
    (out / "results.md").write_text(markdown)
    plot_requests(results.requests, out)
    plot_online(results.online_seconds, out)


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_requests(rows, out):
    """Speed-up, share of the ceiling and fidelity ratio against the rate."""
    if not rows:
        return
    plt = _pyplot()
    metrics = (
        ("speedup", "speed-up (exact / DeltaGrad)", "linear"),
        ("share_of_ceiling", "share of the ceiling T'/(j0' + (T'-j0')/T0)", "linear"),
        ("fidelity_ratio", "‖w_DG − w_U‖ / ‖w − w_U‖", "log"),
    )
    kinds = ("deletion", "addition")
    figure, axes = plt.subplots(
        len(metrics), len(kinds), figsize=(11, 11), squeeze=False, sharex=True
    )
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    colours = dict(zip(datasets, plt.cm.tab10.colors, strict=False))
    styles = {"defaults": "-", "paper": "--", "batch16384": ":"}
    for column, kind in enumerate(kinds):
        for (dataset, setting), points in _group(rows, kind).items():
            rates = [p["rate"] for p in points]
            for line, (metric, label, scale) in enumerate(metrics):
                axis = axes[line, column]
                axis.plot(
                    rates,
                    [p[metric] for p in points],
                    styles.get(setting, "-"),
                    marker="o",
                    color=colours[dataset],
                    label=f"{dataset} ({setting})",
                )
                axis.set_xscale("log")
                axis.set_yscale(scale)
                axis.set_ylabel(label)
                axis.set_title(kind)
                axis.grid(True, alpha=0.3)
        axes[-1, column].set_xlabel("share of training rows changed")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "requests.png", dpi=110)
    plt.close(figure)


def _group(rows, kind):
    groups = {}
    for r in rows:
        if r["change"] == kind:
            groups.setdefault((r["dataset"], r["setting"]), []).append(r)
    return {
        key: sorted(points, key=lambda p: p["rate"]) for key, points in groups.items()
    }


def plot_online(seconds_by_dataset, out):
    if not seconds_by_dataset:
        return
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, seconds in seconds_by_dataset.items():
        axis.plot(np.arange(1, len(seconds) + 1), seconds, marker=".", label=name)
    axis.set_xlabel("request (one row deleted each)")
    axis.set_ylabel("seconds")
    axis.set_yscale("log")
    axis.set_title("Online deletions with DeltaGrad (defaults)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "online.png", dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.unlearning",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 5 min)")
    parser.add_argument("--data-dir", help=f"data folder (default: ${DATA_ENV})")
    parser.add_argument(
        "--out",
        help="folder for CSV, Markdown and PNG files (default: benchmarks/results, "
        "benchmarks/results/quick with --quick)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(ESTIMATORS),
        help="data sets to run (default: all, or covtype houses mnist with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads for numpy and sklearn (0: no limit; default 1, "
        "like the single-threaded Numba kernels)",
    )
    parser.add_argument(
        "--no-cold-compile",
        action="store_true",
        help="skip the compile measurement with an empty Numba cache (a subprocess)",
    )
    return parser.parse_args(argv)


def setting_notes(args):
    """What the tables depend on: the estimators' defaults and the threads."""
    notes = []
    for estimator in (DeltaGradLogisticRegression, DeltaGradRidge):
        params = estimator().get_params()
        for name in ("random_state", "verbose", "device"):
            params.pop(name)
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        notes.append(f"{estimator.__name__} defaults: {shown}.")
    threads = args.threads if args.threads > 0 else "unlimited"
    notes.append(
        f"BLAS/OpenMP threads: {threads}. The Numba kernels are single-threaded; on "
        "a loaded 2-core machine sklearn with 2 threads per pool ran 5-100x slower "
        "than with one (oversubscription), hence the default of 1."
    )
    notes.append(
        "Paper setting: alpha=0.005, constant learning rate = the 'auto' value of "
        "the defaults fit on all training rows, batch_size=16384, exact_period=10, "
        "burn_in=10, curvature='lbfgs', lbfgs_memory=2, other parameters default."
    )
    return notes


def find_data(path):
    """The data folder: the argument, the environment, or ``shared/data`` nearby."""
    candidates = [path, None, REPO_ROOT / "shared" / "data"]
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for candidate in candidates:
        folder = data_dir(candidate)
        if folder is not None:
            return folder
    raise SystemExit(f"Data folder not found: pass --data-dir or set {DATA_ENV}.")


def main(argv=None):
    args = parse_args(argv)
    config = Config.from_args(args)
    out = Path(args.out or RESULTS / ("quick" if args.quick else ""))
    root = find_data(args.data_dir)
    start = time.perf_counter()
    results = Results(notes=setting_notes(args))
    limits = threadpool_limits(limits=args.threads) if args.threads > 0 else None
    log("compile times on a tiny problem")
    warm = probe_compile()
    cold = [] if args.no_cold_compile else probe_cold_compile()
    results.compile = compile_table(warm, cold)
    for name in config.datasets:
        log(f"loading {name}")
        data = Dataset(name, *load(name, root))
        run_dataset(data, config, results)
    if limits is not None:
        limits.restore_original_limits()
    markdown = report(results, config, time.perf_counter() - start)
    write_outputs(results, markdown, out)
    print(markdown)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min; files in {out}")


if __name__ == "__main__":
    main()
