"""Model selection on worker processes (issue #7).

``GridSearchCV`` and ``cross_validate`` run under joblib's ``loky`` backend and on a
local Dask cluster give the sequential results, and the fitted estimators they hand
back (pickled in a worker, unpickled here) still serve requests like a local fit.

The Dask tests need ``dask`` and ``distributed`` (in the ``test`` extra). Worker
processes must import the same ``sklearn_deltagrad`` as this process: they inherit
the environment, so an installed package or ``PYTHONPATH`` is enough.
"""

import importlib
import os

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

import sklearn_deltagrad
from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

# Small runs whose replays mix exact and approximate iterations.
PARAMS = dict(random_state=0, max_iter=5, batch_size=64, burn_in=2, exact_period=3)
KINDS = ["logistic", "ridge"]
PACKAGE = sklearn_deltagrad.__name__
CV = KFold(n_splits=3, shuffle=True, random_state=0)


def problem(kind):
    if kind == "logistic":
        X, y = make_classification(
            n_samples=200,
            n_features=6,
            n_informative=4,
            n_redundant=0,
            n_classes=3,
            random_state=0,
        )
        return DeltaGradLogisticRegression(**PARAMS), X, y
    X, y = make_regression(n_samples=200, n_features=6, noise=5.0, random_state=0)
    return DeltaGradRidge(**PARAMS), X, y / y.std()


def scoring(kind):
    """The estimator's own score, plus the id of the process that computed it.

    The scorer is a local function, so that it travels by value (cloudpickle) and
    the workers need not import this test module.
    """

    def process_id(estimator, X, y):
        return os.getpid()

    return {"score": "accuracy" if kind == "logistic" else "r2", "pid": process_id}


def assert_same_model(a, b):
    """Bitwise equal coefficients and the same live rows."""
    assert_array_equal(a.coef_, b.coef_, strict=True)
    assert_array_equal(a.intercept_, b.intercept_, strict=True)
    assert_array_equal(a.sample_ids_, b.sample_ids_, strict=True)


@pytest.fixture(scope="module")
def dask_client():
    """A two-process Dask cluster on the loopback interface, for this module."""
    for name in ("dask", "distributed"):
        pytest.importorskip(
            name,
            reason=f"{name} is not installed; it is in the test extra: "
            "pip install -e '.[test]'",
        )
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            host="127.0.0.1",
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        # Workers that import another copy of the package would test that copy.
        files = client.run(lambda: importlib.import_module(PACKAGE).__file__)
        assert set(files.values()) == {sklearn_deltagrad.__file__}, (
            "the Dask workers import another sklearn_deltagrad; install the package "
            "or set PYTHONPATH for them"
        )
        yield client


@pytest.fixture(params=["loky", "dask"])
def workers(request):
    """``(context, pids)``: a joblib backend context with two worker processes, and
    the ids of those processes when known in advance (``None`` for loky)."""
    if request.param == "loky":
        return lambda: joblib.parallel_backend("loky", n_jobs=2), None
    client = request.getfixturevalue("dask_client")
    pids = set(client.run(os.getpid).values())
    return lambda: joblib.parallel_backend("dask"), pids


def assert_ran_on_workers(pids, worker_pids):
    pids = set(np.asarray(pids, dtype=np.int64).ravel())
    assert os.getpid() not in pids, "the work ran in the test process"
    if worker_pids is not None:
        assert pids <= worker_pids


# ------------------------------------------------------------------ grid search
@pytest.mark.parametrize("kind", KINDS)
def test_grid_search_on_workers_matches_sequential(kind, workers):
    backend, worker_pids = workers
    est, X, y = problem(kind)
    grid = {"alpha": [1e-4, 3e-2, 1.0], "batch_size": [32, 64]}
    options = dict(scoring=scoring(kind), refit="score", cv=CV)
    sequential = GridSearchCV(est, grid, n_jobs=1, **options).fit(X, y)
    with backend():
        search = GridSearchCV(est, grid, **options).fit(X, y)

    splits = [f"split{i}_test_pid" for i in range(CV.n_splits)]
    pids = np.concatenate([sequential.cv_results_[name] for name in splits])
    assert set(pids) == {os.getpid()}
    assert_ran_on_workers([search.cv_results_[name] for name in splits], worker_pids)

    expected = sequential.cv_results_
    assert search.cv_results_["params"] == expected["params"]
    split_scores = [f"split{i}_test_score" for i in range(CV.n_splits)]
    for name in ["mean_test_score", *split_scores]:
        assert_allclose(search.cv_results_[name], expected[name], rtol=1e-12, atol=0)
    ranks = "rank_test_score"
    assert_array_equal(search.cv_results_[ranks], expected[ranks])
    # The grid is a real choice: one candidate wins, a strong penalty loses.
    scores = expected["mean_test_score"]
    assert (scores == scores.max()).sum() == 1
    assert search.best_params_ == sequential.best_params_
    assert search.best_params_["alpha"] != 1.0

    # The refitted best estimator keeps its cache and still unlearns.
    best, reference = search.best_estimator_, sequential.best_estimator_
    assert best.cache_nbytes_ == reference.cache_nbytes_ > 0
    coef = np.array(best.coef_)
    for model in (best, reference):
        model.partial_unfit(indices=[0, 9, 42])
    assert_same_model(best, reference)
    assert not np.array_equal(coef, best.coef_)


# -------------------------------------------------------------- cross_validate
@pytest.mark.parametrize("kind", KINDS)
def test_cross_validate_estimators_from_workers_still_unlearn(kind, workers):
    backend, worker_pids = workers
    est, X, y = problem(kind)
    est.set_params(alpha=1e-3)
    with backend():
        result = cross_validate(
            est,
            X,
            y,
            cv=CV,
            scoring=scoring(kind),
            return_estimator=True,
            return_indices=True,
        )
    assert_ran_on_workers(result["test_pid"], worker_pids)

    folds = zip(
        result["estimator"],
        result["indices"]["train"],
        result["indices"]["test"],
        result["test_score"],
        strict=True,
    )
    for remote, train, test, score in folds:
        local = clone(est).fit(X[train], y[train])
        assert remote.get_params() == local.get_params()
        assert remote.cache_nbytes_ == local.cache_nbytes_ > 0
        assert_same_model(remote, local)
        assert_allclose(score, local.score(X[test], y[test]), rtol=1e-12, atol=0)

        # The same requests on both: ids are positions in the training fold.
        coef = np.array(remote.coef_)
        for model in (remote, local):
            model.partial_unfit(indices=[0, 7, 30])
            model.partial_fit(X[test[:5]], y[test[:5]])
            model.partial_unfit(X[train[[11]]], y[train[[11]]])
        assert_same_model(remote, local)
        assert remote.n_samples_seen_ == train.size - 4 + 5
        assert [u.method for u in remote.update_log_] == ["deltagrad"] * 3
        assert remote.update_log_[0].n_approximate_iterations > 0
        assert not np.array_equal(coef, remote.coef_)


# ------------------------------------------------------------------- threads
@pytest.mark.parametrize("kind", KINDS)
def test_threads_give_the_sequential_results(kind):
    """The compiled loops release the GIL (``nogil``): fits and requests running in
    threads side by side stay deterministic and independent."""
    est, X, y = problem(kind)
    grid = {"alpha": [1e-4, 3e-2], "batch_size": [32, 64]}
    options = dict(scoring=scoring(kind), refit="score", cv=CV)
    sequential = GridSearchCV(est, grid, n_jobs=1, **options).fit(X, y)
    with joblib.parallel_backend("threading", n_jobs=2):
        threaded = GridSearchCV(est, grid, **options).fit(X, y)
    for name in ["mean_test_score", "rank_test_score"]:
        assert_array_equal(threaded.cv_results_[name], sequential.cv_results_[name])
    models = [clone(est).set_params(random_state=seed) for seed in range(4)]

    def fit_and_unfit(model):
        return model.fit(X, y).partial_unfit(indices=[1, 2, 3])

    threaded_models = joblib.Parallel(n_jobs=4, backend="threading")(
        joblib.delayed(fit_and_unfit)(clone(model)) for model in models
    )
    for model, twin in zip(threaded_models, models, strict=True):
        assert_same_model(model, fit_and_unfit(twin))
