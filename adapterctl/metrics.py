"""Offline metrics behind one small interface: ``compute(names, predictions, references)``.

``evaluate.load`` fetches metric scripts from the Hub and fails offline, so we call the
libraries those scripts wrap (scikit-learn, scipy, seqeval) and SQuAD's own EM/F1 formula.
"""

from __future__ import annotations

import collections
import math
import re
import string

from .errors import AdapterConfigError


def _accuracy(preds, refs, **_):
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(refs, preds))}


def _f1(preds, refs, num_labels=2, **_):
    """Binary F1 of the positive class (label 1) for two labels, macro F1 otherwise (GLUE's use)."""
    from sklearn.metrics import f1_score

    average = "binary" if num_labels == 2 else "macro"
    return {"f1": float(f1_score(refs, preds, average=average, zero_division=0))}


def _matthews(preds, refs, **_):
    from sklearn.metrics import matthews_corrcoef

    return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}


def _pearson(preds, refs, **_):
    from scipy.stats import pearsonr

    return {"pearson": float(pearsonr(preds, refs)[0])}


def _spearman(preds, refs, **_):
    from scipy.stats import spearmanr

    return {"spearman": float(spearmanr(preds, refs)[0])}


def _seqeval(preds, refs, **_):
    """Entity-level scores on IOB2 tag sequences (lists of tag names per sentence)."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(refs, preds, zero_division=0)),
        "recall": float(recall_score(refs, preds, zero_division=0)),
        "f1": float(f1_score(refs, preds, zero_division=0)),
        "accuracy": float(accuracy_score(refs, preds)),
    }


def _normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, truth: str) -> float:
    pred, gold = _normalize_answer(prediction).split(), _normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _squad(preds, refs, **_):
    """Exact match and token F1 in percent, each the max over the reference answers."""
    em = [max(float(_normalize_answer(p) == _normalize_answer(t)) for t in truths) for p, truths in zip(preds, refs)]
    f1 = [max(_token_f1(p, t) for t in truths) for p, truths in zip(preds, refs)]
    n = max(len(preds), 1)
    return {"exact_match": 100.0 * sum(em) / n, "f1": 100.0 * sum(f1) / n}


METRICS = {
    "accuracy": _accuracy, "f1": _f1, "matthews": _matthews, "pearson": _pearson, "spearman": _spearman,
    "seqeval": _seqeval, "squad": _squad,
}


# Metrics of generated text (causal_lm tasks), computed by run/lm.py from the generations and the
# completions' token losses rather than from label predictions.
GENERATION_METRICS = ("exact_match", "perplexity")


def check(names) -> None:
    unknown = [n for n in names if n not in METRICS and n not in GENERATION_METRICS]
    if unknown:
        raise AdapterConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                                 f"{', '.join([*METRICS, *GENERATION_METRICS])}")


def compute(names, predictions, references, num_labels: int = 2) -> dict[str, float]:
    """All the named metrics on one set of predictions, merged into one dict."""
    check(names)
    out: dict[str, float] = {}
    for name in names:
        if name not in GENERATION_METRICS:
            out.update(METRICS[name](list(predictions), list(references), num_labels=num_labels))
    return out


def exact_match(generated, references) -> dict[str, float]:
    """The fraction of generated texts equal to their reference, outer whitespace ignored."""
    same = [g.strip() == r.strip() for g, r in zip(generated, references)]
    return {"exact_match": sum(same) / max(len(same), 1)}


def perplexity(total_nll: float, tokens: int) -> dict[str, float]:
    """exp of the mean negative log-likelihood per scored token (lower is better)."""
    return {"perplexity": math.exp(total_nll / max(tokens, 1))}
