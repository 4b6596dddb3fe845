"""The offline metrics against values worked out by hand."""

import pytest

from adapterctl import metrics
from adapterctl.errors import AdapterConfigError


def test_accuracy_f1_matthews_binary():
    preds, refs = [1, 0, 1, 1], [1, 0, 0, 1]
    out = metrics.compute(["accuracy", "f1", "matthews"], preds, refs)
    assert out["accuracy"] == 0.75
    assert out["f1"] == pytest.approx(0.8)  # precision 2/3, recall 1
    assert out["matthews_correlation"] == pytest.approx(1 / 3 ** 0.5)


def test_f1_is_macro_for_more_than_two_labels():
    out = metrics.compute(["f1"], [0, 1, 2, 2], [0, 1, 2, 1], num_labels=3)
    assert out["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_correlations():
    out = metrics.compute(["pearson", "spearman"], [1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 6.0, 7.0])
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.9 < out["pearson"] < 1.0


def test_seqeval_counts_entities_not_tokens():
    refs = [["B-PER", "I-PER", "O", "B-LOC"]]
    preds = [["B-PER", "O", "O", "B-LOC"]]  # PER cut short: 1 of 2 entities right
    out = metrics.compute(["seqeval"], preds, refs)
    assert out["precision"] == 0.5 and out["recall"] == 0.5 and out["f1"] == 0.5
    assert out["accuracy"] == 0.75


def test_squad_normalizes_and_takes_the_best_reference():
    out = metrics.compute(["squad"], ["The Eiffel tower!", "in Paris"], [["eiffel tower"], ["Lyon", "Paris"]])
    assert out["exact_match"] == 50.0
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_unknown_metric_names_the_choices():
    with pytest.raises(AdapterConfigError, match="unknown metric.*accuracy"):
        metrics.compute(["acc"], [1], [1])
