"""Shared machinery of the estimators: ``_BaseDeltaGrad``.

It holds the parameters, ``fit``, the requests (``partial_unfit`` and the
``partial_fit`` of a fitted estimator), the validation of row ids and sample
weights, predictions, export and pickling. The arithmetic lives in ``_training``
(cached SGD), ``_replay`` (DeltaGrad and the exact retrain) and the kernels; the
subclasses in ``_estimators`` encode the targets and set the fitted coefficients.

Every request builds the new state aside and installs it at the end in one step that
is undone if anything (even ``KeyboardInterrupt``) interrupts it, so a request that
raises leaves the estimator as it was.
"""

import contextlib
import dataclasses
import os
import warnings
from numbers import Integral, Real

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._backend import resolve_device
from ._curvature import (
    CURVATURE_NAMES,
    GRAM,
    build_grams,
    build_reference,
    resolve_curvature,
    resolve_hessian_rows,
    resolve_lbfgs_memory,
    uses_reference,
)
from ._exceptions import CacheTooLargeError, InconsistentDeltaGradVersionWarning
from ._replay import ReplaySettings, apply_change
from ._rows import (
    PendingRemoval,
    TrainingRows,
    nonzeros_per_row,
    rows_with_room,
    writable_in_place,
)
from ._schedule import add_rows, make_schedule, remove_rows
from ._storage import flush_folder, remove_stale_files, save_state
from ._training import (
    LinearModel,
    TrainingCache,
    auto_learning_rate,
    estimate_cache_nbytes,
    feature_means,
    max_row_square_norm,
    run_sgd,
)

#: Default of ``max_cache_bytes``: 8 GiB.
DEFAULT_MAX_CACHE_BYTES = 8 * 2**30

# Sparse input is converted (once) to CSR, the layout of the sparse kernels.
_SPARSE_FORMATS = ["csr", "csc", "coo"]
# float32 rows are kept (and read by the kernels) as float32; anything else as float64.
_FLOAT_DTYPES = [np.float64, np.float32]


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
        "lbfgs_memory": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "hessian_rows": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "secant_correction": ["boolean"],
        "reference_correction": ["boolean"],
        "max_change_share": [Interval(Real, 0, 1, closed="right"), None],
        "max_drift": [Interval(Real, 0, None, closed="neither"), None],
        "max_cache_bytes": [Interval(Integral, 1, None, closed="left"), None],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "storage_dir": [str, os.PathLike, None],
        "copy_cache": ["boolean"],
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
        lbfgs_memory="auto",
        hessian_rows="auto",
        secant_correction=True,
        reference_correction=True,
        max_change_share=0.5,
        max_drift=None,
        max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
        device="cpu",
        storage_dir=None,
        copy_cache=True,
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
        self.secant_correction = secant_correction
        self.reference_correction = reference_correction
        self.max_change_share = max_change_share
        self.max_drift = max_drift
        self.max_cache_bytes = max_cache_bytes
        self.device = device
        self.storage_dir = storage_dir
        self.copy_cache = copy_cache
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
        sample_weight = _checked_sample_weight(sample_weight, X)
        Y, encoding = self._encode_targets_for_fit(y, classes, sample_weight)
        weights = self._row_weights(
            Y, sample_weight, encoding["attributes"].get("_class_weights")
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
        n_samples = X.shape[0]
        batch_size = n_samples if self.batch_size is None else self.batch_size
        n_iterations = -(-n_samples // min(batch_size, n_samples)) * self.max_iter
        curvature = self._curvature_code(model, n_iterations)
        self._check_cache_size(n_samples, n_iterations, model, curvature)
        rng = np.random.default_rng(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )
        # Kept for the replay's curvature bound (a pass over the rows otherwise, at
        # every request: 6 ms on covtype); removals leave it as it is, a valid
        # (looser) bound of the remaining rows.
        max_row_norm = max_row_square_norm(X, model)
        if self.learning_rate == "auto":
            learning_rate = auto_learning_rate(
                X,
                model,
                min(batch_size, n_samples),
                weights,
                max_row_norm=max_row_norm,
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
            resolve_device(self.device),
        )
        if curvature == GRAM:
            # At fit rather than at the first request: a request then costs what
            # later ones do (the rows are batch positions at fit).
            cache.grams, cache.gram_points = build_grams(
                rows.X,
                rows.weights,
                model,
                schedule.batch_ptr,
                schedule.batch_ids,
                cache.weights,
            )
        if uses_reference(self.reference_correction, curvature, model):
            # The reference point is the fitted model; its Hessian sums every row.
            cache.reference_point, cache.reference_hessian, cache.reference_weight = (
                build_reference(
                    rows.X, rows.weights, np.arange(n_samples), cache.final, model
                )
            )
        for name, value in encoding["attributes"].items():
            setattr(self, name, value)
        self._model = model
        # Fixed at fit (like the offset): dense and sparse copies of the same rows
        # resolve lbfgs_memory="auto" alike, and requests do not change it.
        self._batch_nonzeros = nonzeros_per_row(X) * min(batch_size, n_samples)
        self.learning_rate_ = learning_rate
        self.n_iter_ = self.max_iter
        self.last_update_ = None
        self.update_log_ = []
        self.drift_ = 0.0
        coef, intercept = model.split(cache.final)
        self._commit(
            rows,
            rows.ids.copy(),
            schedule,
            cache,
            coef,
            intercept,
            None,
            max_row_norm,
        )

    def _check_cache_size(self, n_samples, n_iterations, model, curvature):
        """Raise :class:`CacheTooLargeError` before allocating a too large cache."""
        if self.max_cache_bytes is None:
            return
        nbytes = estimate_cache_nbytes(
            n_iterations,
            n_samples,
            self.max_iter,
            model,
            curvature,
            uses_reference(self.reference_correction, curvature, model),
        )
        if nbytes > self.max_cache_bytes:
            grams = ""
            if curvature == GRAM:
                grams = " and the 'gram' curvature model's matrices (see curvature)"
            raise CacheTooLargeError(
                f"The SGD cache of this fit would take about {nbytes / 2**30:.3g} GiB "
                f"({nbytes} bytes: {n_iterations} iterations x {model.n_params} "
                f"parameters x 2 float64 arrays, plus the schedule{grams}), more "
                f"than max_cache_bytes={self.max_cache_bytes}. Use a larger "
                "batch_size or fewer epochs (max_iter), or raise max_cache_bytes."
            )

    def _commit(
        self,
        rows,
        sample_ids,
        schedule,
        cache,
        coef,
        intercept,
        update,
        max_row_norm,
        gram_update=None,
    ):
        """Install a new state; if anything interrupts it, restore the old one.

        ``rows`` is a :class:`TrainingRows` or a :class:`PendingRemoval` (whose
        in-place compaction runs here and is undone on failure). ``update`` is
        ``None`` (fit) or ``(report, update_log, drift)`` of a request.
        ``max_row_norm`` bounds the squared centred norms of the rows.
        ``gram_update`` (a :class:`GramUpdate`, never with ``storage_dir``) changes
        the Gram matrices that the old and the new cache share, as the commit's
        last step: once it has run, the request is done, even if an interrupt
        arrives right after it.

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
            self._max_row_norm = max_row_norm
            self.sample_ids_ = sample_ids  # the user's copy, not the rows' ids
            self.n_samples_seen_ = sample_ids.shape[0]
            self._set_coefficients(coef, intercept)
            if update is not None:
                self.last_update_, self.update_log_, self.drift_ = update
            if self.storage_dir is not None:
                published = save_state(self, self.storage_dir)
            if gram_update is not None:
                gram_update.apply()
        except BaseException:
            if gram_update is None or not gram_update.done[0]:
                if pending is not None:
                    pending.undo()
                self.__dict__.clear()
                self.__dict__.update(old)
            elif pending is not None:
                pending.forget()
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
        change = remove_rows(self._schedule, ids, self._rows.next_id)
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
            Y,
            _checked_sample_weight(sample_weight, X),
            getattr(self, "_class_weights", None),
            adding=True,
        )
        rows, new_ids = self._rows.with_added(X, Y, weights)
        try:
            change = add_rows(self._schedule, new_ids)
            self._run_request(
                rows, rows, rows.ids.copy(), change, method, n_added=new_ids.size
            )
        except BaseException:
            if self._rows is not rows:
                # Not committed: the added rows leave the spare rows they took.
                rows.discard_added(new_ids.size)
            raise
        return self

    def _run_request(
        self, rows, new_rows, sample_ids, change, method, n_removed=0, n_added=0
    ):
        """Update the model for ``change`` and commit; nothing changes on failure.

        ``rows`` hold every row the old or new schedule mentions; ``new_rows`` are
        the rows after the request (or a :class:`PendingRemoval` of them). With
        ``copy_cache=False`` the new trajectory overwrites the old one, so a
        failure after the first write cannot be undone: the request is then
        finished with the exact method before the exception propagates.
        """
        n_before = self._rows.ids.shape[0]
        max_row_norm = self._max_row_norm
        if n_added:
            added = rows.X[rows.X.shape[0] - n_added :]
            max_row_norm = max(max_row_norm, max_row_square_norm(added, self._model))
        settings = self._replay_settings()
        device = resolve_device(self.device)
        fallback = None
        used = method
        share = (n_removed + n_added) / n_before
        if (
            method == "deltagrad"
            and self.max_change_share is not None
            and share > self.max_change_share
        ):
            used, fallback = "exact", "max_change_share"

        # Where the Grams are the estimator's own memory, the commit updates them
        # in place rather than a request copying them (never in a mapped file).
        old_cache = self._cache
        defer_grams = self.storage_dir is None and writable_in_place(old_cache.grams)
        # With copy_cache=False, set by apply_change just before it overwrites the
        # old trajectory (the estimator's own memory only, never a mapped file).
        written = None
        if not (self.copy_cache or self.storage_dir is not None) and all(
            writable_in_place(array)
            for array in (old_cache.grams, old_cache.weights, old_cache.gradients)
        ):
            written = np.zeros(1, dtype=np.bool_)

        def update(how):
            return apply_change(
                rows.X,
                rows.Y,
                rows.weights,
                rows.ids,
                self._model,
                change,
                old_cache,
                how,
                settings,
                device,
                max_row_norm,
                defer_grams,
                written,
            )

        def finish(cache, report, gram_update, used, fallback, drift):
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
                    f"iteration {report.first_iteration}: "
                    f"{report.n_exact_iterations} exact, "
                    f"{report.n_approximate_iterations} approximate iterations, "
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
                max_row_norm,
                gram_update,
            )

        try:
            cache, report, gram_update = update(used)
            drift = 0.0
            if used == "deltagrad":
                scale = max(float(np.linalg.norm(cache.final)), np.finfo(float).tiny)
                drift = report.drift / scale
                if (
                    self.max_drift is not None
                    and _hypot(self.drift_, drift) > self.max_drift
                ):
                    used, fallback, drift = "exact", "max_drift", 0.0
                    cache, report, gram_update = update(used)
            finish(cache, report, gram_update, used, fallback, drift)
        except BaseException:
            # Committed (a done Gram update counts), or nothing overwritten yet:
            # the state is the new or the old one.
            if self._cache is not old_cache or written is None or not written[0]:
                raise
            try:
                cache, report, gram_update = update("exact")
                finish(cache, report, gram_update, "exact", "interrupted", 0.0)
            except BaseException:
                if self._cache is old_cache:
                    self._forget_fit()
                raise
            raise

    def _forget_fit(self):
        """Drop the fitted state (its trajectory is half rewritten): unfitted."""
        params = self.get_params(deep=False)
        self.__dict__.clear()
        self.__dict__.update(params)

    def _curvature_code(self, model, n_iterations):
        return resolve_curvature(
            self.curvature,
            model,
            self.hessian_rows,
            corrected_full_batch=self.batch_size is None and self.secant_correction,
            n_iterations=n_iterations,
        )

    def _replay_settings(self):
        curvature = self._curvature_code(self._model, self._schedule.n_iterations)
        referenced = uses_reference(
            getattr(self, "reference_correction", False), curvature, self._model
        )
        return ReplaySettings(
            burn_in=int(self.burn_in),
            exact_period=int(self.exact_period),
            curvature=curvature,
            lbfgs_memory=resolve_lbfgs_memory(
                self.lbfgs_memory,
                self._model,
                self._batch_nonzeros,
            ),
            hessian_rows=resolve_hessian_rows(
                self.hessian_rows, self._model, referenced, self._batch_rows()
            ),
            secant_correction=bool(self.secant_correction),
            reference_correction=referenced,
        )

    def _batch_rows(self):
        """Rows of a full batch of the current training set (``batch_size``, or
        every row for ``None``)."""
        n_rows = self._rows.ids.shape[0]
        return n_rows if self.batch_size is None else min(self.batch_size, n_rows)

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
        positive = self._rows.weights > 0
        # Live ids: their positions by a search, not isin.
        removed_positive = np.count_nonzero(positive[self._rows.positions(ids)])
        if np.count_nonzero(positive) == removed_positive:
            raise ValueError(
                "Removing these rows would leave only rows of zero sample_weight."
            )

    def _check_params(self):
        return {
            "dtype": _FLOAT_DTYPES,
            "accept_sparse": _SPARSE_FORMATS,
            "y_numeric": False,
        }

    def _row_weights(self, Y, sample_weight, class_weights, adding=False):
        """The rows' own weights: the checked ``sample_weight`` times the class
        weights of the encoded targets ``Y``.

        ``fit`` needs a positive total; added rows may all weigh 0.
        """
        weights = sample_weight
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
        # Pickles from before these parameters: their behaviour then.
        state.setdefault("storage_dir", None)
        state.setdefault("copy_cache", True)
        state.setdefault("reference_correction", False)
        if "_rows" in state and "_batch_nonzeros" not in state:
            # Pickles from before lbfgs_memory="auto": estimated from the current
            # rows and the schedule's mean batch (fit used the rows it was given).
            schedule = state["_schedule"]
            batch = schedule.batch_ids.shape[0] / schedule.n_iterations
            state["_batch_nonzeros"] = nonzeros_per_row(state["_rows"].X) * batch
        cache = state.get("_cache")
        grams = getattr(cache, "grams", None)
        if grams is not None and grams.shape[1] == grams.shape[2]:
            # Pickles from before the pending centring row (see gram_shape): the
            # same Grams, nothing pending.
            cache.grams = np.concatenate([grams, np.zeros_like(grams[:, :1])], axis=1)
        if "_rows" in state and "_max_row_norm" not in state:
            # Pickles from before the kept norm bound: that of the current rows.
            state["_max_row_norm"] = max_row_square_norm(
                state["_rows"].X, state["_model"]
            )
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


def _checked_sample_weight(sample_weight, X):
    """``sample_weight`` validated for the rows ``X``: float64, finite, >= 0."""
    return _check_sample_weight(
        sample_weight, X, dtype=np.float64, ensure_non_negative=True
    )


def _own_copy(X):
    """The estimator's own copy of the training rows: C-contiguous, same dtype, CSR
    when sparse (requests compact it in place, so the user's array is never used);
    dense rows with spare rows after them for later additions (:func:`rows_with_room`).
    """
    if sp.issparse(X):
        return sp.csr_matrix(X, copy=True)
    return rows_with_room(np.asarray(X))


def _hypot(a, b):
    """Drift estimates of successive requests add up as independent errors."""
    return float(np.hypot(a, b))


def _preview(values, limit=10):
    """A short list of values for an error message."""
    values = np.asarray(values).tolist()
    head = ", ".join(repr(v) for v in values[:limit])
    return f"[{head}{', ...' if len(values) > limit else ''}]"
