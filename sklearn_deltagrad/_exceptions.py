"""The package's public exception and warning classes."""


class CacheTooLargeError(MemoryError, ValueError):
    """The SGD cache that ``fit`` would allocate exceeds ``max_cache_bytes``.

    A subclass of both :class:`MemoryError` and :class:`ValueError`. Raised before
    anything is allocated; the estimator is left as it was.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deltagrad import CacheTooLargeError, DeltaGradRidge
    >>> X, y = np.random.default_rng(0).normal(size=(50, 3)), np.arange(50.0)
    >>> try:
    ...     DeltaGradRidge(max_cache_bytes=1000).fit(X, y)
    ... except CacheTooLargeError:
    ...     print("cache too large")
    cache too large
    """


class InconsistentDeltaGradVersionWarning(UserWarning):
    """An estimator is unpickled by a different ``sklearn_deltagrad`` version.

    Like scikit-learn's ``InconsistentVersionWarning``: the fitted state (cache,
    schedule, rows) may not mean the same thing to this version; refit if possible.

    Parameters
    ----------
    estimator_name : str
        Class name of the estimator.
    original_version : str
        Version that pickled it (``"unknown"`` for pickles without a version).
    current_version : str
        Version that unpickles it.

    Examples
    --------
    >>> from sklearn_deltagrad import InconsistentDeltaGradVersionWarning
    >>> warning = InconsistentDeltaGradVersionWarning(
    ...     estimator_name="DeltaGradRidge",
    ...     original_version="0.0.1",
    ...     current_version="0.1.0",
    ... )
    >>> print(str(warning)[:58])
    Trying to unpickle estimator DeltaGradRidge from sklearn_d
    """

    def __init__(self, *, estimator_name, original_version, current_version):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version

    def __str__(self):
        return (
            f"Trying to unpickle estimator {self.estimator_name} from "
            f"sklearn_deltagrad version {self.original_version} when using version "
            f"{self.current_version}. This might lead to breaking code or invalid "
            "results. Use at your own risk."
        )
