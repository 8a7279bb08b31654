"""On-disk state of an estimator with ``storage_dir``: crash-safe, memory-mapped.

A storage folder holds one or more ``state-*.joblib`` files (the whole estimator,
dumped by joblib, so its arrays can be memory-mapped back) and a small manifest,
``CURRENT``, that names the current one. A new state is written aside under a
fresh name and flushed to disk; then a new manifest is written to a temporary
name, flushed, and moved over ``CURRENT`` with :func:`os.replace` (atomic), and the
folder is flushed. A process killed at any moment therefore leaves ``CURRENT``
naming either the previous state or the new one, each complete. Files that no
manifest names (an interrupted write, an older state) are removed by the next
successful save.
"""

import contextlib
import json
import os
import uuid
from pathlib import Path

import joblib

MANIFEST = "CURRENT"
_STATE_PREFIX = "state-"
_STATE_SUFFIX = ".joblib"
_TEMP_MARK = ".tmp-"


def _fsync_path(path, directory=False):
    """Flush a file (or a folder's entries) to disk; folders are skipped where the
    platform cannot open them (Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if directory else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state(estimator, folder):
    """Write ``estimator`` to ``folder`` as its new current state, atomically.

    Returns the path of the new state file. On any error (or interrupt) before the
    manifest is replaced, the folder still names the previous state, and the
    partial files are removed (best effort). The replacement is the last step, so
    once it happened nothing here can fail; call :func:`flush_folder` afterwards
    to make it durable across a power loss.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    name = f"{_STATE_PREFIX}{token}{_STATE_SUFFIX}"
    path = folder / name
    manifest_tmp = folder / f"{MANIFEST}{_TEMP_MARK}{token}"
    try:
        joblib.dump(estimator, path)
        _fsync_path(path)
        manifest = {
            "state": name,
            "estimator": type(estimator).__name__,
            "version": _package_version(),
        }
        with open(manifest_tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(manifest_tmp, folder / MANIFEST)
    except BaseException:
        for leftover in (manifest_tmp, path):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    return path


def flush_folder(folder):
    """Make the manifest's replacement durable (after :func:`save_state`)."""
    _fsync_path(Path(folder), directory=True)


def current_state_path(folder):
    """The state file that ``folder``'s manifest names."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no sklearn_deltagrad state (no {MANIFEST} file)."
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    name = manifest.get("state", "")
    if Path(name).name != name or not name.startswith(_STATE_PREFIX):
        raise ValueError(f"{str(manifest_path)!r} names no valid state: {name!r}.")
    return folder / name


def remove_stale_files(folder, keep):
    """Remove the state and manifest files of ``folder`` other than ``keep``.

    Errors are ignored (e.g. a file another process still has open on Windows).
    """
    folder = Path(folder)
    keep = Path(keep).name
    for entry in folder.iterdir():
        name = entry.name
        ours = (
            name.startswith(_STATE_PREFIX) and name.endswith(_STATE_SUFFIX)
        ) or name.startswith(MANIFEST + _TEMP_MARK)
        if ours and name != keep:
            with contextlib.suppress(OSError):
                entry.unlink()


def load_state(storage_dir, *, mmap_mode="r"):
    """Load the current state of an estimator fitted with ``storage_dir``.

    The state is the one the folder's manifest names: the last request that
    completed, even if the process that served it was killed during a later one.
    Its arrays (training rows, cache, schedule) are memory-mapped from the file,
    not read into memory; requests copy what they change and write the new state
    to the folder, never into the mapped file. Like any pickle, load only folders
    you trust.

    Parameters
    ----------
    storage_dir : str or path-like
        The folder given as ``storage_dir`` to the estimator.
    mmap_mode : {"r", "c", None}, default="r"
        How joblib maps the arrays; ``None`` reads them into memory.

    Returns
    -------
    estimator : DeltaGradLogisticRegression or DeltaGradRidge
        The estimator, with ``storage_dir`` set to ``storage_dir``.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn_deltagrad import DeltaGradRidge, load_state
    >>> X, y = load_diabetes(return_X_y=True)
    >>> folder = tempfile.mkdtemp()
    >>> reg = DeltaGradRidge(storage_dir=folder, random_state=0).fit(X, y)
    >>> reg = reg.partial_unfit(indices=[0, 1])
    >>> loaded = load_state(folder)
    >>> int(loaded.n_samples_seen_)
    440
    >>> bool((loaded.predict(X) == reg.predict(X)).all())
    True
    """
    if mmap_mode not in ("r", "c", None):
        raise ValueError(f"mmap_mode must be 'r', 'c' or None, got {mmap_mode!r}.")
    from ._base import _BaseDeltaGrad

    path = current_state_path(storage_dir)
    estimator = joblib.load(path, mmap_mode=mmap_mode)
    if not isinstance(estimator, _BaseDeltaGrad):
        raise TypeError(f"{str(path)!r} holds a {type(estimator).__name__}.")
    estimator.storage_dir = os.fspath(storage_dir)
    return estimator


def _package_version():
    from . import __version__

    return __version__
