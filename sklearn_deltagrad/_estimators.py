"""The public estimators: target encoding, predictions and export to sklearn.

``DeltaGradLogisticRegression`` and ``DeltaGradRidge`` add to ``_BaseDeltaGrad``
(``_base``: parameters, ``fit``, requests, pickling) what depends on the loss: how
targets are encoded, how the coefficients are stored, ``predict`` and
``to_sklearn``. Their pickles and skops files name this module.
"""

import numpy as np
from scipy.special import expit, log_softmax
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import (
    _FLOAT_DTYPES,
    _SPARSE_FORMATS,
    DEFAULT_MAX_CACHE_BYTES,
    _BaseDeltaGrad,
    _preview,
    _restored_on_error,
)
from ._exceptions import CacheTooLargeError, InconsistentDeltaGradVersionWarning
from ._kernels.cpu import BINARY_LOGISTIC, MULTINOMIAL, SQUARED

__all__ = [
    "CacheTooLargeError",
    "DeltaGradLogisticRegression",
    "DeltaGradRidge",
    "InconsistentDeltaGradVersionWarning",
]


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
    curvature : {"auto", "gram", "lbfgs", "hessian"}, default="auto"
        Curvature model of the approximate iterations: the L-BFGS matrix of the last
        ``lbfgs_memory`` exact iterations, Hessian-vector products on the first
        ``hessian_rows`` rows of the batch (more accurate when the batches differ, as
        long as ``hessian_rows * n_classes`` is not small next to the number of
        parameters), or, for two classes only, ``"gram"``: each batch's exact
        Hessian at the cached iterate, a ``(n_features + 1)^2`` matrix (and a
        vector) per iteration built at ``fit`` and updated by every request (fit
        3-5x slower, requests 20-100x closer to the retrain on covtype class 2 vs
        rest and a9a; the state keeps the fit's iterates they are weighted at, see
        the user guide's "What it does not guarantee"). ``"auto"`` takes ``"gram"``
        for two classes with at most 127 features whose ``T`` matrices take at most
        128 MiB (single precision); otherwise ``"hessian"`` when ``hessian_rows *
        n_outputs >= 2 * n_params`` (``hessian_rows="auto"`` counted as 128 here,
        with or without ``reference_correction``) or for full batches
        (``batch_size=None``) with ``secant_correction``, and ``"lbfgs"`` otherwise.
        An explicit ``hessian_rows`` below that bound therefore selects ``"lbfgs"``:
        pass ``curvature="hessian"`` with it.
    lbfgs_memory : int or "auto", default="auto"
        ``m``, the number of curvature pairs of the L-BFGS model. ``"auto"``: 32,
        fewer (at least 2) where a product with the L-BFGS matrix would cost more
        than a quarter of an exact batch gradient, i.e. on sparse rows with many
        columns (see ``sklearn_deltagrad._curvature.resolve_lbfgs_memory``).
    hessian_rows : int or "auto", default="auto"
        Rows per Hessian-vector product of the ``"hessian"`` model. ``"auto"``:
        128 for several outputs; with ``reference_correction`` (whose sample only
        measures how the curvature moved since ``fit``) one row per 256 rows of a
        batch (``batch_size``, or every row for ``None``), at least 16 and at
        most 64 (batches of at most 64 rows whole), so that the sample costs about
        the same share of an exact iteration at every batch size (covtype,
        batches of 4,096 rows: 16 rows reach 73-75% of the speed-up ceiling at
        fidelity ratios 0.008-0.017, 64 rows 63-64% at 0.006-0.012; ``python -m
        benchmarks.sample_rows``); for a single output (two classes, or one
        regression target), whose rows carry less curvature each, four rows per
        parameter, at least 256 and at most 512.
    secant_correction : bool, default=True
        For the ``"hessian"`` model: correct the sampled Hessian product with the
        exact gradient change measured at the last exact iteration (a control
        variate whose weight is fitted at the scheduled exact iterations). It
        costs one more sampled product per scheduled exact iteration and a vector
        pass per approximate one. Measured (``python -m benchmarks.curvature``):
        1.3-5x closer to the exact retrain with batches of 16,384 rows (covtype,
        a9a) and 5-15x with full batches (MNIST), little change with batches of
        1,024 rows. With ``batch_size=None`` it makes ``curvature="auto"`` take
        the ``"hessian"`` model. ``False``: the plain sampled product.
    reference_correction : bool, default=True
        For the ``"hessian"`` model of at most 2,048 parameters: subtract from
        each sampled row's Hessian product the same row's product at a fixed
        reference point (the model at ``fit``), and add the whole training set's
        Hessian there (scaled to the batch), so that the sample carries only how
        the rows' curvature moved since ``fit``. Costs one ``n_params x
        n_params`` matrix (1.2 MB on covtype's 7 classes), built at ``fit`` (or
        at the first request that uses it) and updated by every request for its
        changed rows, and per approximate iteration a matrix-vector product and
        a second point in the sample's pass. Measured on covtype (7 classes,
        batches of 4,096 rows, removal of 0.1%): 2.7x closer to the exact retrain
        (0.022 to 0.0081, with 64 sampled rows instead of 128) for 7% more
        request time (0.34 s against 0.32 s, the retrain 1.9 s).
        Larger models run without it; ``False`` (or a request with it off, which
        drops the matrix): the sample alone.
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
        ``"gram"`` model's ``T * (q + 1) * q * 4``, ``q = n_features + 1`` (and ``T
        * n_params * 8`` for the classifier). ``None`` disables the check.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where training and requests run: ``"cpu"`` (Numba CPU kernels),
        ``"cuda"`` (Numba CUDA kernels on an NVIDIA GPU: ``pip install
        "sklearn_deltagrad[cuda]"``; without a GPU a :class:`RuntimeError` at
        ``fit`` or at the request), ``"auto"`` (the GPU when one is present, else
        the CPU). Resolved at each call; the fitted state stays on the host, so a
        model can move between devices with ``set_params``.
    storage_dir : str, path-like or None, default=None
        A folder that keeps the fitted state (training rows, cache, schedule) on
        disk, memory-mapped instead of in RAM. ``fit`` and every request write the
        new state aside, flush it, then publish it by atomically replacing a
        small manifest; a process killed at any moment leaves the previous or the
        new state, which :func:`~sklearn_deltagrad.load_state` loads. Each request
        rewrites the whole state (about the size of a pickle). Give each
        estimator (and each clone) its own folder. ``None`` keeps the state in
        memory.
    copy_cache : bool, default=True
        Whether a request writes the new trajectory (the cache's iterates and
        gradients) into new memory, so that a request that fails or is
        interrupted leaves the estimator as it was. ``False`` overwrites the
        cached trajectory instead: a request's peak memory is one cache lower
        (on Reuters-21578, about the rows plus the cache instead of the rows
        plus two caches), but a request interrupted once its replay has begun
        cannot be undone, so it is finished with ``method="exact"`` (logged
        with ``fallback="interrupted"``) before the exception propagates (if
        that fails too, the estimator is left unfitted). Ignored with
        ``storage_dir`` and for read-only or memory-mapped state, which are
        never written in place.
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

    - rows: ``n*p*8 + n*q*8 + 2*n*8`` (features, targets, ids, weights; ``n*p*4``
      for float32 features, the CSR arrays for sparse ones);
    - cache: ``2*T*d*8 + T + d*8`` (iterates, gradients, flags, final model);
    - schedule: ``nnz*8 + (T+1)*8 + T*8``;
    - Gram matrices ``T*(p+2)*(p+1)*4`` (single precision) when the ``"gram"``
      curvature model is used (two classes), and the ``T*d*8`` iterates they were
      built at.

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
        lbfgs_memory="auto",
        hessian_rows="auto",
        secant_correction=True,
        reference_correction=True,
        class_weight=None,
        max_change_share=0.5,
        max_drift=None,
        max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
        device="cpu",
        storage_dir=None,
        copy_cache=True,
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
            secant_correction=secant_correction,
            reference_correction=reference_correction,
            max_change_share=max_change_share,
            max_drift=max_drift,
            max_cache_bytes=max_cache_bytes,
            device=device,
            storage_dir=storage_dir,
            copy_cache=copy_cache,
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
        removed = np.bincount(labels[self._rows.positions(ids)], minlength=n_classes)
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
        Gram matrix (built at ``fit``, ``T * (n_features + 2) * (n_features + 1)``
        floats, updated by every request) and makes the replay exact up to rounding;
        ``"lbfgs"`` and ``"hessian"`` are as in
        :class:`DeltaGradLogisticRegression`. ``"auto"`` takes ``"gram"`` up to 63
        features, otherwise as the classifier does.
    lbfgs_memory : int or "auto", default="auto"
        ``m``, the number of curvature pairs of the L-BFGS model. ``"auto"``: 32,
        fewer (at least 2) where a product with the L-BFGS matrix would cost more
        than a quarter of an exact batch gradient, i.e. on sparse rows with many
        columns (see ``sklearn_deltagrad._curvature.resolve_lbfgs_memory``).
    hessian_rows : int or "auto", default="auto"
        Rows per Hessian-vector product of the ``"hessian"`` model. ``"auto"``:
        128 for several outputs; with ``reference_correction`` (whose sample only
        measures how the curvature moved since ``fit``) one row per 256 rows of a
        batch (``batch_size``, or every row for ``None``), at least 16 and at
        most 64 (batches of at most 64 rows whole), so that the sample costs about
        the same share of an exact iteration at every batch size (covtype,
        batches of 4,096 rows: 16 rows reach 73-75% of the speed-up ceiling at
        fidelity ratios 0.008-0.017, 64 rows 63-64% at 0.006-0.012; ``python -m
        benchmarks.sample_rows``); for a single output (two classes, or one
        regression target), whose rows carry less curvature each, four rows per
        parameter, at least 256 and at most 512.
    secant_correction : bool, default=True
        For the ``"hessian"`` model: correct the sampled Hessian product with the
        exact gradient change measured at the last exact iteration (a control
        variate whose weight is fitted at the scheduled exact iterations). It
        costs one more sampled product per scheduled exact iteration and a vector
        pass per approximate one. Measured (``python -m benchmarks.curvature``):
        1.3-5x closer to the exact retrain with batches of 16,384 rows (covtype,
        a9a) and 5-15x with full batches (MNIST), little change with batches of
        1,024 rows. With ``batch_size=None`` it makes ``curvature="auto"`` take
        the ``"hessian"`` model. ``False``: the plain sampled product.
    reference_correction : bool, default=True
        For the ``"hessian"`` model of at most 2,048 parameters: subtract from
        each sampled row's Hessian product the same row's product at a fixed
        reference point (the model at ``fit``), and add the whole training set's
        Hessian there (scaled to the batch), so that the sample carries only how
        the rows' curvature moved since ``fit``. Costs one ``n_params x
        n_params`` matrix (1.2 MB on covtype's 7 classes), built at ``fit`` (or
        at the first request that uses it) and updated by every request for its
        changed rows, and per approximate iteration a matrix-vector product and
        a second point in the sample's pass. Measured on covtype (7 classes,
        batches of 4,096 rows, removal of 0.1%): 2.7x closer to the exact retrain
        (0.022 to 0.0081, with 64 sampled rows instead of 128) for 7% more
        request time (0.34 s against 0.32 s, the retrain 1.9 s).
        Larger models run without it; ``False`` (or a request with it off, which
        drops the matrix): the sample alone.
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
        ``"gram"`` model's ``T * (q + 1) * q * 8``, ``q = n_features + 1``. ``None``
        disables the check.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where training and requests run: ``"cpu"`` (Numba CPU kernels),
        ``"cuda"`` (Numba CUDA kernels on an NVIDIA GPU: ``pip install
        "sklearn_deltagrad[cuda]"``; without a GPU a :class:`RuntimeError` at
        ``fit`` or at the request), ``"auto"`` (the GPU when one is present, else
        the CPU). Resolved at each call; the fitted state stays on the host, so a
        model can move between devices with ``set_params``.
    storage_dir : str, path-like or None, default=None
        A folder that keeps the fitted state (training rows, cache, schedule) on
        disk, memory-mapped instead of in RAM. ``fit`` and every request write the
        new state aside, flush it, then publish it by atomically replacing a
        small manifest; a process killed at any moment leaves the previous or the
        new state, which :func:`~sklearn_deltagrad.load_state` loads. Each request
        rewrites the whole state (about the size of a pickle). Give each
        estimator (and each clone) its own folder. ``None`` keeps the state in
        memory.
    copy_cache : bool, default=True
        Whether a request writes the new trajectory (the cache's iterates and
        gradients) into new memory, so that a request that fails or is
        interrupted leaves the estimator as it was. ``False`` overwrites the
        cached trajectory instead: a request's peak memory is one cache lower
        (on Reuters-21578, about the rows plus the cache instead of the rows
        plus two caches), but a request interrupted once its replay has begun
        cannot be undone, so it is finished with ``method="exact"`` (logged
        with ``fallback="interrupted"``) before the exception propagates (if
        that fails too, the estimator is left unfitted). Ignored with
        ``storage_dir`` and for read-only or memory-mapped state, which are
        never written in place.
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

    - rows: ``n*p*8 + n*q*8 + 2*n*8`` (features, targets, ids, weights; ``n*p*4``
      for float32 features, the CSR arrays for sparse ones);
    - cache: ``2*T*d*8 + T + d*8`` (iterates, gradients, flags, final model);
    - schedule: ``nnz*8 + (T+1)*8 + T*8``;
    - Gram matrices ``T*(p+2)*(p+1)*8`` when the ``"gram"`` curvature model is
      used.

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
