"""
==================================
A forget service (deployment loop)
==================================

A small service that honours deletion ("right to be forgotten") requests:

1. load the model's state from its storage folder (a model trained with
   ``storage_dir`` the first time);
2. apply a queue of deletion requests read from a JSON-lines file, one JSON object
   per line: ``{"request_id": "r1", "ids": [3, 17], "method": "deltagrad"}``
   (``method`` is optional);
3. every request is saved as it completes: the estimator writes its new state
   aside and publishes it atomically, so a crash leaves the last completed
   request's state and a restart simply runs the queue again (ids that are no
   longer training rows are reported as ``not_present`` and skipped);
4. export the serving model, a plain scikit-learn ``LogisticRegression`` that
   loads without ``sklearn_deltagrad`` and predicts bitwise as the estimator.

Each request prints one JSON audit line: what was removed, how (DeltaGrad or exact
retrain, and why a fallback happened), how long it took and the drift estimate.

Run it as ``python examples/forget_service.py``: with no arguments it trains on
scikit-learn's bundled digits data in a temporary folder and generates a sample
queue; ``--workdir DIR`` keeps the state between runs and ``--requests FILE`` reads
your own queue. This script is not run by the documentation build.
"""

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from sklearn_deltagrad import DeltaGradLogisticRegression, load_state


def load_or_train(state_dir):
    """The estimator of ``state_dir``, trained on the digits the first time."""
    if (state_dir / "CURRENT").is_file():
        return load_state(state_dir), "loaded"
    X, y = load_digits(return_X_y=True)
    model = DeltaGradLogisticRegression(
        batch_size=128,
        max_iter=20,
        max_drift=0.05,  # fall back to the exact retrain when drift accumulates
        storage_dir=str(state_dir),
        random_state=0,
    )
    return model.fit(X / 16.0, y), "trained"


def make_sample_queue(path, n_requests=6, seed=0):
    """Write a JSON-lines queue of deletion requests (a few rows each)."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(1797)
    with open(path, "w", encoding="utf-8") as f:
        start = 0
        for k in range(n_requests):
            size = int(rng.integers(1, 8))
            request = {"request_id": f"r{k + 1}", "ids": ids[start : start + size]}
            request["ids"] = [int(i) for i in request["ids"]]
            if k == n_requests - 1:
                request["method"] = "exact"  # e.g. a legal hold: certified retrain
            f.write(json.dumps(request) + "\n")
            start += size
        # A malformed request is rejected (and audited), not applied.
        f.write(json.dumps({"request_id": "bad", "ids": ["row 7"]}) + "\n")
    return path


def serve(model, request):
    """Apply one deletion request; return its audit record."""
    record = {"request_id": request.get("request_id"), "ids": request.get("ids")}
    start = time.perf_counter()
    try:
        ids = np.asarray(request["ids"], dtype=np.int64).reshape(-1)
        method = request.get("method", "deltagrad")
        # Ids that are not training rows (removed by an earlier run of this queue,
        # or never there) need nothing: the service is idempotent.
        live = np.isin(ids, model.sample_ids_)
        record["not_present"] = ids[~live].tolist()
        if not live.any():
            return {**record, "status": "nothing_to_remove"}
        model.partial_unfit(indices=ids[live], method=method)
    except (KeyError, ValueError, TypeError) as error:
        return {**record, "status": "rejected", "error": str(error)}
    report = model.last_update_
    return {
        **record,
        "status": "removed",
        "removed": ids[live].tolist(),
        "requested_method": method,
        "method": report.method,
        "fallback": report.fallback,
        "seconds": round(time.perf_counter() - start, 6),
        "replay_seconds": round(report.seconds, 6),
        "drift": report.drift,
        "drift_total": report.drift_total,
        "n_samples": report.n_samples,
        "n_requests_served": len(model.update_log_),
    }


def export(model, path):
    """Write the serving model (plain scikit-learn) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(model.to_sklearn(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--requests", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="forget_service_"))
    workdir.mkdir(parents=True, exist_ok=True)
    queue = args.requests or make_sample_queue(workdir / "requests.jsonl")

    model, origin = load_or_train(workdir / "state")
    print(
        json.dumps(
            {"event": "start", "state": origin, "n_samples": int(model.n_samples_seen_)}
        )
    )
    with open(queue, encoding="utf-8") as requests:
        with open(workdir / "audit.jsonl", "a", encoding="utf-8") as audit:
            for line in requests:
                if not line.strip():
                    continue
                record = serve(model, json.loads(line))
                audit.write(json.dumps(record) + "\n")
                audit.flush()
                print(json.dumps(record))
    path = export(model, workdir / "serving_model.pkl")
    print(json.dumps({"event": "exported", "path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
