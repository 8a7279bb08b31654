"""scikit-learn's common estimator checks, run on both estimators.

No check is excused: not even the sample-weight equivalence checks that
scikit-learn expects its own SGD estimators to fail (with full batches, an integer
``sample_weight`` is the same objective, schedule and step size as repeated rows).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge


@parametrize_with_checks(
    [
        DeltaGradLogisticRegression(random_state=0),
        DeltaGradRidge(random_state=0),
    ],
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
