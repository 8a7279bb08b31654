"""Property tests (issue #6): random sequences of up to 30 add/remove requests.

On small problems whose schedule is long enough for approximate iterations
(``T >= 3 * (burn_in + exact_period)``), after every request of a random sequence the
DeltaGrad model stays close to the exact retrain served the same sequence by a twin
(``method="exact"``), measured by ``||w_DG - w_U|| / ||w_0 - w_U||`` with ``w_0`` the
model before the sequence, and the stable ids stay consistent: the live ids, the
kept rows, the schedule and the twin agree with a plain-Python model of the requests.

Measured worst ratios over 30 random requests (5 seeds, n=300, 5 features, batch 50,
10 epochs, alpha 0.01): ``curvature="auto"`` 0.031-0.074 (logistic), ~1e-11 (ridge,
Hessian products of the whole batch); ``curvature="lbfgs"`` 0.15-0.49 (logistic) and
1.06-1.91 (ridge).
"""

import copy

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification, make_regression

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

N_FIT = 300
N_POOL = 100
PARAMS = dict(batch_size=50, max_iter=10, burn_in=5, exact_period=5, alpha=1e-2)
# Fidelity bars: the default curvature model, and L-BFGS (logistic only: on these
# tiny ridge problems L-BFGS does worse than not unlearning, see the module doc).
# With the Hessian taken at w_t (not the midpoint) hypothesis found 0.117 after 22
# one-row removals (3 classes, seed 570); the midpoint Hessian keeps it under 0.1.
BARS = {"auto": 0.10, "lbfgs": 1.0}
TRIED = {"sequences": 0, "requests": 0}


def _problem(kind, seed):
    if kind == "reg":
        X, y = make_regression(
            n_samples=N_FIT + N_POOL, n_features=5, noise=3.0, random_state=seed
        )
        return X, y / y.std(), DeltaGradRidge
    X, y = make_classification(
        n_samples=N_FIT + N_POOL,
        n_features=5,
        n_informative=3,
        n_redundant=0,
        n_classes=3 if kind == "multi" else 2,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return X, y, DeltaGradLogisticRegression


requests = st.integers(1, 30).flatmap(
    lambda n: st.lists(
        st.tuples(st.sampled_from(["remove", "add"]), st.integers(1, 3)),
        min_size=n,
        max_size=n,
    )
)


def _check_ids(est, twin, live, row_of_id, X, n_epochs):
    ids = np.array(sorted(live), dtype=np.int64)
    np.testing.assert_array_equal(est.sample_ids_, ids)
    np.testing.assert_array_equal(twin.sample_ids_, ids)
    np.testing.assert_array_equal(est._rows.ids, ids)
    assert est.n_samples_seen_ == ids.size
    np.testing.assert_array_equal(est._rows.X, X[[row_of_id[i] for i in ids]])
    # Every live id is in exactly one batch per epoch, no dead id in any.
    scheduled, counts = np.unique(est._schedule.batch_ids, return_counts=True)
    np.testing.assert_array_equal(scheduled, ids)
    assert (counts == n_epochs).all()
    np.testing.assert_array_equal(est._schedule.batch_ids, twin._schedule.batch_ids)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["clf", "multi", "reg"]),
    curvature=st.sampled_from(["auto", "auto", "lbfgs"]),
    seed=st.integers(0, 10_000),
    sequence=requests,
)
def _fidelity_and_ids(kind, curvature, seed, sequence):
    if kind == "reg" and curvature == "lbfgs":
        curvature = "auto"
    TRIED["sequences"] += 1
    X, y, cls = _problem(kind, seed % 50)
    est = cls(**PARAMS, curvature=curvature, random_state=seed)
    est.fit(X[:N_FIT], y[:N_FIT])
    n_iterations = est._schedule.n_iterations
    assert n_iterations >= 3 * (PARAMS["burn_in"] + PARAMS["exact_period"])
    twin = copy.deepcopy(est)
    w0 = est._cache.final.copy()
    live = set(range(N_FIT))
    row_of_id = {i: i for i in range(N_FIT)}
    next_id, next_row = N_FIT, N_FIT
    rng = np.random.default_rng(seed)
    n_approximate = 0
    for op, k in sequence:
        TRIED["requests"] += 1
        if op == "remove":
            ids = rng.choice(sorted(live), size=k, replace=False)
            est.partial_unfit(indices=ids)
            twin.partial_unfit(indices=ids, method="exact")
            live -= set(ids.tolist())
        else:
            rows = np.arange(next_row, next_row + k)
            next_row += k
            est.partial_fit(X[rows], y[rows])
            twin.partial_fit(X[rows], y[rows], method="exact")
            for row in rows:
                live.add(next_id)
                row_of_id[next_id] = row
                next_id += 1
        report = est.last_update_
        assert report.method == "deltagrad" and report.fallback is None
        n_approximate += report.n_approximate_iterations
        assert twin.last_update_.method == "exact"
        _check_ids(est, twin, live, row_of_id, X, PARAMS["max_iter"])
        w_dg, w_u = est._cache.final, twin._cache.final
        moved = np.linalg.norm(w0 - w_u)
        ratio = np.linalg.norm(w_dg - w_u) / moved
        assert ratio <= BARS[curvature], (ratio, len(est.update_log_))
        assert est.drift_ >= 0 and twin.drift_ == 0
    assert len(est.update_log_) == len(sequence)
    if len(sequence) >= 3:
        assert n_approximate > 0


def test_random_request_sequences_stay_close_to_the_exact_retrain():
    _fidelity_and_ids()
    print(f"\nproperties: {TRIED['sequences']} sequences, {TRIED['requests']} requests")
    assert TRIED["sequences"] >= 100
