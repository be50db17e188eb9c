"""Metrics: THE one home of every number the evaluation scripts report.

Classification (numpy, from logits or predicted ids; labels are int class ids):
  topk_correct / topk_accuracy   label among the k largest logits (top-1 = argmax)
  confusion_matrix               counts, rows = true class, columns = predicted class
  per_class_accuracy             diagonal / row sums (NaN for a class with no test clip)
  agreement                      fraction of clips on which two models predict the same class
  mean_cross_entropy             mean -log softmax(logits)[label]
Summaries:
  mean_std                       mean and SAMPLE standard deviation (ddof = STD_DDOF = 1; NaN when n < 2)
  latency_summary                median / p90 / mean of per-clip times, in milliseconds
  aggregate                      mean ± std tables over seeds and signers (how every multi-run table is summarized)
  FLOPS_METHOD                   how model_functional.count_flops counts (this module imports no TF)
"""
from __future__ import annotations

import numpy as np

from preprocessing import MAX_FRAMES

STD_DDOF = 1  # sample standard deviation: seeds and signers are samples of a population, not the population
FLOPS_METHOD = (f"TF profiler float_operation count (tf.compat.v1.profiler, as the reference) of the frozen "
                f"inference graph of a freshly built model at input [1, {MAX_FRAMES}, K, 2]: a matmul of "
                "(m x k)(k x n) counts 2*m*k*n, element-wise ops with registered statistics count one per output "
                "element, GELU's erf is not counted. Identical for FP32, PTQ and QAT (same architecture).")


# ----------------------------------------------------------------------------------------------- classification
def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """(N,) bool: is labels[i] among the k largest logits[i]? logits (N, C); k is capped at C."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]      # (N, k)
    return (top == labels[:, None]).any(axis=1)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    return float(topk_correct(logits, labels, k).mean())


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; cm[t, p] = clips of true class t predicted as p. Sums to the number of clips."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(C,) float: correct / clips of each true class, from a confusion matrix; NaN where a class has no clip."""
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)


def agreement(predictions_a, predictions_b) -> float:
    """Fraction of clips on which two models predict the same class (same clips, same order)."""
    a, b = np.asarray(predictions_a), np.asarray(predictions_b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare predictions of {a.shape} and {b.shape} clips")
    return float((a == b).mean())


def mean_cross_entropy(logits: np.ndarray, labels) -> float:
    """Mean over clips of -log softmax(logits)[label], computed stably (log-sum-exp)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(logits)), np.asarray(labels)].mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of (N, C) logits."""
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------- summaries
def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=STD_DDOF, n) of the finite values; std is NaN when n < 2, both NaN when n = 0."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    std = float(np.std(v, ddof=STD_DDOF)) if len(v) > STD_DDOF else float("nan")
    return float(v.mean()), std, len(v)


def latency_summary(seconds) -> dict:
    """Per-clip times (seconds) -> {'median_ms', 'p90_ms', 'mean_ms', 'clips'}."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "clips": int(len(ms))}


ALL_HOLDOUTS = "ALL"


def aggregate(records: list[dict], keys: tuple, values: tuple) -> list[dict]:
    """Mean ± std rows from per-run records {'seed', 'holdout', *keys, *values} (a value may be None).

    Per (holdout, *keys): over seeds. Per (ALL, *keys): each seed's mean over its holdouts, then mean ± std over
    seeds; with a single seed, mean ± std over holdouts. Row: {'holdout', *keys, 'n', 'std_over', v, v_std ...}."""
    groups: dict = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    rows = []
    for key, members in groups.items():
        holdouts = sorted({r["holdout"] for r in members})
        seeds = sorted({r["seed"] for r in members}, key=str)
        for holdout in holdouts:
            rows.append(_summary_row(holdout, keys, key, values, "seeds",
                                     [[r.get(v) for r in members if r["holdout"] == holdout] for v in values]))
        if len(seeds) > 1:
            per_seed = [[_mean([r.get(v) for r in members if r["seed"] == s]) for s in seeds] for v in values]
            over = "seeds (each the mean over its holdouts)"
        else:
            per_seed = [[r.get(v) for r in members] for v in values]
            over = "holdouts"
        rows.append(_summary_row(ALL_HOLDOUTS, keys, key, values, over, per_seed))
    return rows


def _mean(values) -> float | None:
    mean, _, n = mean_std(values)
    return mean if n else None


def _summary_row(holdout: str, keys: tuple, key: tuple, values: tuple, over: str, samples: list[list]) -> dict:
    row = {"holdout": holdout, **dict(zip(keys, key)), "n": 0, "std_over": over}
    for v, xs in zip(values, samples):
        mean, std, n = mean_std(xs)
        row[v], row[f"{v}_std"], row["n"] = mean, std, max(row["n"], n)
    return row
