"""GLUE task specs: prompts, label words and metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from search.errors import DataError
from search.tasks import INVALID_LABEL, get_task
from search.tasks.glue import TASKS


def test_paper_metrics_and_label_words():
    assert {n: s.metric for n, s in TASKS.items()} == {
        "cola": "mcc",
        "sst2": "accuracy",
        "mrpc": "f1_acc",
        "rte": "accuracy",
    }
    assert dict(get_task("rte").label_words) == {0: "entailment", 1: "not_entailment"}
    assert dict(get_task("mrpc").label_words) == {0: "not_equivalent", 1: "equivalent"}
    assert dict(get_task("cola").label_words) == {0: "unacceptable", 1: "acceptable"}
    assert dict(get_task("sst2").label_words) == {0: "negative", 1: "positive"}


def test_prompts_follow_t5():
    row = {"sentence1": "a b", "sentence2": "c d", "sentence": "e f", "label": 0, "idx": 3}
    assert get_task("mrpc").format_input(row) == "mrpc sentence1: a b sentence2: c d"
    assert get_task("rte").format_input(row) == "rte sentence1: a b sentence2: c d"
    assert get_task("cola").format_input(row) == "cola sentence: e f"
    assert get_task("sst2").format_input(row) == "sst2 sentence: e f"


def test_parse_prediction_exact_words_only():
    spec = get_task("mrpc")
    assert spec.parse_prediction(" equivalent ") == 1
    assert spec.parse_prediction("not_equivalent") == 0
    assert spec.parse_prediction("equivalent equivalent") == INVALID_LABEL
    assert spec.parse_prediction("Equivalent") == INVALID_LABEL


def test_accuracy_by_hand():
    m = get_task("sst2").compute_metrics([1, 0, 1, 1], [1, 1, 1, 0])
    assert m == {"accuracy": 50.0, "score": 50.0}


def test_mrpc_f1_and_accuracy_by_hand():
    # gold 1 1 1 0 0, pred 1 0 1 1 0: TP=2 FN=1 FP=1 TN=1 -> F1 = 2*2/(2*2+1+1) = 2/3, acc = 3/5
    m = get_task("mrpc").compute_metrics([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert m["f1"] == pytest.approx(200 / 3)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["score"] == pytest.approx((200 / 3 + 60.0) / 2)


def test_mcc_by_hand():
    # gold 1 1 0 0 1, pred 1 0 0 1 1: TP=2 TN=1 FP=1 FN=1
    # MCC = (2*1 - 1*1) / sqrt((2+1)(2+1)(1+1)(1+1)) = 1/6
    m = get_task("cola").compute_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert m["mcc"] == pytest.approx(100 / 6)
    assert m["score"] == m["mcc"]
    assert m["accuracy"] == pytest.approx(60.0)


def test_mcc_is_zero_when_one_class_never_predicted():
    m = get_task("cola").compute_metrics([1, 0, 1, 0, 1], [1, 1, 1, 1, 1])
    assert m["mcc"] == 0.0 and not math.isnan(m["score"])
    assert m["accuracy"] == pytest.approx(60.0)


def test_perfect_and_inverted_mcc():
    spec = get_task("cola")
    assert spec.compute_metrics([0, 1, 0, 1], [0, 1, 0, 1])["score"] == pytest.approx(100.0)
    assert spec.compute_metrics([0, 1, 0, 1], [1, 0, 1, 0])["score"] == pytest.approx(-100.0)


def test_invalid_prediction_counts_as_wrong():
    # The invalid output on a gold-1 example is a false negative, on a gold-0 example a false positive.
    m = get_task("mrpc").compute_metrics([1, 0, 1, 0], [INVALID_LABEL, INVALID_LABEL, 1, 0])
    assert m["accuracy"] == 50.0
    # TP=1 FN=1 FP=1 -> F1 = 2/(2+1+1)
    assert m["f1"] == pytest.approx(50.0)
    all_invalid = get_task("rte").compute_metrics([0, 1], [INVALID_LABEL, INVALID_LABEL])
    assert all_invalid["score"] == 0.0
    # Any id that is not a label id is invalid too.
    assert get_task("cola").compute_metrics([0, 1, 1], [0, 7, 1])["accuracy"] == pytest.approx(200 / 3)


def test_invalid_predictions_in_mcc_are_a_class_of_their_own():
    cola = get_task("cola")
    # All invalid carries no information: 0, not the -100 a wrong-label substitution would give.
    assert cola.compute_metrics([0, 1, 0, 1], [INVALID_LABEL] * 4)["mcc"] == 0.0
    # gold 0 1 0 1, pred 0 1 -1 -1. Multiclass MCC over classes (-1, 0, 1): true counts t = (0, 2, 2),
    # predicted counts p = (2, 1, 1), correct c = 2, n = 4:
    # (c*n - t.p) / sqrt((n^2 - p.p)(n^2 - t.t)) = (8 - 4) / sqrt((16 - 6)(16 - 8)) = 4 / sqrt(80)
    m = cola.compute_metrics([0, 1, 0, 1], [0, 1, INVALID_LABEL, INVALID_LABEL])
    assert m["mcc"] == pytest.approx(100 * 4 / math.sqrt(80))
    assert m["accuracy"] == 50.0


@pytest.mark.parametrize(
    ("labels", "preds", "needle"),
    [
        ([], [], "0 predictions against 0"),
        ([0, 1], [0], "1 predictions against 2"),
        ([0, -1], [0, 0], "gold label -1"),
    ],
)
def test_bad_inputs_raise_one_line_data_error(labels, preds, needle):
    with pytest.raises(DataError, match=needle) as exc:
        get_task("sst2").compute_metrics(labels, preds)
    assert "\n" not in str(exc.value)


def test_unknown_task_lists_known_ones():
    with pytest.raises(DataError, match="known: cola, sst2, mrpc, rte"):
        get_task("wnli")
