"""Loaders for the real data sets of ``shared/data`` (see its README).

The folder is found from the ``SKLEARN_DELTAGRAD_DATA`` environment variable (or an
explicit argument); nothing is downloaded. Every loader returns an 80/20 train/test
split drawn with a fixed seed, features as float64.
"""

import gzip
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_svmlight_file
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

DATA_ENV = "SKLEARN_DELTAGRAD_DATA"


def data_dir(path=None):
    """The data folder, or ``None`` when it cannot be found."""
    path = path or os.environ.get(DATA_ENV)
    if path and Path(path).is_dir():
        return Path(path)
    return None


def _split(X, y, seed=0):
    return train_test_split(X, y, test_size=0.2, random_state=seed)


def load_covtype(root, binary=False):
    """Covertype subset: 92,962 x 54, classes 1..7 (or class 2 vs rest)."""
    import pandas as pd

    frame = pd.read_csv(root / "covtype" / "covtype_norm_ramp_test_92962.csv.gz")
    y = frame.pop("Cover_Type").to_numpy()
    X = frame.to_numpy(dtype=np.float64)
    if binary:
        y = (y == 2).astype(np.int64)
    return _split(X, y)


def load_mnist(root):
    """MNIST t10k: 10,000 x 784 pixels scaled to [0, 1], 10 classes."""
    folder = root / "mnist_t10k"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784) / 255.0
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return _split(X, y)


def load_a9a(root, sparse=False):
    """a9a (UCI Adult, 123 binary features): the given train/test split."""
    folder = root / "libsvm"
    X_train, y_train = load_svmlight_file(
        str(folder / "a9a_train.svm.bz2"), n_features=123
    )
    X_test, y_test = load_svmlight_file(
        str(folder / "a9a_test.svm.bz2"), n_features=123
    )
    if not sparse:
        X_train, X_test = X_train.toarray(), X_test.toarray()
    return X_train, X_test, (y_train > 0).astype(int), (y_test > 0).astype(int)


def load_reuters(root):
    """Reuters-21578 binary task, sparse TF-IDF (7,770 x 8,315 train), CSR."""
    folder = root / "libsvm"
    X_train, y_train = load_svmlight_file(
        str(folder / "reuters21578_train.svm.bz2"), n_features=8315
    )
    X_test, y_test = load_svmlight_file(
        str(folder / "reuters21578_test.svm.bz2"), n_features=8315
    )
    return X_train, X_test, (y_train > 0).astype(int), (y_test > 0).astype(int)


def load_pmlb(root, name, standardize=True):
    """A PMLB data set; for regression, features (and target) standardised."""
    import pandas as pd

    frame = pd.read_csv(root / "pmlb" / name / f"{name}.tsv.gz", sep="\t")
    y = frame.pop("target").to_numpy()
    X = frame.to_numpy(dtype=np.float64)
    X_train, X_test, y_train, y_test = _split(X, y)
    if standardize:
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        mean, scale = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / scale, (y_test - mean) / scale
    return X_train, X_test, y_train, y_test


LOADERS = {
    "covtype": load_covtype,
    "covtype_binary": lambda root: load_covtype(root, binary=True),
    "mnist": load_mnist,
    "a9a": load_a9a,
    "reuters": load_reuters,
    "houses": lambda root: load_pmlb(root, "537_houses"),
    "pol": lambda root: load_pmlb(root, "201_pol"),
}


def load(name, root=None):
    """``X_train, X_test, y_train, y_test`` of a named data set."""
    folder = data_dir(root)
    if folder is None:
        raise FileNotFoundError(
            f"Data folder not found: set {DATA_ENV} to the shared/data folder."
        )
    return LOADERS[name](folder)
