"""Fidelity of the default DeltaGrad replay against the exact retrain, on real data.

The bar (issue #2): ||w_DG - w_U|| / ||w - w_U|| <= 0.05 for removing 0.1% and 1% of
the rows and adding 0.1%, and, for the classifier, test predictions of w_DG and w_U
agreeing on >= 99.9% of rows.
"""

import copy

import numpy as np
import pytest

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

BAR = 0.05
SEQUENCE_BAR = 0.1


def parameters(estimator):
    return np.concatenate([np.ravel(estimator.coef_), np.ravel(estimator.intercept_)])


def ratio(before, deltagrad, exact):
    w_u = parameters(exact)
    return np.linalg.norm(parameters(deltagrad) - w_u) / np.linalg.norm(before - w_u)


def make_estimator(name):
    if name in ("houses", "pol"):
        return DeltaGradRidge(random_state=0)
    return DeltaGradLogisticRegression(random_state=0)


CASES = [
    ("covtype", "remove", 0.001),
    ("covtype", "remove", 0.01),
    ("covtype", "add", 0.001),
    ("mnist", "remove", 0.001),
    ("mnist", "remove", 0.01),
    ("mnist", "add", 0.001),
    ("a9a", "remove", 0.001),  # two classes: the Gram model
    ("a9a", "remove", 0.01),
    ("a9a", "add", 0.001),
    ("reuters", "remove", 0.001),  # sparse CSR rows
    ("reuters", "remove", 0.01),
    ("reuters", "add", 0.001),
    ("houses", "remove", 0.001),
    ("houses", "remove", 0.01),
    ("houses", "add", 0.001),
]


@pytest.mark.parametrize("name, request_kind, share", CASES)
def test_default_fidelity_on_real_data(load_dataset, name, request_kind, share):
    X_train, X_test, y_train, y_test = load_dataset(name)
    n_changed = max(1, int(share * len(y_train)))
    estimator = make_estimator(name)
    if request_kind == "add":
        X_new, y_new = X_train[:n_changed], y_train[:n_changed]
        estimator.fit(X_train[n_changed:], y_train[n_changed:])
    else:
        estimator.fit(X_train, y_train)
        ids = np.random.default_rng(1).choice(len(y_train), n_changed, replace=False)
    before = parameters(estimator)
    exact = copy.deepcopy(estimator)
    if request_kind == "add":
        exact.partial_fit(X_new, y_new, method="exact")
        estimator.partial_fit(X_new, y_new)
    else:
        exact.partial_unfit(indices=ids, method="exact")
        estimator.partial_unfit(indices=ids)
    assert estimator.last_update_.n_approximate_iterations > 0
    measured = ratio(before, estimator, exact)
    print(f"{name} {request_kind} {share}: ratio {measured:.4f}")
    assert measured <= BAR
    if isinstance(estimator, DeltaGradLogisticRegression):
        agree = np.mean(estimator.predict(X_test) == exact.predict(X_test))
        assert agree >= 0.999


def test_fidelity_after_mixed_sequence(load_dataset):
    """20 mixed requests on MNIST: the ratio against the model before stays small."""
    X_train, _, y_train, _ = load_dataset("mnist")
    held_out = 40
    estimator = DeltaGradLogisticRegression(random_state=0)
    estimator.fit(X_train[held_out:], y_train[held_out:])
    exact = copy.deepcopy(estimator)
    before = parameters(estimator)
    rng = np.random.default_rng(2)
    for step in range(20):
        if step % 2:
            rows = slice(2 * step, 2 * step + 2)
            estimator.partial_fit(X_train[rows], y_train[rows])
            exact.partial_fit(X_train[rows], y_train[rows], method="exact")
        else:
            ids = rng.choice(estimator.sample_ids_, 8, replace=False)
            estimator.partial_unfit(indices=ids)
            exact.partial_unfit(indices=ids, method="exact")
        np.testing.assert_array_equal(estimator.sample_ids_, exact.sample_ids_)
    measured = ratio(before, estimator, exact)
    print(f"mnist 20 mixed requests: ratio {measured:.4f}")
    assert measured <= SEQUENCE_BAR
