"""The benchmark's timer: runs of the methods it compares alternate, each keeps its
best time, and a method stops repeating once one run is long."""

import itertools

from benchmarks import unlearning
from benchmarks.unlearning import best_of, interleaved_best_of


def fake_clock(monkeypatch, durations):
    """Make ``unlearning.timed`` report ``durations[name]`` (one per run, in
    order) for a run of ``name``, and return the list of names it was called
    with."""
    calls = []
    remaining = {name: iter(values) for name, values in durations.items()}

    def timed(function, *args):
        name = function(*args)
        calls.append(name)
        return next(remaining[name]), f"{name}#{calls.count(name)}"

    monkeypatch.setattr(unlearning, "timed", timed)
    return calls


def candidate(name):
    return (lambda: name, lambda made: made)


def test_runs_alternate_and_keep_each_best(monkeypatch):
    calls = fake_clock(monkeypatch, {"dg": [0.5, 0.3, 0.4], "exact": [2.0, 2.5, 1.8]})
    (dg_s, dg, dg_runs), (exact_s, exact, exact_runs) = interleaved_best_of(
        [candidate("dg"), candidate("exact")], repeat_below_s=5.0
    )
    assert calls == ["dg", "exact"] * 3
    assert (dg_s, dg_runs, dg) == (0.3, 3, "dg#3")
    assert (exact_s, exact_runs, exact) == (1.8, 3, "exact#3")


def test_a_long_run_stops_only_its_own_method(monkeypatch):
    calls = fake_clock(monkeypatch, {"dg": [0.5, 0.2, 0.4], "exact": [6.0]})
    results = interleaved_best_of(
        [candidate("dg"), candidate("exact")], repeat_below_s=5.0
    )
    assert calls == ["dg", "exact", "dg", "dg"]
    assert results == [(0.2, "dg#3", 3), (6.0, "exact#1", 1)]


def test_best_of_is_the_single_method_case(monkeypatch):
    calls = fake_clock(monkeypatch, {"only": itertools.repeat(0.7)})
    assert best_of(lambda: "only", lambda made: made, 1.0, repeats=4) == (
        0.7,
        "only#4",
        4,
    )
    assert calls == ["only"] * 4


def test_iteration_cost_counts_each_request_from_its_report():
    """``benchmarks.iteration_cost`` derives an approximate iteration's cost from
    each request's own counts: every setting replays the iterations that the
    retrain recomputes, split into exact and approximate ones."""
    from sklearn.datasets import make_classification

    from benchmarks.iteration_cost import SETTINGS, measure

    X, y = make_classification(600, 6, n_informative=4, n_classes=3, random_state=0)
    settings = [SETTINGS[0], SETTINGS[3]]  # L-BFGS, 8 rows with the reference
    table = measure(X, y, batch_size=64, rate=0.01, repeats=1, settings=settings)
    assert [row["setting"] for row in table] == [
        "exact retrain", "lbfgs m=2", "hessian 8 ref",
    ]  # fmt: skip
    replayed = table[0]["exact"]
    for row in table[1:]:
        assert row["exact"] + row["approximate"] == replayed
        assert 0 < row["exact"] < replayed
    assert all(row["seconds"] > 0 for row in table)


def test_compile_fit_gives_every_class_a_row(monkeypatch):
    """The benchmark's untimed compiling ``fit`` takes a row of every class, so that
    it also works where the first rows hold one class only; it fits on few rows."""
    import numpy as np

    from benchmarks.unlearning import Dataset, compile_fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 4))
    y = np.repeat([0, 1, 2], [900, 60, 40])  # the first 256 rows: class 0 only
    sizes = []

    class Recording(unlearning.DeltaGradLogisticRegression):
        def fit(self, X, y, sample_weight=None):
            sizes.append((X.shape[0], set(y.tolist())))
            return super().fit(X, y, sample_weight)

    monkeypatch.setitem(unlearning.ESTIMATORS, "three", Recording)
    compile_fit(Dataset("three", X, X[:10], y, y[:10]))
    assert sizes == [(258, {0, 1, 2})]


def test_curvature_benchmark_times_each_model_beside_exact_retrains(monkeypatch):
    """``benchmarks.curvature`` times every model's requests alternating with
    exact retrains of its own (compile and warm-up runs untimed), so that each
    speed-up is a ratio measured side by side."""
    from sklearn.datasets import make_classification

    from benchmarks import curvature

    real_timed = unlearning.timed
    methods = []

    def timed(function, *args):
        seconds, estimator = real_timed(function, *args)
        methods.append(estimator.last_update_.method)
        return seconds, estimator

    monkeypatch.setattr(unlearning, "timed", timed)
    X, y = make_classification(600, 6, n_informative=4, n_classes=3, random_state=0)
    data = unlearning.Dataset("toy", X, X[:10], y, y[:10])
    names = ["lbfgs m=2", "hessian 64 ref"]
    models = [m for m in curvature.curvature_models(quick=True) if m[0] in names]
    rows = []
    curvature.run_change(data, 64, 3, "deletion", 0.01, models, rows, period=10)
    assert methods == ["exact", "deltagrad"] * 3 * len(names)
    assert [row["model"] for row in rows] == names
    for row in rows:
        assert row["speed-up"] == row["exact s"] / row["DeltaGrad s"]
        assert 0.0 < row["ratio"] < 1.0
