"""Recomputes agra's evaluation from the exported arrays with numpy and scipy, for the test
suite: for every method, the AGRA attribution's unsigned and signed Pearson correlation and
reconstruction MSE against the ground truth, averaged over signals as agra does.

    check_evaluation.py RUN_DIR   ->   {"agra-grad": {"pearson_unsigned": ...}, ...} on stdout
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from scipy.stats import pearsonr


def pearson(truth, attr):
    """None where the truth is constant (nothing to find); 0 for a constant attribution."""
    if np.all(truth == truth[0]):
        return None
    if np.all(attr == attr[0]):
        return 0.0
    return float(pearsonr(truth.astype(np.float64), attr.astype(np.float64))[0])


def mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def main():
    run = Path(sys.argv[1])
    split = load_file(run / "data" / "test.safetensors")
    x, ideal, truth = split["perturbed"], split["ideal"], split["attribution"]
    out = {}
    for manifest_path in sorted((run / "explain").glob("*/manifest.json")):
        method = json.loads(manifest_path.read_text())["method"]
        agra = np.load(manifest_path.parent / "ensemble.npy")
        unsigned, signed, mse = [], [], []
        for i in range(len(x)):
            unsigned.append(pearson(np.linalg.norm(truth[i], axis=0), np.linalg.norm(agra[i], axis=0)))
            signed.append(mean([pearson(truth[i, d], agra[i, d]) for d in range(x.shape[1])]))
            mse.append(float(np.mean((ideal[i].astype(np.float64) - (x[i] - agra[i])) ** 2)))
        row = {"pearson_unsigned": mean(unsigned)}
        if method in ("grad", "smoothgrad"):
            row.update(pearson_signed=mean(signed), mse=mean(mse))
        out[f"agra-{method}"] = row
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
