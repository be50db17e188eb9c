"""Result figures (matplotlib/seaborn, written atomically as PNG).

  plot_confusion_matrix(cm, class_names, title, path)   raw counts, rows = true class, columns = predicted
  plot_enrollment(curves, title, path)                  top-1 against enrollment clips per sign (evaluate_enrollment)
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from util import atomic_save  # noqa: E402

ANNOTATE_MAX_CLASSES = 30  # beyond this the cell counts are unreadable: colour only


def plot_confusion_matrix(cm: np.ndarray, class_names: list[str], title: str, path, dpi: int = 150):
    """Heatmap of a (C, C) count matrix with per-row accuracy in the y tick labels; returns the path."""
    cm = np.asarray(cm)
    c = len(class_names)
    totals = cm.sum(axis=1)
    rows = [f"{name}  {cm[i, i] / totals[i]:.0%}" if totals[i] else f"{name}  -" for i, name in enumerate(class_names)]
    side = max(6.0, 0.55 * c + 3)  # inches: about half an inch per class, at least 6
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    sns.heatmap(cm, annot=c <= ANNOTATE_MAX_CLASSES, fmt="d", cmap="Blues", square=True, linewidths=0.5,
                linecolor="white", cbar_kws={"label": "Clips"}, xticklabels=class_names, yticklabels=rows, ax=ax)
    ax.set_xlabel("Predicted sign", fontsize=12, fontweight="bold")
    ax.set_ylabel("True sign  (recall)", fontsize=12, fontweight="bold")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}\n{cm.sum()} clips, accuracy {accuracy:.1%}", fontsize=13, fontweight="bold", pad=14)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    plt.setp(ax.get_yticklabels(), rotation=0)
    fig.tight_layout()
    try:
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_enrollment(curves: dict, title: str, path, dpi: int = 150):
    """Top-1 (%) against enrollment clips per sign k, one colour per model: {mode: {'k': [...], 'mean': [...],
    'lowest': [...]}}; the mean over signers solid, the lowest signer dashed. Returns the path."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (mode, curve) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(curve["k"], curve["mean"], "o-", color=color, label=f"{mode}: mean over signers")
        ax.plot(curve["k"], curve["lowest"], "s--", color=color, label=f"{mode}: lowest signer")
    ks = sorted({k for curve in curves.values() for k in curve["k"]})
    ax.set_xticks(ks, [("0\n(classifier)" if k == 0 else str(k)) for k in ks])
    ax.set_xlabel("enrollment clips per sign (k)", fontsize=11)
    ax.set_ylabel("top-1 on the other clips (%)", fontsize=11)
    ax.set_title(title, fontsize=12, fontweight="bold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
