"""The NumPy replay of ``benchmarks/sampling.py`` (the study of the Hessian sample
and of the exact schedule) is checked like the library's: with the whole batch as
the sample it reproduces the exact retrain, and every variant forgets."""

import numpy as np
import pytest

from benchmarks.sampling import BATCH, Problem, replay


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * BATCH + 50, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.standard_normal(X.shape[0]) > 0).astype(int)
    problem = Problem(X, y)
    cache = problem.train(np.array([], dtype=np.int64))
    problem.set_reference(cache[0])
    removed = rng.choice(problem.n, 40, replace=False)
    w_u = problem.train(removed)[0]
    return problem, cache, removed, w_u


def ratio(study, rows, variant, **options):
    problem, cache, removed, w_u = study
    w, _ = replay(problem, removed, cache, rows, variant, **options)
    return np.linalg.norm(w - w_u) / np.linalg.norm(cache[0] - w_u)


def test_whole_batch_sample_reproduces_the_retrain(study):
    # Not 0: the Hessian at the midpoint is exact to third order (measured 2.5e-7,
    # against 0.02 with 64 rows).
    assert ratio(study, BATCH, "fresh") < 1e-5
    assert ratio(study, BATCH, "gram") < 1e-5


@pytest.mark.parametrize(
    "variant", ["fresh", "reuse", "gram", "reference", "importance"]
)
def test_every_variant_forgets(study, variant):
    assert 0.0 < ratio(study, 64, variant) < 0.5


def test_reference_control_variate_beats_fresh_rows(study):
    # Measured 0.018 against 0.022 on this small problem (two batches per epoch);
    # 3.4x better on covtype_binary and a9a (python -m benchmarks.sampling).
    assert ratio(study, 64, "reference") < 0.9 * ratio(study, 64, "fresh")


def test_adaptive_schedule_spends_fewer_exact_iterations_on_a_larger_budget(study):
    problem, cache, removed, _ = study
    counts = [
        replay(problem, removed, cache, 64, "fresh", budget=budget)[1]
        for budget in (1e-6, 1e3)
    ]
    assert counts[0] > counts[1]
