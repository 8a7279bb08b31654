"""The CUDA backend against the CPU backend and the NumPy reference.

Run on a GPU, or on the CPU in Numba's simulator (tiny problems: every simulated
thread is a Python thread):

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda
"""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from numba import cuda

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad import _replay as replay_module
from sklearn_deltagrad._backend import cuda_simulated, resolve_device
from sklearn_deltagrad._curvature import (
    gram_product,
    gram_shape,
    lbfgs_factorize,
    lbfgs_product,
    lbfgs_push_pair,
)
from sklearn_deltagrad._kernels import cpu
from sklearn_deltagrad._kernels import cuda as kernels

from .. import reference as ref
from ..test_kernels import LOSSES, kernel_rows, make_problem, make_weights, rel_err

LAYOUTS = ["dense64", "dense32", "csr", "csr32", "csr-unsorted"]
TOL = 1e-9


def device_tolerance(est):
    """How close the CPU's and CUDA's models of fitted ``est`` come: ``TOL``, or
    1e-7 where the replay has the reference correction, whose product the CPU
    takes in single precision (``reference_operator``) and CUDA in double."""
    return 1e-7 if ref.uses_reference_of(est) else TOL


def to_device_rows(rows):
    if isinstance(rows, cpu.CSRRows):
        return cpu.CSRRows(*(cuda.to_device(np.ascontiguousarray(a)) for a in rows))
    return cuda.to_device(rows)


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_batch_sums_match_numpy(loss, n_outputs, layout):
    """Gradient and Hessian-vector sums over a batch (several chunks of rows, rows
    repeated and out of order, weights with zeros) against the NumPy reference."""
    X, Y, model, w, rng = make_problem(
        loss, n_outputs, True, n_samples=40, centred=True
    )
    rows_k, X64 = kernel_rows(X, layout)
    weights = make_weights("random", X.shape[0])
    rows = rng.integers(0, X.shape[0], size=37)
    v = rng.standard_normal(w.shape[0])
    d_X = to_device_rows(rows_k)
    d_Y, d_s = cuda.to_device(Y), cuda.to_device(weights)
    d_rows, d_offset = cuda.to_device(rows), cuda.to_device(model.offset)
    workspace = kernels.Workspace(rows.size, X.shape[1], n_outputs)
    start = rng.standard_normal(w.shape[0])  # kernels add into their output
    out = cuda.to_device(start)
    kernels.gradient_sum(
        d_X, d_Y, d_s, d_rows, cuda.to_device(w), d_offset, loss, n_outputs, True,
        out, workspace,
    )  # fmt: skip
    expected = start + ref.gradient_sum(X64[rows], Y[rows], w, model, weights[rows])
    assert rel_err(out.copy_to_host(), expected) < 1e-12
    out = cuda.to_device(start)
    kernels.hessian_vector_sum(
        d_X, d_Y, d_s, d_rows, cuda.to_device(w), cuda.to_device(v), d_offset, loss,
        n_outputs, True, out, workspace,
    )  # fmt: skip
    expected = start + ref.hessian_vector_sum(
        X64[rows], Y[rows], w, v, model, weights[rows]
    )
    assert rel_err(out.copy_to_host(), expected) < 1e-12
    # accumulate=False writes the sum over whatever ``out`` held.
    kernels.gradient_sum(
        d_X, d_Y, d_s, d_rows, cuda.to_device(w), d_offset, loss, n_outputs, True,
        out, workspace, accumulate=False,
    )  # fmt: skip
    expected = ref.gradient_sum(X64[rows], Y[rows], w, model, weights[rows])
    assert rel_err(out.copy_to_host(), expected) < 1e-12


def test_lbfgs_product_matches_cpu_after_the_ring_wraps():
    rng = np.random.default_rng(0)
    n_params, memory = 37, 3
    S, Yp = np.zeros((memory, n_params)), np.zeros((memory, n_params))
    SY, SS = np.zeros((memory, memory)), np.zeros((memory, memory))
    slots = np.arange(memory)
    middle_inv = np.zeros((2 * memory, 2 * memory))
    n_pairs = 0
    A = rng.standard_normal((n_params, n_params))
    hessian = A @ A.T / n_params + np.eye(n_params)
    for _ in range(5):  # more pairs than the memory holds
        s = rng.standard_normal(n_params)
        n_pairs, _ = lbfgs_push_pair(S, Yp, SY, SS, slots, n_pairs, s, hessian @ s)
    first, sigma = lbfgs_factorize(SY, SS, n_pairs, 0.1, middle_inv)
    v = rng.standard_normal(n_params)
    expected = np.empty(n_params)
    lbfgs_product(S, Yp, slots, first, n_pairs, sigma, middle_inv, v, expected)
    out = cuda.device_array(n_params)
    kernels.lbfgs_product(
        cuda.to_device(S), cuda.to_device(Yp), cuda.to_device(slots), first,
        n_pairs, sigma, cuda.to_device(middle_inv), cuda.to_device(v), out,
        cuda.device_array(2 * memory), cuda.device_array(2 * memory),
    )  # fmt: skip
    assert rel_err(out.copy_to_host(), expected) < 1e-12


@pytest.mark.parametrize(
    "n_outputs, dtype",
    [(1, np.float32), (1, np.float64), (2, np.float64)],
    ids=["binary", "ridge", "ridge-multi"],  # the losses' Gram precisions
)
def test_gram_product_matches_cpu_with_a_pending_centring(n_outputs, dtype):
    """A stored Gram whose pending centring vector is not zero (as after rows
    entered through their nonzeros): the CPU's product, and the product with the
    Gram it stands for."""
    rng = np.random.default_rng(0)
    n_features = 6
    columns = n_features + 1
    gram = rng.standard_normal(gram_shape(1, columns))[0]
    gram[:columns] += gram[:columns].T
    gram = gram.astype(dtype)
    offset = rng.standard_normal(n_features)
    v = rng.standard_normal(columns * n_outputs)
    n_penalized = n_features * n_outputs
    expected = np.empty_like(v)
    gram_product(gram, offset, 3.0, v, 0.2, n_outputs, n_penalized, expected)
    model = ref.Model(ref.SQUARED, n_outputs, True, 0.2, n_features, offset)
    matrix = ref.stored_gram(gram, model)
    direct = (matrix @ v.reshape(columns, n_outputs)).ravel() / 3.0
    direct[:n_penalized] += 0.2 * v[:n_penalized]
    assert rel_err(expected, direct) < 1e-12
    out = cuda.device_array(v.size)
    kernels.gram_product(
        cuda.to_device(gram), cuda.to_device(offset), 3.0, cuda.to_device(v), 0.2,
        n_outputs, n_penalized, out,
    )  # fmt: skip
    assert rel_err(out.copy_to_host(), expected) < 1e-12


def test_reductions_are_deterministic_and_exact():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(1000)
    norms = cuda.to_device(np.zeros(1))
    step, midpoint = cuda.device_array(v.size), cuda.device_array(v.size)
    results = set()
    for _ in range(2):
        d_v, zeros = cuda.to_device(v), cuda.to_device(np.zeros(v.size))
        kernels.step_from(d_v, zeros, step, midpoint, norms)
        results.add(float(norms.copy_to_host()[0]))
    assert len(results) == 1
    assert abs(results.pop() - v @ v) < 1e-12 * (v @ v)
    np.testing.assert_array_equal(midpoint.copy_to_host(), v / 2)


# ------------------------------------------------------- estimators: CPU vs CUDA
def make_data(kind, n_samples=60, seed=0, layout="dense64"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, 5)) + [0.5, 0.0, -1.0, 0.0, 2.0]
    X[rng.random(X.shape) < 0.3] = 0.0
    if kind == "binary":
        y = (X[:, 0] + rng.standard_normal(n_samples) > 0.5).astype(int)
    elif kind == "multiclass":
        y = rng.integers(0, 3, n_samples)
    elif kind == "ridge":
        y = X @ [1.0, -2.0, 0.5, 0.0, 1.0] + rng.standard_normal(n_samples)
    else:
        y = rng.standard_normal((n_samples, 2))
    if layout == "csr":
        X = sp.csr_matrix(X)
    elif layout == "dense32":
        X = X.astype(np.float32)
    return X, y


def make_estimator(kind, **params):
    settings = dict(
        batch_size=20, max_iter=2, burn_in=2, exact_period=3, random_state=0
    )
    settings.update(params)
    if kind in ("binary", "multiclass"):
        return DeltaGradLogisticRegression(**settings)
    return DeltaGradRidge(**settings)


def model_of(est):
    return np.append(np.ravel(est.coef_), np.ravel(est.intercept_))


def run_sequence(est, X, y, device):
    """fit, remove, add (weighted), remove by value, an exact request: the model
    after each step and the update reports."""
    est.set_params(device=device).fit(X, y)
    states = [model_of(est)]
    est.partial_unfit(indices=[1, 5, 7, 30, 44])
    states.append(model_of(est))
    est.partial_fit(X[:4], y[:4], sample_weight=[1.0, 2.0, 0.5, 1.0])
    states.append(model_of(est))
    est.partial_unfit(X[[10, 11]], y[[10, 11]])
    states.append(model_of(est))
    est.partial_unfit(indices=[20], method="exact")
    states.append(model_of(est))
    counts = [
        (r.n_exact_iterations, r.n_approximate_iterations) for r in est.update_log_
    ]
    return states, counts


def assert_cuda_matches_cpu(kind, params, X, y):
    """The same sequence of requests on both devices: the same exact/approximate
    counts (some approximate) and models within :func:`device_tolerance`; returns
    the CPU's run."""
    est = make_estimator(kind, **params)
    cpu_states, cpu_counts = run_sequence(est, X, y, "cpu")
    gpu_states, gpu_counts = run_sequence(make_estimator(kind, **params), X, y, "cuda")
    assert gpu_counts == cpu_counts
    assert any(n_approx > 0 for _, n_approx in gpu_counts)
    for step, (a, b) in enumerate(zip(gpu_states, cpu_states, strict=True)):
        assert rel_err(a, b) < device_tolerance(est), f"step {step}"
    return cpu_states, cpu_counts


CASES = [
    ("binary", "lbfgs", "dense64"),
    ("binary", "hessian", "csr"),
    ("binary", "hessian", "dense32"),
    ("binary", "gram", "csr"),
    ("multiclass", "lbfgs", "csr"),
    ("multiclass", "hessian", "dense64"),
    ("ridge", "gram", "dense64"),
    ("ridge", "hessian", "csr"),
    ("ridge-multi", "lbfgs", "dense32"),
]


@pytest.mark.parametrize("kind, curvature, layout", CASES)
def test_cuda_matches_cpu_through_a_sequence_of_requests(kind, curvature, layout):
    X, y = make_data(kind, layout=layout)
    params = dict(curvature=curvature, lbfgs_memory=3, hessian_rows=8)
    assert_cuda_matches_cpu(kind, params, X, y)


@pytest.mark.parametrize(
    "kind, curvature, layout",
    [("binary", "gram", "csr"), ("multiclass", "hessian", "dense64")],
)
def test_cuda_requests_in_place_equal_copying_ones(kind, curvature, layout):
    """``copy_cache=False``: the replay's results overwrite the cached trajectory
    (after the device has read it); the same models as requests that copy it."""
    X, y = make_data(kind, layout=layout)
    params = dict(curvature=curvature, lbfgs_memory=3, hessian_rows=8)
    results = []
    for copy_cache in (True, False):
        est = make_estimator(kind, copy_cache=copy_cache, **params)
        results.append(run_sequence(est, X, y, "cuda"))
    (copied, copied_counts), (in_place, in_place_counts) = results
    assert in_place_counts == copied_counts
    for a, b in zip(in_place, copied, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["dense64", "csr"])
def test_cuda_matches_cpu_with_and_without_the_secant_correction(layout):
    """The Hessian model's secant control variate (anchor kept on the GPU, weight
    fitted from sums read back at the checks) on a schedule with many checks."""
    X, y = make_data("multiclass", layout=layout)
    params = dict(curvature="hessian", hessian_rows=8, max_iter=5, exact_period=2)
    models = {}
    for corrected in (False, True):
        for device in ("cpu", "cuda"):
            est = make_estimator("multiclass", secant_correction=corrected, **params)
            states, counts = run_sequence(est, X, y, device)
            models[corrected, device] = (states, counts)
        (gpu_states, gpu_counts), (cpu_states, cpu_counts) = (
            models[corrected, "cuda"],
            models[corrected, "cpu"],
        )
        assert gpu_counts == cpu_counts
        for step, (a, b) in enumerate(zip(gpu_states, cpu_states, strict=True)):
            assert rel_err(a, b) < device_tolerance(est), f"step {step}"
    # The correction changed the replay (its weight was not 0).
    assert rel_err(models[True, "cpu"][0][1], models[False, "cpu"][0][1]) > 1e-8


@pytest.mark.parametrize("kind, layout", [("multiclass", "dense64"), ("binary", "csr")])
def test_cuda_matches_cpu_with_the_reference_correction(kind, layout):
    """The Hessian model's reference control variate (the reference Hessian
    uploaded once per replay, its product one kernel): the CPU's models, which
    differ from those without it."""
    X, y = make_data(kind, layout=layout)
    params = dict(curvature="hessian", hessian_rows=8, reference_correction=True)
    cpu_states, _ = assert_cuda_matches_cpu(kind, params, X, y)
    params["reference_correction"] = False
    plain, _ = run_sequence(make_estimator(kind, **params), X, y, "cpu")
    assert rel_err(plain[1], cpu_states[1]) > 1e-8


@pytest.mark.parametrize("curvature", ["lbfgs", "hessian"])
def test_cuda_matches_cpu_when_a_batch_is_emptied(curvature):
    """Removing every row of a batch: the replay skips that iteration."""
    X, y = make_data("binary")
    models = []
    for device in ("cpu", "cuda"):
        est = make_estimator("binary", curvature=curvature, device=device)
        est.set_params(lbfgs_memory=3, hessian_rows=8).fit(X, y)
        first_batch = est._schedule.batch_ids[: est.batch_size]
        est.partial_unfit(indices=first_batch[: est.batch_size // 2])
        est.partial_unfit(indices=first_batch[est.batch_size // 2 :])
        models.append(model_of(est))
    assert rel_err(models[1], models[0]) < device_tolerance(est)


@pytest.mark.parametrize("curvature", ["lbfgs", "hessian"])
def test_cuda_matches_cpu_when_the_curvature_bound_rejects_steps(
    monkeypatch, curvature
):
    """The CUDA replay checks the bound of its approximate steps in batches and
    resumes from a rejected one: it must end where the CPU loop does."""
    X, y = make_data("binary")
    true_bound = replay_module.curvature_bound

    def removal(factor, device):
        monkeypatch.setattr(
            replay_module,
            "curvature_bound",
            lambda X, m, *bound: factor * true_bound(X, m, *bound),
        )
        est = make_estimator(
            "binary", curvature=curvature, lbfgs_memory=3, hessian_rows=8
        )
        est.set_params(device=device, max_iter=4).fit(X, y)
        return est.partial_unfit(indices=[1, 5, 7, 30])

    n_unbounded = removal(1.0, "cpu").last_update_.n_approximate_iterations
    for factor in np.geomspace(1.0, 1e-4, 30):
        cpu = removal(factor, "cpu")
        n_approximate = cpu.last_update_.n_approximate_iterations
        if 0 < n_approximate < n_unbounded:
            break
    else:
        pytest.fail("no bound rejects some steps and accepts others")
    gpu = removal(factor, "cuda")
    assert gpu.last_update_.n_approximate_iterations == n_approximate
    assert gpu.last_update_.n_exact_iterations == cpu.last_update_.n_exact_iterations
    tol = device_tolerance(cpu)
    assert rel_err(model_of(gpu), model_of(cpu)) < tol
    assert gpu.last_update_.drift == pytest.approx(cpu.last_update_.drift, rel=tol)


def test_cuda_matches_cpu_at_a_realistic_size_on_a_gpu(on_gpu):
    """20,000 x 100 dense rows, 5 classes, on a GPU (a small stand-in in the
    simulator): fit, a DeltaGrad removal of 0.5% of the rows, an exact one."""
    n_samples, n_features = (20000, 100) if on_gpu else (120, 6)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n_samples, n_features))
    y = np.argmax(X[:, :5] + rng.gumbel(size=(n_samples, 5)), axis=1)
    removed = rng.choice(n_samples, max(n_samples // 200, 4), replace=False)
    models = []
    for device in ("cpu", "cuda"):
        est = DeltaGradLogisticRegression(
            batch_size=1024 if on_gpu else 30, max_iter=3, random_state=0
        )
        est.set_params(device=device).fit(X, y)
        states = [model_of(est)]
        est.partial_unfit(indices=removed[: removed.size // 2])
        states.append(model_of(est))
        est.partial_unfit(indices=removed[removed.size // 2 :], method="exact")
        states.append(model_of(est))
        models.append(states)
    for step, (a, b) in enumerate(zip(models[1], models[0], strict=True)):
        assert rel_err(a, b) < device_tolerance(est), f"step {step}"


def test_cuda_matches_the_numpy_exact_retrain():
    """``method="exact"`` on CUDA is the reference retrain on the changed schedule."""
    X, y = make_data("multiclass")
    est = make_estimator("multiclass", device="cuda").fit(X, y)
    est.partial_unfit(indices=[2, 3, 50], method="exact")
    schedule = est._schedule
    model = ref.Model(
        ref.MULTINOMIAL, 3, True, est.alpha, X.shape[1], est._model.offset
    )
    ids = est.sample_ids_
    _, _, final = ref.exact_retrain(
        X[ids], y[ids].reshape(-1, 1).astype(float), ids, model,
        schedule.batch_ptr, schedule.batch_ids, schedule.learning_rates,
    )  # fmt: skip
    coef, intercept = ref.sklearn_coefficients(final, model)
    assert rel_err(est.coef_, coef) < TOL
    assert rel_err(est.intercept_, intercept) < TOL


@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_cuda_fit_and_replay_are_deterministic(kind):
    X, y = make_data(kind, layout="csr")
    runs = []
    for _ in range(2):
        est = make_estimator(kind, device="cuda").fit(X, y)
        states = [model_of(est), model_of(est.partial_unfit(indices=[3, 30]))]
        runs.append(states + [model_of(est.partial_fit(X[:2], y[:2]))])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_class_weight_and_sample_weight_on_cuda():
    X, y = make_data("multiclass")
    weights = np.random.default_rng(3).uniform(0.0, 2.0, y.size)
    models = []
    for device in ("cpu", "cuda"):
        est = make_estimator("multiclass", class_weight="balanced", device=device)
        est.fit(X, y, sample_weight=weights).partial_unfit(indices=[0, 9])
        models.append(model_of(est))
    assert rel_err(models[1], models[0]) < device_tolerance(est)


# ---------------------------------------------------------------- portability
def test_a_model_fitted_on_cuda_continues_on_the_cpu_and_back():
    X, y = make_data("binary")
    gpu = make_estimator("binary", device="cuda").fit(X, y)
    loaded = pickle.loads(pickle.dumps(gpu))
    for name in ("coef_", "intercept_"):
        assert isinstance(getattr(loaded, name), np.ndarray)  # plain host arrays
    np.testing.assert_array_equal(loaded.predict(X), gpu.predict(X))
    loaded.set_params(device="cpu").partial_unfit(indices=[3, 4])
    gpu.partial_unfit(indices=[3, 4])
    assert rel_err(model_of(loaded), model_of(gpu)) < device_tolerance(gpu)
    # And a CPU model continues on CUDA.
    loaded.partial_fit(X[:2], y[:2])
    gpu.set_params(device="cpu").partial_fit(X[:2], y[:2])
    loaded.set_params(device="cuda").partial_unfit(indices=[8])
    gpu.partial_unfit(indices=[8])
    assert rel_err(model_of(loaded), model_of(gpu)) < device_tolerance(gpu)


def test_cuda_serves_a_state_kept_on_disk(tmp_path):
    """With ``storage_dir`` the rows and the cache are memory-mapped files."""
    X, y = make_data("multiclass", layout="csr")
    models = []
    for device in ("cpu", "cuda"):
        est = make_estimator("multiclass", storage_dir=tmp_path / device)
        est.set_params(device=device).fit(X, y).partial_unfit(indices=[4, 40])
        est.partial_fit(X[:3], y[:3])
        models.append(model_of(est))
    assert rel_err(models[1], models[0]) < device_tolerance(est)


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda") == "cuda"
    # The simulator is not a GPU: "auto" stays on the CPU there.
    assert resolve_device("auto") == ("cpu" if cuda_simulated() else "cuda")
