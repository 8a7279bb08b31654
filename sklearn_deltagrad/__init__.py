"""Scikit-learn linear models that forget and learn training rows with DeltaGrad."""

from ._estimators import DeltaGradLogisticRegression, DeltaGradRidge
from ._exceptions import CacheTooLargeError, InconsistentDeltaGradVersionWarning
from ._storage import load_state

__version__ = "0.1.0"

__all__ = [
    "CacheTooLargeError",
    "DeltaGradLogisticRegression",
    "DeltaGradRidge",
    "InconsistentDeltaGradVersionWarning",
    "__version__",
    "load_state",
]
