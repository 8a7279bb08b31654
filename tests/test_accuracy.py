"""With default parameters the estimators predict as well as sklearn's solvers.

Issue #2: test accuracy on covtype and MNIST t10k within 1 percentage point of
``LogisticRegression(C=1/(alpha n))`` and of the default ``LogisticRegression()``;
test R^2 on 537_houses and 201_pol within 0.01 of ``Ridge(alpha=alpha n)`` and of
``Ridge()``.
"""

import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge


@pytest.mark.parametrize("name", ["covtype", "mnist"])
def test_classifier_accuracy_matches_sklearn(load_dataset, name):
    X_train, X_test, y_train, y_test = load_dataset(name)
    ours = DeltaGradLogisticRegression(random_state=0).fit(X_train, y_train)
    n = X_train.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        references = [
            LogisticRegression(C=1.0 / (ours.alpha * n), max_iter=500),
            LogisticRegression(),
        ]
        scores = [ref.fit(X_train, y_train).score(X_test, y_test) for ref in references]
    accuracy = ours.score(X_test, y_test)
    print(f"{name}: ours {accuracy:.4f}, sklearn {scores}")
    for score in scores:
        assert accuracy >= score - 0.01


@pytest.mark.parametrize("name", ["houses", "pol"])
def test_ridge_r2_matches_sklearn(load_dataset, name):
    X_train, X_test, y_train, y_test = load_dataset(name)
    ours = DeltaGradRidge(random_state=0).fit(X_train, y_train)
    n = X_train.shape[0]
    scores = [
        Ridge(alpha=ours.alpha * n).fit(X_train, y_train).score(X_test, y_test),
        Ridge().fit(X_train, y_train).score(X_test, y_test),
    ]
    r2 = ours.score(X_test, y_test)
    print(f"{name}: ours {r2:.4f}, sklearn {scores}")
    for score in scores:
        assert r2 >= score - 0.01
