"""The public estimators: parameters, validation and fitted attributes.

The arithmetic lives in ``_training`` (cached SGD), ``_replay`` (DeltaGrad and the exact
retrain) and the kernels; an estimator validates its input, calls one of them and
stores the result. Every request builds the new state aside and installs it at the
end in one step that is undone if anything (even ``KeyboardInterrupt``) interrupts it,
so a request that raises leaves the estimator as it was.
"""

import contextlib
import dataclasses
import os
import warnings
from numbers import Integral, Real

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._backend import resolve_device
from ._curvature import CURVATURE_NAMES, resolve_curvature
from ._kernels.cpu import BINARY_LOGISTIC, MULTINOMIAL, SQUARED
from ._replay import ReplaySettings, apply_change
from ._rows import PendingRemoval, TrainingRows
from ._schedule import add_rows, make_schedule, remove_rows
from ._storage import flush_folder, remove_stale_files, save_state
from ._training import (
    LinearModel,
    TrainingCache,
    auto_learning_rate,
    estimate_cache_nbytes,
    feature_means,
    run_sgd,
)

#: Default of ``max_cache_bytes``: 8 GiB.
DEFAULT_MAX_CACHE_BYTES = 8 * 2**30

# Sparse input is converted (once) to CSR, the layout of the sparse kernels.
_SPARSE_FORMATS = ["csr", "csc", "coo"]
# float32 rows are kept (and read by the kernels) as float32; anything else as float64.
_FLOAT_DTYPES = [np.float64, np.float32]


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


def _package_version():
    from . import __version__

    return __version__


class _BaseDeltaGrad(BaseEstimator):
    """Cached-SGD linear model whose training rows can be removed and added."""

    _parameter_constraints = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
        ],
        "exact_period": [Interval(Integral, 1, None, closed="left")],
        "burn_in": [Interval(Integral, 0, None, closed="left")],
        "curvature": [StrOptions(CURVATURE_NAMES)],
        "lbfgs_memory": [Interval(Integral, 1, None, closed="left")],
        "hessian_rows": [Interval(Integral, 1, None, closed="left")],
        "max_change_share": [Interval(Real, 0, 1, closed="right"), None],
        "max_drift": [Interval(Real, 0, None, closed="neither"), None],
        "max_cache_bytes": [Interval(Integral, 1, None, closed="left"), None],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "storage_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        alpha=1e-4,
        fit_intercept=True,
        max_iter=50,
        batch_size=4096,
        learning_rate="auto",
        exact_period=10,
        burn_in=10,
        curvature="auto",
        lbfgs_memory=32,
        hessian_rows=128,
        max_change_share=0.5,
        max_drift=None,
        max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
        device="cpu",
        storage_dir=None,
        random_state=None,
        verbose=0,
    ):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.exact_period = exact_period
        self.burn_in = burn_in
        self.curvature = curvature
        self.lbfgs_memory = lbfgs_memory
        self.hessian_rows = hessian_rows
        self.max_change_share = max_change_share
        self.max_drift = max_drift
        self.max_cache_bytes = max_cache_bytes
        self.device = device
        self.storage_dir = storage_dir
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Fit the model by cached mini-batch SGD.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. The rows are kept, with stable ids ``0..n_samples-1``:
            a copy in the given float dtype (float32 stays float32), sparse input
            as a CSR matrix.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights, kept with the rows (see the user guide:
            each batch's gradient is the weighted mean over its rows).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        with _restored_on_error(self):
            self._check_settings()
            X, y = validate_data(self, X, y, **self._check_params(), reset=True)
            self._fit(X, y, classes=None, sample_weight=sample_weight)
        return self

    def _check_settings(self):
        """Validate the parameters and the device before any state is touched.

        Every call that reads the parameters (``fit`` and each request) checks them:
        ``set_params`` after ``fit`` must not reach the kernels unchecked.
        """
        self._validate_params()
        resolve_device(self.device)

    def _fit(self, X, y, classes, sample_weight):
        # The rows are copied first, so that the means and the step size are computed
        # on the same C-ordered values whatever the input's memory layout.
        X = _own_copy(X)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        Y, encoding = self._encode_targets_for_fit(y, classes, sample_weight)
        weights = self._row_weights(
            X, Y, sample_weight, encoding["attributes"].get("_class_weights")
        )
        # SGD runs centred on the feature means: same model, better conditioned.
        offset = (
            feature_means(X, weights) if self.fit_intercept else np.zeros(X.shape[1])
        )
        model = LinearModel(
            loss=encoding["loss"],
            n_outputs=encoding["n_outputs"],
            fit_intercept=bool(self.fit_intercept),
            alpha=float(self.alpha),
            offset=np.asarray(offset, dtype=np.float64),
        )
        resolve_curvature(self.curvature, model, self.hessian_rows)
        n_samples = X.shape[0]
        batch_size = n_samples if self.batch_size is None else self.batch_size
        self._check_cache_size(n_samples, batch_size, model)
        rng = np.random.default_rng(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )
        if self.learning_rate == "auto":
            learning_rate = auto_learning_rate(
                X, model, min(batch_size, n_samples), weights
            )
        else:
            learning_rate = float(self.learning_rate)
        schedule = make_schedule(
            n_samples, batch_size, self.max_iter, learning_rate, rng
        )
        rows = TrainingRows.from_fit(X, Y, weights)
        cache = TrainingCache.empty(schedule.n_iterations, model.n_params)
        run_sgd(
            rows.X,
            rows.Y,
            rows.weights,
            model,
            schedule.batch_ptr,
            schedule.batch_ids,
            schedule.learning_rates,
            0,
            cache,
        )
        for name, value in encoding["attributes"].items():
            setattr(self, name, value)
        self._model = model
        self.learning_rate_ = learning_rate
        self.n_iter_ = self.max_iter
        self.last_update_ = None
        self.update_log_ = []
        self.drift_ = 0.0
        coef, intercept = model.split(cache.final)
        self._commit(rows, rows.ids.copy(), schedule, cache, coef, intercept, None)

    def _check_cache_size(self, n_samples, batch_size, model):
        """Raise :class:`CacheTooLargeError` before allocating a too large cache."""
        if self.max_cache_bytes is None:
            return
        batch_size = min(batch_size, n_samples)
        n_iterations = -(-n_samples // batch_size) * self.max_iter
        curvature = resolve_curvature(self.curvature, model, self.hessian_rows)
        nbytes = estimate_cache_nbytes(
            n_iterations, n_samples * self.max_iter, model, curvature
        )
        if nbytes > self.max_cache_bytes:
            raise CacheTooLargeError(
                f"The SGD cache of this fit would take about {nbytes / 2**30:.3g} GiB "
                f"({nbytes} bytes: {n_iterations} iterations x {model.n_params} "
                f"parameters x 2 float64 arrays, plus the schedule), more than "
                f"max_cache_bytes={self.max_cache_bytes}. Use a larger batch_size or "
                "fewer epochs (max_iter), or raise max_cache_bytes."
            )

    def _commit(self, rows, sample_ids, schedule, cache, coef, intercept, update):
        """Install a new state; if anything interrupts it, restore the old one.

        ``rows`` is a :class:`TrainingRows` or a :class:`PendingRemoval` (whose
        in-place compaction runs here and is undone on failure). ``update`` is
        ``None`` (fit) or ``(report, update_log, drift)`` of a request.

        With ``storage_dir``, the new state is also written to the folder (aside,
        then published atomically) before the commit counts as done; afterwards
        its arrays are memory-mapped from the new file.
        """
        old = dict(self.__dict__)
        pending = rows if isinstance(rows, PendingRemoval) else None
        published = None
        try:
            if pending is not None:
                rows = pending.apply()
            self._rows = rows
            self._schedule = schedule
            self._cache = cache
            self.sample_ids_ = sample_ids  # the user's copy, not the rows' ids
            self.n_samples_seen_ = sample_ids.shape[0]
            self._set_coefficients(coef, intercept)
            if update is not None:
                self.last_update_, self.update_log_, self.drift_ = update
            if self.storage_dir is not None:
                published = save_state(self, self.storage_dir)
        except BaseException:
            if pending is not None:
                pending.undo()
            self.__dict__.clear()
            self.__dict__.update(old)
            raise
        if pending is not None:
            pending.forget()
        if published is not None:
            self._map_state(published)

    def _map_state(self, path):
        """Swap the in-memory arrays for memory maps of the just-published state.

        The state is already published and equal to the one in memory, so a
        failure here only leaves the arrays in memory. The folder is flushed first
        (durability of the manifest's replacement); old state files are removed
        last.
        """
        with contextlib.suppress(Exception):
            flush_folder(path.parent)
            mapped = joblib.load(path, mmap_mode="r")
            self._rows = mapped._rows
            self._cache = mapped._cache
            self._schedule = mapped._schedule
            remove_stale_files(path.parent, keep=path)

    # ----------------------------------------------------------------- requests
    def partial_unfit(self, X=None, y=None, *, indices=None, method="deltagrad"):
        """Remove training rows and update the model as retraining would.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features), default=None
            Rows to remove, by value: each given row removes one training row equal
            to it (and to ``y``, when given).
        y : array-like of shape (n_rows,), default=None
            Targets of the rows of ``X``, to tell apart training rows with equal
            features. Ignored when removing by ``indices``.
        indices : array-like of int, default=None
            Stable ids of the rows to remove (see ``sample_ids_``). Give either
            ``X`` or ``indices``.
        method : {"deltagrad", "exact"}, default="deltagrad"
            ``"deltagrad"`` replays the training run with DeltaGrad; ``"exact"``
            retrains on the same schedule (the reference the replay approximates),
            from the first iteration that this or any earlier DeltaGrad request
            estimated, and resets ``drift_`` to 0. A ``"deltagrad"`` request may
            fall back to ``"exact"`` (see ``max_change_share`` and ``max_drift``).

        Returns
        -------
        self : object
            The updated estimator.
        """
        check_is_fitted(self)
        self._check_settings()
        self._check_method(method)
        ids = self._ids_to_remove(X, y, indices)
        self._check_removal_keeps_data(ids)
        change = remove_rows(self._schedule, ids)
        pending = self._rows.removal(ids)
        sample_ids = np.delete(self._rows.ids, pending.positions)
        self._run_request(
            self._rows, pending, sample_ids, change, method, n_removed=ids.size
        )
        return self

    def _partial_fit(self, X, y, method, sample_weight):
        """Add rows ``X, y`` to a fitted estimator."""
        self._check_settings()
        self._check_method(method)
        X, y = validate_data(self, X, y, **self._check_params(), reset=False)
        Y = self._encode_targets(y)
        weights = self._row_weights(
            X, Y, sample_weight, getattr(self, "_class_weights", None), adding=True
        )
        rows, new_ids = self._rows.with_added(X, Y, weights)
        change = add_rows(self._schedule, new_ids)
        self._run_request(
            rows, rows, rows.ids.copy(), change, method, n_added=new_ids.size
        )
        return self

    def _run_request(
        self, rows, new_rows, sample_ids, change, method, n_removed=0, n_added=0
    ):
        """Update the model for ``change`` and commit; nothing changes on failure.

        ``rows`` hold every row the old or new schedule mentions; ``new_rows`` are
        the rows after the request (or a :class:`PendingRemoval` of them).
        """
        n_before = self._rows.ids.shape[0]
        settings = self._replay_settings()
        fallback = None
        used = method
        share = (n_removed + n_added) / n_before
        if (
            method == "deltagrad"
            and self.max_change_share is not None
            and share > self.max_change_share
        ):
            used, fallback = "exact", "max_change_share"
        cache, report = apply_change(
            rows.X,
            rows.Y,
            rows.weights,
            rows.ids,
            self._model,
            change,
            self._cache,
            used,
            settings,
        )
        drift = 0.0
        if used == "deltagrad":
            scale = max(float(np.linalg.norm(cache.final)), np.finfo(float).tiny)
            drift = report.drift / scale
            if (
                self.max_drift is not None
                and _hypot(self.drift_, drift) > self.max_drift
            ):
                used, fallback, drift = "exact", "max_drift", 0.0
                cache, report = apply_change(
                    rows.X,
                    rows.Y,
                    rows.weights,
                    rows.ids,
                    self._model,
                    change,
                    self._cache,
                    used,
                    settings,
                )
        drift_total = _hypot(self.drift_, drift) if used == "deltagrad" else 0.0
        report = dataclasses.replace(
            report,
            n_removed=int(n_removed),
            n_added=int(n_added),
            n_samples=int(sample_ids.shape[0]),
            drift=float(drift),
            drift_total=float(drift_total),
            requested_method=method,
            fallback=fallback,
        )
        coef, intercept = self._model.split(cache.final)
        log = [*self.update_log_, report]
        if self.verbose:
            reason = f" (fallback: {fallback})" if fallback else ""
            print(
                f"{type(self).__name__}: {report.method}{reason} update from "
                f"iteration {report.first_iteration}: {report.n_exact_iterations} "
                f"exact, {report.n_approximate_iterations} approximate iterations, "
                f"{report.seconds:.4f} s, drift {drift_total:.3g}"
            )
        self._commit(
            new_rows,
            sample_ids,
            change.schedule,
            cache,
            coef,
            intercept,
            (report, log, drift_total),
        )

    def _replay_settings(self):
        return ReplaySettings(
            burn_in=int(self.burn_in),
            exact_period=int(self.exact_period),
            curvature=resolve_curvature(self.curvature, self._model, self.hessian_rows),
            lbfgs_memory=int(self.lbfgs_memory),
            hessian_rows=int(self.hessian_rows),
        )

    @staticmethod
    def _check_method(method):
        if method not in ("deltagrad", "exact"):
            raise ValueError(f"method must be 'deltagrad' or 'exact', got {method!r}.")

    def _ids_to_remove(self, X, y, indices):
        if (X is None) == (indices is None):
            raise ValueError(
                "partial_unfit needs exactly one of X (rows to remove, by value) or "
                "indices (stable ids of the rows to remove)."
            )
        if indices is not None:
            return self._validate_ids(indices)
        X = validate_data(
            self, X, reset=False, accept_sparse=_SPARSE_FORMATS, dtype=_FLOAT_DTYPES
        )
        Y = None if y is None else self._encode_targets(y, n_rows=X.shape[0])
        ids = self._rows.match(X, Y)
        missing = np.flatnonzero(ids < 0)
        if missing.size:
            raise ValueError(
                f"{missing.size} of the rows to remove are not in the training set "
                f"(positions in X: {_preview(missing)})."
            )
        return np.sort(ids)

    def _validate_ids(self, indices):
        ids = np.asarray(indices)
        if ids.ndim != 1:
            raise ValueError(f"indices must be 1-D, got an array of shape {ids.shape}.")
        if ids.size == 0:
            raise ValueError("indices is empty: give at least one row id to remove.")
        if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(
                f"indices must be integer row ids (see sample_ids_), got dtype "
                f"{ids.dtype}."
            )
        ids = ids.astype(np.int64)
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"indices repeats row ids {_preview(unique[counts > 1])}; each row "
                "can be removed once."
            )
        unknown = self._rows.unknown_ids(unique)
        if unknown.size:
            raise ValueError(
                f"indices contains ids that are not live training rows: "
                f"{_preview(unknown)} (see sample_ids_)."
            )
        return unique

    def _check_removal_keeps_data(self, ids):
        if ids.size >= self._rows.ids.size:
            raise ValueError(
                f"Removing these {ids.size} rows would leave no training rows."
            )
        kept = ~np.isin(self._rows.ids, ids)
        if not (self._rows.weights[kept] > 0).any():
            raise ValueError(
                "Removing these rows would leave only rows of zero sample_weight."
            )

    def _check_params(self):
        return {
            "dtype": _FLOAT_DTYPES,
            "accept_sparse": _SPARSE_FORMATS,
            "y_numeric": False,
        }

    def _row_weights(self, X, Y, sample_weight, class_weights, adding=False):
        """Validated float64 row weights: ``sample_weight`` times the class weights.

        ``fit`` needs a positive total; added rows may all weigh 0.
        """
        weights = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        if class_weights is not None:
            weights = weights * class_weights[Y[:, 0].astype(np.int64)]
        if not np.isfinite(weights).all():
            raise ValueError("sample_weight contains NaN or infinity.")
        if not adding and not (weights > 0).any():
            raise ValueError(
                "sample_weight (times class_weight) is zero for every row: there is "
                "nothing to fit."
            )
        # The rows' own copy: removals compact it in place.
        return np.array(weights, dtype=np.float64, copy=True)

    # ------------------------------------------------------------------ helpers
    def _decision(self, X):
        """``X @ coef_.T + intercept_``, computed as sklearn's linear models do.

        The same operations in the same order (a matrix-vector product for a 1-D
        ``coef_``) make the predictions bitwise equal to those of the model that
        :meth:`to_sklearn` exports.
        """
        check_is_fitted(self)
        X = validate_data(
            self, X, reset=False, accept_sparse=_SPARSE_FORMATS, dtype=_FLOAT_DTYPES
        )
        coef = self.coef_
        if coef.ndim == 1:
            return X @ coef + self.intercept_
        return X @ coef.T + self.intercept_

    def _export_attributes(self, model):
        """Copy the fitted attributes every export needs onto ``model``."""
        model.coef_ = np.array(self.coef_, copy=True)
        model.intercept_ = (
            np.array(self.intercept_, copy=True)
            if isinstance(self.intercept_, np.ndarray)
            else float(self.intercept_)
        )
        model.n_features_in_ = int(self.n_features_in_)
        if hasattr(self, "feature_names_in_"):
            model.feature_names_in_ = np.array(self.feature_names_in_, copy=True)
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_sklearn_deltagrad_version"] = _package_version()
        return state

    def __setstate__(self, state):
        state = dict(state)
        version = state.pop("_sklearn_deltagrad_version", "unknown")
        if version != _package_version():
            warnings.warn(
                InconsistentDeltaGradVersionWarning(
                    estimator_name=type(self).__name__,
                    original_version=version,
                    current_version=_package_version(),
                ),
                stacklevel=2,
            )
        state.setdefault("storage_dir", None)  # pickles from before the parameter
        super().__setstate__(state)

    @property
    def cache_nbytes_(self):
        """Bytes of the SGD cache (iterates, gradients, flags) and the schedule."""
        check_is_fitted(self)
        schedule = self._schedule
        return (
            self._cache.nbytes
            + schedule.batch_ptr.nbytes
            + schedule.batch_ids.nbytes
            + schedule.learning_rates.nbytes
        )


class DeltaGradLogisticRegression(ClassifierMixin, _BaseDeltaGrad):
    """Logistic regression that forgets and learns rows by DeltaGrad.

    Minimises ``(1/n) sum_i log_loss(x_i, y_i; w) + (alpha/2) ||w||^2`` (intercept
    not penalised) by mini-batch SGD on a schedule fixed at ``fit``, caching every
    iterate and batch gradient. :meth:`partial_unfit` removes rows and
    :meth:`partial_fit` adds rows; both replay the training run on the changed data
    with DeltaGrad and give, to a small error, the model that retraining on the same
    schedule would give. Two classes use one sigmoid output, more use the softmax
    (multinomial) loss. At convergence the model equals sklearn's
    ``LogisticRegression(C=1 / (alpha * n_samples))``.

    Parameters
    ----------
    alpha : float, default=1e-4
        Strength of the L2 penalty, ``(alpha/2) ||w||^2``. It stays fixed when rows
        are removed or added.
    fit_intercept : bool, default=True
        Whether to fit an (unpenalised) intercept.
    max_iter : int, default=50
        Number of epochs (passes over the data) of the schedule.
    batch_size : int or None, default=4096
        Rows per mini-batch; ``None`` (or a size at least the number of rows) means
        full-batch gradient descent.
    learning_rate : "auto" or float, default="auto"
        Constant step size. ``"auto"`` derives it from the smoothness constant of the
        batch objective (``sklearn_deltagrad._training.auto_learning_rate``).
        It is fixed at ``fit``; later requests reuse it.
    exact_period : int, default=10
        ``T0``: after the burn-in, every ``exact_period``-th iteration of a replay
        computes the exact gradient; the others use the curvature model.
    burn_in : int, default=10
        ``j0``: the first ``burn_in`` iterations of the schedule are always exact.
    curvature : {"auto", "lbfgs", "hessian"}, default="auto"
        Curvature model of the approximate iterations: the L-BFGS matrix of the last
        ``lbfgs_memory`` exact iterations, or Hessian-vector products on the first
        ``hessian_rows`` rows of the batch (more accurate when the batches differ, as
        long as ``hessian_rows * n_classes`` is not small next to the number of
        parameters). ``"auto"`` takes ``"hessian"`` when ``hessian_rows *
        n_outputs >= 2 * n_params`` and ``"lbfgs"`` otherwise.
    lbfgs_memory : int, default=32
        ``m``, the number of curvature pairs of the L-BFGS model.
    hessian_rows : int, default=128
        Rows per Hessian-vector product of the ``"hessian"`` model.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, ``{label: weight}``, multiplied into
        ``sample_weight``. ``"balanced"`` computes ``n_samples / (n_classes *
        count(label))`` (with sample weights: their sums) from the rows given to
        ``fit`` and keeps these weights fixed afterwards: rows added by
        :meth:`partial_fit` get the same class weights, and removals do not
        rebalance (the objective of the exact retrain does not change either).
    max_change_share : float in (0, 1] or None, default=0.5
        Fallback: a ``method="deltagrad"`` request that removes or adds more than
        this share of the current training rows is served by the exact retrain
        instead (recorded as ``fallback="max_change_share"`` in ``last_update_``).
        ``None`` never falls back for size.
    max_drift : float or None, default=None
        Fallback: when the accumulated drift estimate (``drift_``) after a DeltaGrad
        request would exceed this value, the request is served by the exact
        retrain instead and ``drift_`` resets to 0 (``fallback="max_drift"``).
        ``drift_`` estimates the relative error ``||w - w_exact|| / ||w||``;
        measured on covtype and synthetic data it was 0.6 to 9 times the true
        error for 1% removals, so ``0.01``-``0.05`` is a sensible setting. ``None``
        never falls back for drift.
    max_cache_bytes : int or None, default=8 GiB
        ``fit`` raises :class:`~sklearn_deltagrad.CacheTooLargeError`
        (a ``MemoryError`` and ``ValueError``), before allocating anything, when
        the cache it would build takes more bytes: ``2 * T * n_params * 8`` for
        iterates and gradients plus the schedule (``T`` iterations), and the
        ``"gram"`` model's ``T * (n_features + 1)^2 * 8``. ``None`` disables the
        check.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the kernels run. Only the CPU is implemented in this version.
    storage_dir : str, path-like or None, default=None
        A folder that keeps the fitted state (training rows, cache, schedule) on
        disk, memory-mapped instead of in RAM. ``fit`` and every request write the
        new state aside, flush it, then publish it by atomically replacing a
        small manifest; a process killed at any moment leaves the previous or the
        new state, which :func:`~sklearn_deltagrad.load_state` loads. Each request
        rewrites the whole state (about the size of a pickle). Give each
        estimator (and each clone) its own folder. ``None`` keeps the state in
        memory.
    random_state : int, RandomState instance or None, default=None
        Seeds the schedule (batch order) and the placement of added rows.
    verbose : int, default=0
        Print a line per request when positive.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Coefficients (one row for two classes).
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercepts.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.
    n_iter_ : int
        Number of epochs of the schedule.
    n_samples_seen_ : int
        Current number of training rows.
    sample_ids_ : ndarray of shape (`n_samples_seen_`,)
        Stable ids of the training rows, in row order.
    learning_rate_ : float
        Step size of the schedule.
    last_update_ : ReplayReport or None
        What the last :meth:`partial_unfit`/:meth:`partial_fit` did.
    update_log_ : list of ReplayReport
        The audit log: one record per request since ``fit`` (method used and
        requested, fallback, rows removed and added, exact and approximate
        iterations, seconds, drift estimate).
    drift_ : float
        Estimated relative distance ``||w - w_exact|| / ||w||`` between the model
        and the exact retrain on the same schedule, accumulated (as independent
        errors, in root sum of squares) over the DeltaGrad requests since ``fit``
        or the last exact update, which resets it to 0. It comes from the
        residuals of the curvature model at the replay's exact iterations (see
        ``sklearn_deltagrad._replay.drift_estimate``): an indicator, not a
        bound.

    See Also
    --------
    sklearn.linear_model.LogisticRegression : The same objective solved to
        convergence, with ``C = 1 / (alpha * n_samples)``.
    DeltaGradRidge : The squared-error counterpart.

    Notes
    -----
    The fitted state is plain C-contiguous NumPy arrays, so ``joblib.dump`` writes
    them without copies and ``joblib.load(path, mmap_mode="r")`` maps them: the
    loaded estimator serves requests (what a request changes is copied; nothing is
    written into the mapped file) with bitwise the results of the in-memory one.
    With ``n`` rows, ``p`` features, ``q`` encoded target columns (1, or the
    number of targets), ``T`` iterations, ``d`` parameters and ``nnz`` schedule
    entries (about ``n * max_iter``), the state takes, in bytes:

    - rows: ``n*p*8 + n*q*8 + n*8`` (features, targets, ids);
    - cache: ``2*T*d*8 + T + d*8`` (iterates, gradients, flags, final model);
    - schedule: ``nnz*8 + (T+1)*8 + T*8``;
    - Gram matrices ``T*(p+1)^2*8`` when the ``"gram"`` curvature model is used.

    :meth:`to_sklearn` exports the model alone (a few ``p * n_outputs`` floats)
    for serving predictions.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn_deltagrad import DeltaGradLogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = DeltaGradLogisticRegression(random_state=0).fit(X, y)
    >>> clf.partial_unfit(indices=[0, 1, 2]).n_samples_seen_
    147
    >>> clf.predict(X[:2])
    array([0, 0])
    """

    _parameter_constraints = {
        **_BaseDeltaGrad._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        *,
        alpha=1e-4,
        fit_intercept=True,
        max_iter=50,
        batch_size=4096,
        learning_rate="auto",
        exact_period=10,
        burn_in=10,
        curvature="auto",
        lbfgs_memory=32,
        hessian_rows=128,
        class_weight=None,
        max_change_share=0.5,
        max_drift=None,
        max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
        device="cpu",
        storage_dir=None,
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            alpha=alpha,
            fit_intercept=fit_intercept,
            max_iter=max_iter,
            batch_size=batch_size,
            learning_rate=learning_rate,
            exact_period=exact_period,
            burn_in=burn_in,
            curvature=curvature,
            lbfgs_memory=lbfgs_memory,
            hessian_rows=hessian_rows,
            max_change_share=max_change_share,
            max_drift=max_drift,
            max_cache_bytes=max_cache_bytes,
            device=device,
            storage_dir=storage_dir,
            random_state=random_state,
            verbose=verbose,
        )
        self.class_weight = class_weight

    def partial_fit(
        self, X, y, classes=None, sample_weight=None, *, method="deltagrad"
    ):
        """Add training rows (or fit, on the first call).

        On an unfitted estimator this is :meth:`fit`, with ``classes`` required as in
        ``SGDClassifier``. On a fitted one it adds the rows to the training set (ids
        above every id assigned so far) and updates the model as retraining would;
        it is not "one more epoch".

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_rows, n_features)
            Rows to add (converted to the dtype and layout of the training rows).
        y : array-like of shape (n_rows,)
            Their labels, which must be among ``classes_``.
        classes : array-like of shape (n_classes,), default=None
            All classes; required on the first call, ignored afterwards.
        sample_weight : array-like of shape (n_rows,), default=None
            Weights of the added rows (times ``class_weight``, as fixed at ``fit``).
        method : {"deltagrad", "exact"}, default="deltagrad"
            ``"deltagrad"`` replays with DeltaGrad, ``"exact"`` retrains on the
            same schedule.

        Returns
        -------
        self : object
            The updated estimator.
        """
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit."
                )
            with _restored_on_error(self):
                self._check_settings()
                X, y = validate_data(self, X, y, **self._check_params(), reset=True)
                self._fit(X, y, classes=classes, sample_weight=sample_weight)
            return self
        return self._partial_fit(X, y, method, sample_weight)

    def _encode_targets_for_fit(self, y, classes, sample_weight):
        check_classification_targets(y)
        present = np.unique(y)
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            unseen = np.setdiff1d(present, classes)
            if unseen.size:
                raise ValueError(
                    f"y contains labels {_preview(unseen)} that are not in classes."
                )
        else:
            classes = present
        if classes.size < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but "
                f"the data contains only one class: {classes[0]!r}."
            )
        binary = classes.size == 2
        index = np.searchsorted(classes, y)
        Y = (index if binary else index.astype(np.float64)).astype(np.float64)
        class_weights = None
        if self.class_weight is not None:
            # Fixed at fit (also "balanced"): later requests reuse these weights.
            class_weights = compute_class_weight(
                self.class_weight, classes=classes, y=y, sample_weight=sample_weight
            ).astype(np.float64)
        return Y.reshape(-1, 1), {
            "loss": BINARY_LOGISTIC if binary else MULTINOMIAL,
            "n_outputs": 1 if binary else classes.size,
            "attributes": {"classes_": classes, "_class_weights": class_weights},
        }

    def _encode_targets(self, y, n_rows=None):
        y = np.asarray(y)
        if y.ndim != 1 or (n_rows is not None and y.shape[0] != n_rows):
            raise ValueError(
                f"y must be 1-D with one label per row of X, got shape {y.shape}."
            )
        known = np.isin(y, self.classes_)
        if not known.all():
            raise ValueError(
                f"y contains labels not seen at fit: {_preview(np.unique(y[~known]))}"
                f"; classes_ is {self.classes_.tolist()}."
            )
        return np.searchsorted(self.classes_, y).astype(np.float64).reshape(-1, 1)

    def _check_removal_keeps_data(self, ids):
        super()._check_removal_keeps_data(ids)
        labels = self._rows.Y[:, 0].astype(np.int64)
        n_classes = self.classes_.size
        before = np.bincount(labels, minlength=n_classes)
        removed = np.bincount(labels[np.isin(self._rows.ids, ids)], minlength=n_classes)
        emptied = np.flatnonzero((before > 0) & (before == removed))
        if emptied.size:
            raise ValueError(
                f"Removing these rows would leave no training rows of class(es) "
                f"{self.classes_[emptied].tolist()}."
            )

    def _set_coefficients(self, coef, intercept):
        self.coef_ = coef
        self.intercept_ = intercept

    def decision_function(self, X):
        """Signed distances: log-odds of ``classes_[1]``, or per-class scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Decision values.
        """
        scores = self._decision(X)
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Predicted classes.
        """
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[index]

    def predict_proba(self, X):
        """Class probabilities (sigmoid for two classes, softmax otherwise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class, in the order of ``classes_``.
        """
        # Computed exactly as sklearn's LogisticRegression does (bitwise equal).
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = expit(scores, out=scores)
            return np.stack([1 - positive, positive], axis=1)
        return softmax(scores, copy=False)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probability of each class.
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            scores = np.column_stack([np.zeros_like(scores), scores])
        return log_softmax(scores, axis=1)

    def to_sklearn(self):
        """Export the current model as a plain fitted sklearn ``LogisticRegression``.

        The exported model carries only the fitted coefficients (no training rows,
        cache or schedule), so it is small and can be pickled and loaded where
        ``sklearn_deltagrad`` is not installed. Its ``predict``,
        ``predict_proba`` and ``decision_function`` are bitwise equal to this
        estimator's. Its ``C`` is ``1 / (alpha * n_samples_seen_)``, the
        equivalent regularisation (``inf`` for ``alpha=0``); it is only
        informative, since the model is not refit.

        Returns
        -------
        model : sklearn.linear_model.LogisticRegression
            A fitted copy with the same ``coef_``, ``intercept_``, ``classes_``,
            ``n_features_in_`` and ``feature_names_in_`` (when present).

        Examples
        --------
        >>> import pickle
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from sklearn_deltagrad import DeltaGradLogisticRegression
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = DeltaGradLogisticRegression(random_state=0).fit(X, y)
        >>> served = clf.partial_unfit(indices=[0, 1]).to_sklearn()
        >>> type(served).__name__
        'LogisticRegression'
        >>> bool(np.array_equal(served.predict_proba(X), clf.predict_proba(X)))
        True
        >>> len(pickle.dumps(served)) < 2000
        True
        """
        from sklearn.linear_model import LogisticRegression

        check_is_fitted(self)
        denominator = float(self.alpha) * self.n_samples_seen_
        model = LogisticRegression(
            C=1.0 / denominator if denominator > 0 else np.inf,
            fit_intercept=bool(self.fit_intercept),
        )
        model.classes_ = np.array(self.classes_, copy=True)
        model.n_iter_ = np.array([self.n_iter_], dtype=np.int32)
        return self._export_attributes(model)


class DeltaGradRidge(RegressorMixin, _BaseDeltaGrad):
    """Ridge regression that forgets and learns rows by DeltaGrad.

    Minimises ``(1/n) sum_i (1/2) (y_i - x_i w - b)^2 + (alpha/2) ||w||^2`` by
    mini-batch SGD on a schedule fixed at ``fit``, caching every iterate and batch
    gradient; :meth:`partial_unfit` and :meth:`partial_fit` remove and add rows by
    replaying the run with DeltaGrad. At convergence the model equals sklearn's
    ``Ridge(alpha=alpha * n_samples)``. Multi-target ``y`` is supported.

    Parameters
    ----------
    alpha : float, default=1e-4
        Strength of the L2 penalty, ``(alpha/2) ||w||^2``. It stays fixed when rows
        are removed or added.
    fit_intercept : bool, default=True
        Whether to fit an (unpenalised) intercept.
    max_iter : int, default=50
        Number of epochs of the schedule.
    batch_size : int or None, default=4096
        Rows per mini-batch; ``None`` means full-batch gradient descent.
    learning_rate : "auto" or float, default="auto"
        Constant step size; ``"auto"`` derives it from the data's smoothness constant.
    exact_period : int, default=10
        ``T0``, the period of exact iterations in a replay after the burn-in.
    burn_in : int, default=10
        ``j0``, the number of leading iterations that are always exact.
    curvature : {"auto", "gram", "lbfgs", "hessian"}, default="auto"
        Curvature model of the approximate iterations. ``"gram"`` keeps each batch's
        Gram matrix (built at the first request, ``T * (n_features + 1)^2`` floats,
        updated by every request) and makes the replay exact up to rounding;
        ``"lbfgs"`` and ``"hessian"`` are as in
        :class:`DeltaGradLogisticRegression`. ``"auto"`` takes ``"gram"`` up to 63
        features, otherwise as the classifier does.
    lbfgs_memory : int, default=32
        ``m``, the number of L-BFGS curvature pairs.
    hessian_rows : int, default=128
        Rows per Hessian-vector product of the ``"hessian"`` model.
    max_change_share : float in (0, 1] or None, default=0.5
        Fallback: a ``method="deltagrad"`` request that removes or adds more than
        this share of the current training rows is served by the exact retrain
        instead (recorded as ``fallback="max_change_share"`` in ``last_update_``).
        ``None`` never falls back for size.
    max_drift : float or None, default=None
        Fallback: when the accumulated drift estimate (``drift_``) after a DeltaGrad
        request would exceed this value, the request is served by the exact
        retrain instead and ``drift_`` resets to 0 (``fallback="max_drift"``).
        ``drift_`` estimates the relative error ``||w - w_exact|| / ||w||``;
        measured on covtype and synthetic data it was 0.6 to 9 times the true
        error for 1% removals, so ``0.01``-``0.05`` is a sensible setting. ``None``
        never falls back for drift.
    max_cache_bytes : int or None, default=8 GiB
        ``fit`` raises :class:`~sklearn_deltagrad.CacheTooLargeError`
        (a ``MemoryError`` and ``ValueError``), before allocating anything, when
        the cache it would build takes more bytes: ``2 * T * n_params * 8`` for
        iterates and gradients plus the schedule (``T`` iterations), and the
        ``"gram"`` model's ``T * (n_features + 1)^2 * 8``. ``None`` disables the
        check.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the kernels run. Only the CPU is implemented in this version.
    storage_dir : str, path-like or None, default=None
        A folder that keeps the fitted state (training rows, cache, schedule) on
        disk, memory-mapped instead of in RAM. ``fit`` and every request write the
        new state aside, flush it, then publish it by atomically replacing a
        small manifest; a process killed at any moment leaves the previous or the
        new state, which :func:`~sklearn_deltagrad.load_state` loads. Each request
        rewrites the whole state (about the size of a pickle). Give each
        estimator (and each clone) its own folder. ``None`` keeps the state in
        memory.
    random_state : int, RandomState instance or None, default=None
        Seeds the schedule and the placement of added rows.
    verbose : int, default=0
        Print a line per request when positive.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Coefficients.
    intercept_ : float or ndarray of shape (n_targets,)
        Intercept(s).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.
    n_iter_ : int
        Number of epochs of the schedule.
    n_samples_seen_ : int
        Current number of training rows.
    sample_ids_ : ndarray of shape (`n_samples_seen_`,)
        Stable ids of the training rows, in row order.
    learning_rate_ : float
        Step size of the schedule.
    last_update_ : ReplayReport or None
        What the last :meth:`partial_unfit`/:meth:`partial_fit` did.
    update_log_ : list of ReplayReport
        The audit log: one record per request since ``fit`` (method used and
        requested, fallback, rows removed and added, exact and approximate
        iterations, seconds, drift estimate).
    drift_ : float
        Estimated relative distance ``||w - w_exact|| / ||w||`` between the model
        and the exact retrain on the same schedule, accumulated (as independent
        errors, in root sum of squares) over the DeltaGrad requests since ``fit``
        or the last exact update, which resets it to 0. It comes from the
        residuals of the curvature model at the replay's exact iterations (see
        ``sklearn_deltagrad._replay.drift_estimate``): an indicator, not a
        bound.

    See Also
    --------
    sklearn.linear_model.Ridge : The same objective solved exactly, with
        ``alpha_ridge = alpha * n_samples``.

    Notes
    -----
    The fitted state is plain C-contiguous NumPy arrays, so ``joblib.dump`` writes
    them without copies and ``joblib.load(path, mmap_mode="r")`` maps them: the
    loaded estimator serves requests (what a request changes is copied; nothing is
    written into the mapped file) with bitwise the results of the in-memory one.
    With ``n`` rows, ``p`` features, ``q`` encoded target columns (1, or the
    number of targets), ``T`` iterations, ``d`` parameters and ``nnz`` schedule
    entries (about ``n * max_iter``), the state takes, in bytes:

    - rows: ``n*p*8 + n*q*8 + n*8`` (features, targets, ids);
    - cache: ``2*T*d*8 + T + d*8`` (iterates, gradients, flags, final model);
    - schedule: ``nnz*8 + (T+1)*8 + T*8``;
    - Gram matrices ``T*(p+1)^2*8`` when the ``"gram"`` curvature model is used.

    :meth:`to_sklearn` exports the model alone (a few ``p * n_outputs`` floats)
    for serving predictions.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn_deltagrad import DeltaGradRidge
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = DeltaGradRidge(random_state=0).fit(X, y)
    >>> reg.partial_unfit(indices=[10, 20]).n_samples_seen_
    440
    >>> reg.partial_fit(X[:5], y[:5]).sample_ids_[-5:]
    array([442, 443, 444, 445, 446])
    """

    def partial_fit(self, X, y, sample_weight=None, *, method="deltagrad"):
        """Add training rows (or fit, on the first call).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_rows, n_features)
            Rows to add (converted to the dtype and layout of the training rows).
        y : array-like of shape (n_rows,) or (n_rows, n_targets)
            Their targets.
        sample_weight : array-like of shape (n_rows,), default=None
            Weights of the added rows.
        method : {"deltagrad", "exact"}, default="deltagrad"
            ``"deltagrad"`` replays with DeltaGrad, ``"exact"`` retrains on the
            same schedule.

        Returns
        -------
        self : object
            The updated estimator.
        """
        if not hasattr(self, "coef_"):
            return self.fit(X, y, sample_weight=sample_weight)
        return self._partial_fit(X, y, method, sample_weight)

    def _check_params(self):
        return {
            "dtype": _FLOAT_DTYPES,
            "accept_sparse": _SPARSE_FORMATS,
            "y_numeric": True,
            "multi_output": True,
        }

    def _encode_targets_for_fit(self, y, classes, sample_weight):
        Y = np.asarray(y, dtype=np.float64)
        single = Y.ndim == 1
        Y = Y.reshape(Y.shape[0], -1).copy()
        return Y, {
            "loss": SQUARED,
            "n_outputs": Y.shape[1],
            "attributes": {"_single_target": single},
        }

    def _encode_targets(self, y, n_rows=None):
        Y = np.asarray(y, dtype=np.float64)
        Y = Y.reshape(Y.shape[0], -1) if Y.ndim else Y.reshape(1, 1)
        if Y.shape[1] != self._model.n_outputs or (
            n_rows is not None and Y.shape[0] != n_rows
        ):
            raise ValueError(
                f"y must have one row per row of X and {self._model.n_outputs} "
                f"target(s), got shape {np.shape(y)}."
            )
        if not np.isfinite(Y).all():
            raise ValueError("y contains NaN or infinity.")
        return Y

    def _set_coefficients(self, coef, intercept):
        if self._single_target:
            self.coef_ = coef[0]
            self.intercept_ = float(intercept[0])
        else:
            self.coef_ = coef
            self.intercept_ = intercept

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions.
        """
        return self._decision(X)

    def to_sklearn(self):
        """Export the current model as a plain fitted sklearn ``Ridge``.

        The exported model carries only the fitted coefficients (no training rows,
        cache or schedule), so it is small and can be pickled and loaded where
        ``sklearn_deltagrad`` is not installed. Its ``predict`` is bitwise equal
        to this estimator's. Its ``alpha`` is ``alpha * n_samples_seen_``, the
        equivalent regularisation; it is only informative, since the model is not
        refit.

        Returns
        -------
        model : sklearn.linear_model.Ridge
            A fitted copy with the same ``coef_``, ``intercept_``,
            ``n_features_in_`` and ``feature_names_in_`` (when present).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_diabetes
        >>> from sklearn_deltagrad import DeltaGradRidge
        >>> X, y = load_diabetes(return_X_y=True)
        >>> reg = DeltaGradRidge(random_state=0).fit(X, y)
        >>> served = reg.partial_unfit(indices=[3]).to_sklearn()
        >>> type(served).__name__
        'Ridge'
        >>> bool(np.array_equal(served.predict(X), reg.predict(X)))
        True
        """
        from sklearn.linear_model import Ridge

        check_is_fitted(self)
        model = Ridge(
            alpha=float(self.alpha) * self.n_samples_seen_,
            fit_intercept=bool(self.fit_intercept),
        )
        model.n_iter_ = None
        return self._export_attributes(model)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _restored_on_error:
    """Context manager: on any exception, put the estimator's attributes back."""

    def __init__(self, estimator):
        self.estimator = estimator

    def __enter__(self):
        self.old = dict(self.estimator.__dict__)

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.estimator.__dict__.clear()
            self.estimator.__dict__.update(self.old)
        return False


def _own_copy(X):
    """The estimator's own copy of the training rows: C-contiguous, same dtype, CSR
    when sparse (requests compact it in place, so the user's array is never used)."""
    if sp.issparse(X):
        return sp.csr_matrix(X, copy=True)
    return np.array(X, order="C", copy=True)


def _hypot(a, b):
    """Drift estimates of successive requests add up as independent errors."""
    return float(np.hypot(a, b))


def _preview(values, limit=10):
    """A short list of values for an error message."""
    values = np.asarray(values).tolist()
    head = ", ".join(repr(v) for v in values[:limit])
    return f"[{head}{', ...' if len(values) > limit else ''}]"
