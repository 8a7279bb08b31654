"""Scikit-learn linear models that forget and learn training rows with DeltaGrad."""

from ._estimators import DeltaGradLogisticRegression, DeltaGradRidge

__version__ = "0.1.0"

__all__ = ["DeltaGradLogisticRegression", "DeltaGradRidge", "__version__"]
