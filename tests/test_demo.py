"""The demo (``python -m sklearn_deltagrad``): the README's first command."""

import pytest

from sklearn_deltagrad.__main__ import main


@pytest.mark.parametrize(
    "share, n_removed, label", [(0.01, 14, "1.0%"), (0.05, 72, "5.0%")]
)
def test_demo_reports_a_faithful_removal(share, n_removed, label, capsys):
    report = main(["--share", str(share), "--repeats", "1"])
    printed = capsys.readouterr().out
    assert f"removing {n_removed} ({label})" in printed
    assert report["n_train"] == 1437 and report["n_removed"] == n_removed
    # Digits, 100 full-batch iterations: 0.0263 measured at 1%.
    assert 0.0 < report["fidelity_ratio"] < 0.1
    assert f"{report['fidelity_ratio']:.4f}" in printed
    assert report["exact_accuracy"] > 0.9 and report["deltagrad_accuracy"] > 0.9
    assert report["agreement"] >= 0.95
    assert report["exact_seconds"] > 0.0 and report["deltagrad_seconds"] > 0.0


@pytest.mark.parametrize("repeats", ["many", "0"])
def test_demo_rejects_a_bad_repeat_count(repeats, capsys):
    with pytest.raises(SystemExit):
        main(["--repeats", repeats])
    assert "--repeats" in capsys.readouterr().err
