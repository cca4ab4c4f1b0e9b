#!/usr/bin/env python3
"""Reference values for src/metrics/stats.rs, computed with numpy/scipy.

Usage: check_metrics.py DIR

DIR holds cases written by the Rust cross-check test, one per name:
  NAME_a.npy     float32, attribution / score vector
  NAME_b.npy     float32, second vector (for the correlations)
  NAME_mask.npy  bool, ground-truth mask (labels for AUROC/AUPRC)

Prints one JSON object {NAME: {metric: value-or-null}} on stdout, where null
means the metric is undefined (the Rust side returns None there).
Exit status 2 when numpy/scipy are missing, so callers can tell "skip" from "fail".
"""
import json
import math
import sys
import warnings
from pathlib import Path

try:
    import numpy as np
    from scipy import stats
except ImportError as e:  # the Rust test decides whether this is a skip
    print(f"check_metrics.py: {e}", file=sys.stderr)
    sys.exit(2)


def finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def pearson(a, b):
    if np.all(a == a[0]) or np.all(b == b[0]):
        return None  # scipy returns nan (ConstantInputWarning)
    return finite_or_none(stats.pearsonr(a, b).statistic)


def spearman(a, b):
    if np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return finite_or_none(stats.spearmanr(a, b).statistic)


def auroc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    # U of the positive sample = R_pos - n_pos(n_pos+1)/2 with average ranks,
    # i.e. P(pos > neg) + 1/2 P(pos == neg) after dividing by n_pos*n_neg.
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    return float(u) / (len(pos) * len(neg))


def average_precision(scores, labels):
    """sklearn.metrics.average_precision_score, reimplemented in numpy.

    Mirrors sklearn's _binary_clf_curve: sort by score descending, one
    threshold per distinct score, AP = sum_n (R_n - R_{n-1}) P_n.
    """
    y = labels.astype(np.float64)
    if y.sum() == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y[order]
    distinct = np.where(np.diff(s))[0]
    thr_idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[thr_idx]
    fps = 1 + thr_idx - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def relevance_mass(attr, mask):
    a = np.abs(attr)
    total = a.sum()
    if mask.sum() == 0:
        return None
    if total == 0:
        return float(mask.mean())
    return float(a[mask].sum() / total)


def topk_intersection(attr, mask):
    k = int(mask.sum())
    if k == 0:
        return None
    # the ties at the k-th magnitude share the remaining places in expectation
    a = np.abs(attr)
    kth = np.sort(a)[::-1][k - 1]
    above, tied = a > kth, a == kth
    hits = mask[above].sum() + (k - above.sum()) * mask[tied].sum() / tied.sum()
    return float(hits) / k


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(1)
    d = Path(sys.argv[1])
    out = {}
    for pa in sorted(d.glob("*_a.npy")):
        name = pa.name[: -len("_a.npy")]
        # float64 copies: the Rust side widens f32 -> f64 before any arithmetic
        a = np.load(pa).astype(np.float64)
        b = np.load(d / f"{name}_b.npy").astype(np.float64)
        mask = np.load(d / f"{name}_mask.npy").astype(bool)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name] = {
                "pearson": pearson(a, b),
                "spearman": spearman(a, b),
                "auroc": auroc(a, mask),
                "auprc": average_precision(a, mask),
                "relevance_mass": relevance_mass(a, mask),
                "topk_intersection": topk_intersection(a, mask),
            }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
