"""Deployment (issue #9): export for serving, memory-mapped persistence, on-disk
storage that survives a killed process, and the forget-service example.
"""

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

from .test_persistence import assert_bitwise_same

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"batch_size": 32, "max_iter": 4, "burn_in": 3, "exact_period": 4}


def _data(kind, n=240, p=6):
    if kind.startswith("ridge"):
        X, y = make_regression(n_samples=n, n_features=p, n_targets=1, random_state=1)
        y = y / y.std()
        if kind == "ridge_multi":
            y = np.column_stack([y, 2 * y + X[:, 0]])
        return X, y
    n_classes = {"binary": 2, "multiclass": 3, "strings": 3}[kind]
    X, y = make_classification(
        n_samples=n,
        n_features=p,
        n_informative=4,
        n_classes=n_classes,
        random_state=1,
    )
    if kind == "strings":
        y = np.array(["cat", "dog", "eel"])[y]
    return X, y


def _fitted(kind, **params):
    X, y = _data(kind)
    cls = DeltaGradRidge if kind.startswith("ridge") else DeltaGradLogisticRegression
    est = cls(random_state=0, **PARAMS, **params).fit(X[:200], y[:200])
    est.partial_unfit(indices=[1, 7, 30])
    est.partial_fit(X[200:210], y[200:210])
    return est, X, y


def _outputs(model, X):
    names = ["predict", "predict_proba", "decision_function"]
    return {name: getattr(model, name)(X) for name in names if hasattr(model, name)}


# ------------------------------------------------------------------ export
KINDS = ["binary", "multiclass", "strings", "ridge", "ridge_multi"]


@pytest.mark.parametrize("frame", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_to_sklearn_predicts_bitwise_equal(kind, frame):
    est, X, y = _fitted(kind)
    if frame:
        pd = pytest.importorskip("pandas")
        columns = [f"f{i}" for i in range(X.shape[1])]
        X = pd.DataFrame(X, columns=columns)
        est = type(est)(**est.get_params()).fit(X.iloc[:200], y[:200])
        est.partial_unfit(indices=[2, 9])
    served = est.to_sklearn()
    assert type(served) is (Ridge if kind.startswith("ridge") else LogisticRegression)
    for name in ("coef_", "intercept_", "n_features_in_"):
        assert_array_equal(getattr(served, name), getattr(est, name))
    if frame:
        assert_array_equal(served.feature_names_in_, est.feature_names_in_)
    else:
        assert not hasattr(served, "feature_names_in_")
    if not kind.startswith("ridge"):
        assert_array_equal(served.classes_, est.classes_)
    expected, got = _outputs(est, X), _outputs(served, X)
    assert expected.keys() == got.keys() and expected
    for name, value in expected.items():
        assert_array_equal(got[name], value, err_msg=name)
        assert got[name].dtype == value.dtype, name
    # float32 input too.
    if not frame:
        X32 = X.astype(np.float32)
        for name, value in _outputs(est, X32).items():
            assert_array_equal(_outputs(served, X32)[name], value, err_msg=name)
    # The export is a copy: later requests do not change it.
    coef = served.coef_.copy()
    est.partial_unfit(indices=[est.sample_ids_[0]])
    assert_array_equal(served.coef_, coef)


def test_exported_model_loads_without_sklearn_deltagrad(tmp_path):
    models, X_all = {}, {}
    for kind in ("binary", "strings", "ridge_multi"):
        est, X, _ = _fitted(kind)
        models[kind] = est.to_sklearn()
        X_all[kind] = X
        expected = _outputs(est, X)
        np.savez(tmp_path / f"{kind}_expected.npz", **expected)
    path = tmp_path / "served.pkl"
    path.write_bytes(pickle.dumps((models, X_all)))
    assert b"sklearn_deltagrad" not in path.read_bytes()
    script = textwrap.dedent(
        f"""
        import pickle, sys
        import numpy as np
        sys.modules["sklearn_deltagrad"] = None  # any import of it now fails
        models, X_all = pickle.loads(open({str(path)!r}, "rb").read())
        assert not any(name.startswith("sklearn_deltagrad") and sys.modules[name]
                       for name in sys.modules)
        for kind, model in models.items():
            expected = np.load({str(tmp_path)!r} + f"/{{kind}}_expected.npz")
            for name in expected.files:
                got = getattr(model, name)(X_all[kind])
                assert np.array_equal(got, expected[name]), (kind, name)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ------------------------------------------------------------- memory maps
def _file_digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _state_arrays(est):
    rows, cache, schedule = est._rows, est._cache, est._schedule
    arrays = {
        "X": rows.X,
        "Y": rows.Y,
        "ids": rows.ids,
        "weights": cache.weights,
        "gradients": cache.gradients,
        "exact": cache.exact,
        "final": cache.final,
        "batch_ptr": schedule.batch_ptr,
        "batch_ids": schedule.batch_ids,
        "learning_rates": schedule.learning_rates,
    }
    if cache.grams is not None:
        arrays["grams"] = cache.grams
    if cache.gram_points is not None:
        arrays["gram_points"] = cache.gram_points
    if cache.reference_hessian is not None:
        arrays["reference_point"] = cache.reference_point
        arrays["reference_hessian"] = cache.reference_hessian
    return arrays


@pytest.mark.parametrize("kind", ["clf", "reg", "multi"])
def test_fitted_state_is_contiguous_and_dumps_without_copies(kind, tmp_path):
    from .test_persistence import make, serve

    est, X, y = make(kind, random_state=0)
    serve(est.fit(X[:200], y[:200]), X, y)
    for name, array in _state_arrays(est).items():
        assert array.flags.c_contiguous, name
    path = tmp_path / "est.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path, mmap_mode="r")
    for name, array in _state_arrays(loaded).items():
        assert isinstance(array, np.memmap), name
        assert not array.flags.writeable, name
    assert isinstance(loaded._rows.X, np.memmap)
    again = joblib.load(path, mmap_mode="r")
    assert not np.shares_memory(again._rows.X, loaded._rows.X)  # two mappings
    assert_bitwise_same(loaded, est)


@pytest.mark.parametrize("mode", ["r", "c", "r+"])
@pytest.mark.parametrize("kind", ["clf", "reg", "multi"])
def test_memory_mapped_estimator_serves_requests(kind, mode, tmp_path):
    from .test_persistence import make, serve

    extra = {"curvature": "gram"} if kind == "reg" else {}
    est, X, y = make(kind, random_state=0, **extra)
    est.fit(X[:200], y[:200]).partial_unfit(indices=[0])
    path = tmp_path / "est.joblib"
    joblib.dump(est, path)
    digest = _file_digest(path)
    loaded = joblib.load(path, mmap_mode=mode)
    mapped = _state_arrays(loaded)
    assert all(isinstance(a, np.memmap) for a in mapped.values())
    serve(loaded, X, y)
    serve(est, X, y)
    assert_bitwise_same(loaded, est)
    for name, value in _outputs(est, X).items():
        assert_array_equal(_outputs(loaded, X)[name], value, err_msg=name)
    # Nothing was written into the mapped file, and the old mappings are intact.
    del loaded
    assert _file_digest(path) == digest
    reloaded = joblib.load(path, mmap_mode="r")
    for name, array in _state_arrays(reloaded).items():
        assert_array_equal(array, mapped[name], err_msg=name)


# ------------------------------------------------------------ storage_dir
def _storage_files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _storage_request(est, X, y, i):
    """Request ``i`` of an endless deterministic stream (removals and additions)."""
    if i % 3 == 2:
        j = 200 + (i // 3) % 40
        est.partial_fit(
            X[j : j + 1], y[j : j + 1], method="exact" if i % 9 == 8 else "deltagrad"
        )
    else:
        est.partial_unfit(indices=[est.sample_ids_[(7 * i) % 50]])


def _stream_estimator(storage_dir=None):
    X, y = make_classification(
        n_samples=240, n_features=6, n_informative=4, n_classes=3, random_state=1
    )
    est = DeltaGradLogisticRegression(random_state=0, storage_dir=storage_dir, **PARAMS)
    return est, X, y


def _replayed(n_requests):
    est, X, y = _stream_estimator()
    est.fit(X[:200], y[:200])
    for i in range(n_requests):
        _storage_request(est, X, y, i)
    return est


@pytest.mark.parametrize("kind", ["multiclass", "ridge_multi"])
def test_storage_dir_keeps_a_memory_mapped_state(kind, tmp_path):
    from sklearn_deltagrad import load_state

    folder = tmp_path / "state"
    memory, X, y = _fitted(kind)
    stored, _, _ = _fitted(kind, storage_dir=str(folder))
    assert _storage_files(folder)[0] == "CURRENT" and len(_storage_files(folder)) == 2
    for name, array in _state_arrays(stored).items():
        assert isinstance(array, np.memmap) and not array.flags.writeable, name
    assert_bitwise_same(stored, memory)
    loaded = load_state(folder)
    assert loaded.storage_dir == str(folder)
    assert_bitwise_same(loaded, memory)
    for est in (memory, stored, loaded):
        est.partial_unfit(indices=est.sample_ids_[:3])
        est.partial_fit(X[210:215], y[210:215], method="exact")
    assert_bitwise_same(stored, memory)
    assert_bitwise_same(loaded, memory)  # wrote its own new state to the folder
    assert_bitwise_same(load_state(folder, mmap_mode=None), memory)
    assert len(_storage_files(folder)) == 2  # older states were removed


def test_storage_dir_failed_save_leaves_both_states_unchanged(tmp_path, monkeypatch):
    from sklearn_deltagrad import _storage, load_state

    from .test_bad_input import NAMED_STATE, _lookup

    est, X, y = _stream_estimator(storage_dir=tmp_path)
    est.fit(X[:200], y[:200])
    files = _storage_files(tmp_path)
    snapshot = {name: np.array(_lookup(est, name), copy=True) for name in NAMED_STATE}

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(_storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        est.partial_unfit(indices=[3, 4])
    monkeypatch.undo()
    assert _storage_files(tmp_path) == files
    for name, value in snapshot.items():
        assert_array_equal(_lookup(est, name), value, err_msg=name)
    assert_bitwise_same(load_state(tmp_path), _replayed(0))
    est.partial_unfit(indices=[3, 4])  # works again


_KILLED_SERVICE = """
import sys
sys.path.insert(0, {root!r})
from tests.test_deployment import _storage_request, _stream_estimator
est, X, y = _stream_estimator(storage_dir={folder!r})
est.fit(X[:200], y[:200])
print(0, flush=True)
for i in range(100000):
    _storage_request(est, X, y, i)
    print(i + 1, flush=True)
"""


def test_storage_dir_survives_a_killed_process(tmp_path):
    import signal
    import time

    from sklearn_deltagrad import load_state

    rng = np.random.default_rng()
    folders = [tmp_path / f"run{k}" for k in range(4)]
    children = []
    for folder in folders:
        script = _KILLED_SERVICE.format(root=str(ROOT), folder=str(folder))
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
            )
        )
    try:
        for child in children:
            assert child.stdout.readline().strip() == "0"  # fitted and saved
        start = time.perf_counter()
        delays = rng.uniform(0.0, 1.0, len(children))
        for child, delay in sorted(
            zip(children, delays, strict=True), key=lambda c: c[1]
        ):
            time.sleep(max(0.0, delay - (time.perf_counter() - start)))
            os.kill(child.pid, signal.SIGKILL)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, folder in zip(children, folders, strict=True):
        child.wait()
        lines = child.stdout.read().split()
        child.stdout.close()
        done = int(lines[-1]) if lines else 0
        loaded = load_state(folder)
        n_requests = len(loaded.update_log_)
        # The last completed request, or the one the kill interrupted after its
        # state was published (but before it printed).
        print("killed after", done, "requests; state has", n_requests)
        assert n_requests in (done, done + 1), (n_requests, done)
        clean = _replayed(n_requests)
        assert_bitwise_same(loaded, clean)
        X, y = _stream_estimator()[1:]
        _storage_request(loaded, X, y, n_requests)
        _storage_request(clean, X, y, n_requests)
        assert_bitwise_same(loaded, clean)
        assert len(_storage_files(folder)) == 2


# ------------------------------------------------------------------ example
def test_forget_service_example_runs(tmp_path):
    import json

    from sklearn.datasets import load_digits

    from sklearn_deltagrad import load_state

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    command = [
        sys.executable,
        str(ROOT / "examples" / "forget_service.py"),
        "--workdir",
        str(tmp_path),
    ]
    runs = []
    for _ in range(2):  # the second run finds the state and the queue already done
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
        runs.append([json.loads(line) for line in result.stdout.splitlines()])
    first, second = runs
    assert first[0] == {"event": "start", "state": "trained", "n_samples": 1797}
    requests = [r for r in first if "request_id" in r]
    statuses = [r["status"] for r in requests]
    assert statuses == ["removed"] * (len(statuses) - 1) + ["rejected"]
    removed = [i for r in requests if r["status"] == "removed" for i in r["removed"]]
    for record in requests[:-1]:
        assert record["method"] in ("deltagrad", "exact") and record["seconds"] > 0
        assert record["drift_total"] >= 0.0
    assert requests[-2]["method"] == "exact" and requests[-2]["drift_total"] == 0.0
    assert second[0]["state"] == "loaded"
    assert second[0]["n_samples"] == 1797 - len(removed)
    assert {r["status"] for r in second[1:-2]} == {"nothing_to_remove"}
    audit = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(audit) == 2 * len(requests)

    model = load_state(tmp_path / "state")
    assert not np.isin(removed, model.sample_ids_).any()
    served = pickle.loads((tmp_path / "serving_model.pkl").read_bytes())
    assert isinstance(served, LogisticRegression)
    X = load_digits().data / 16.0
    assert_array_equal(served.predict_proba(X), model.predict_proba(X))
