"""Recomputes agra's per-member attributions independently with PyTorch (and Captum where it is
installed) from the member checkpoints, for the test suite: saliency, gxi, ig and grad, each
compared with the run's explain/<method>/members.npy.

    check_explain.py RUN_DIR [--members K] [--device cuda]
        ->   {"saliency": {"max_abs_diff": ..., ...}, ...} on stdout

--members K checks the first K members only; --device runs the reference there (the GPU check
uses both on the paper preset's 50 members x 250 signals).

Computed in float64: the reference is the exact mathematics rather than a second float32
rounding, so what remains is agra's own float32 (and Winograd) error. Per method: max_abs_diff,
max_rel_diff (over agra's largest |value|), pairs (member, signal), pairs_apart (pairs that
differ by more than APART of that largest value: a max-pool tie broken the other way, or a
descent gone elsewhere, see main) and max_rel_diff_together (over the other pairs); for grad and
gxi also iterations_differ / converged_differ (pairs with another step count / converged flag
than grad's iterations.npy / converged.npy). smoothgrad draws its noise from agra's own RNG and
is not checked. Exit 2 when numpy, torch or safetensors is missing, or the run kept no member arrays.
"""
import argparse
import hashlib
import json
import sys
import time
import tomllib
from pathlib import Path

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open
    from safetensors.torch import load_file
except ImportError as e:
    print(f"check_explain.py needs numpy, torch and safetensors: {e}", file=sys.stderr)
    sys.exit(2)
try:
    from captum.attr import IntegratedGradients, Saliency
except ImportError:
    IntegratedGradients = Saliency = None  # plain torch.autograd below instead

DIVERGED = 100.0  # src/explain/descent.rs: a pair whose loss grew 100-fold over its start stops
# A pair that differs by more than this share of agra's largest value went apart (see main);
# pairs that stay together agree to float32 rounding, within 2e-6 of it on quick runs.
APART = 1e-5


def load_member(path, device):
    """The weights of the newest checkpoint whose content hash verifies, in float64: the one
    agra explains with (it passes over a damaged file, docs/FORMATS.md)."""
    for file in sorted(path.glob("epoch-*.safetensors"), reverse=True):
        with safe_open(file, "np") as f:
            header = f.metadata()["header"]
            expected = f.metadata()["content_sha256"]
            # SHA-256 of the header, then weights and both Adam moments in parameter order (the
            # file's sorted names are the network's order: conv1-conv4, fc1, fc2).
            names = [k for k in f.keys() if k.startswith("w.")]
            parts = [f.get_tensor(f"{group}.{n[2:]}").astype("<f4").tobytes() for group in ("w", "adam_m", "adam_v") for n in names]
        if hashlib.sha256(header.encode() + b"".join(parts)).hexdigest() == expected:
            return {k[2:]: v.double().to(device) for k, v in load_file(file).items() if k.startswith("w.")}
    raise SystemExit(f"check_explain.py: no checkpoint in {path} verifies")


def make_loss(w, offset, target, kernel):
    """L(x) = (f(x) - s*)^2 per signal, x [B, D, T] -> [B]; f as in docs/FORMATS.md."""
    def loss(x):
        h = x
        for i in range(1, 5):
            h = F.max_pool1d(F.relu(F.conv1d(h, w[f"conv{i}"], padding=kernel // 2)), 2)
        score = offset + (F.relu(h.flatten(1) @ w["fc1"]) @ w["fc2"]).squeeze(-1)
        return (score - target) ** 2
    return loss


def loss_and_grad(loss, x):
    x = x.detach().requires_grad_(True)
    value = loss(x)
    # Signals are independent (no batch statistics): the sum's gradient is each one's own.
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def saliency(loss, x):
    if Saliency is not None:
        # Captum takes |grad| unless told; x marked for autograd here to keep it quiet.
        return Saliency(loss).attribute(x.clone().requires_grad_(True), abs=False)
    return loss_and_grad(loss, x)[1]


def integrated_gradients(loss, x, steps):
    if IntegratedGradients is None:
        alphas = torch.arange(steps + 1, dtype=x.dtype, device=x.device) / steps
        weights = torch.full((steps + 1,), 1.0 / steps, dtype=x.dtype, device=x.device)
        weights[[0, -1]] /= 2
        grads = [loss_and_grad(loss, a * x)[1] for a in alphas]
        return x * sum(wk * g for wk, g in zip(weights, grads))
    # Same steps + 1 points k/steps. Captum 0.9's trapezoid weighs them with step 1/n for n
    # points (weights summing to (n-1)/n, not 1), so its result is scaled back by n/(n-1).
    n = steps + 1
    ig = IntegratedGradients(loss).attribute(x, baselines=0.0, n_steps=n, method="riemann_trapezoid")
    return ig * n / (n - 1)


def descend(loss, x0, eta, tol, max_iter):
    """Algorithm 1 as src/explain/descent.rs runs it: a step per pair while L >= tol and L has
    not grown 100-fold over its start; returns (x0 - x_final, steps taken, L(x_final) < tol)."""
    x = x0.clone()
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    steps = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    for it in range(max_iter):
        # Only pairs still descending are computed: most stop long before max_iter.
        live = active.nonzero().squeeze(1)
        if len(live) == 0:
            break
        value, grad = loss_and_grad(loss, x[live])
        if it == 0:
            limit = value * DIVERGED
        still = (value >= tol) & (value <= limit[live])  # NaN fails both: it stops too
        active[live] = still
        x[live[still]] -= eta * grad[still]
        steps[live[still]] += 1
    with torch.no_grad():
        converged = loss(x) < tol
    return x0 - x, steps.cpu().numpy(), converged.cpu().numpy()


def load_split(run, split):
    names = ["train", "test"] if split == "all" else [split]  # "all" is train then test
    return np.concatenate([load_file(run / "data" / f"{n}.safetensors")["perturbed"].numpy() for n in names])


def compare(agra, ours):
    """Per (member, signal) pair, the max abs difference; and agra's largest magnitude."""
    diff = np.abs(agra.astype(np.float64) - ours).reshape(agra.shape[0], agra.shape[1], -1).max(-1)
    return diff, float(np.abs(agra).max())


def main():
    started = time.time()
    # The batches are tiny: on 2 cores two intra-op threads made the descent 4-8x slower.
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description="agra's attributions against PyTorch and Captum")
    parser.add_argument("run", type=Path)
    parser.add_argument("--members", type=int, help="check the first K members only")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run, device = args.run, torch.device(args.device)
    config = tomllib.loads((run / "config.toml").read_text())
    e, target = config["explain"], config["data"]["optimal_score"]
    offset, kernel = config["model"]["score_offset"], config["model"]["kernel"]
    manifests = {m: json.loads((run / "explain" / m / "manifest.json").read_text())
                 for m in ("saliency", "gxi", "ig", "grad") if (run / "explain" / m / "manifest.json").exists()}
    if not manifests:
        json.dump({}, sys.stdout)
        return
    if not all((run / "explain" / m / "members.npy").exists() for m in manifests):
        print("check_explain.py needs each member's arrays (explain.keep_members = true)", file=sys.stderr)
        sys.exit(2)
    first = next(iter(manifests.values()))
    x = torch.from_numpy(load_split(run, first["split"])).double().to(device)
    members = first["members"][:args.members]
    ours = {m: [] for m in manifests}
    iterations, converged = [], []
    for member in members:
        loss = make_loss(load_member(run / "members" / f"m{member:04d}", device), offset, target, kernel)
        if "saliency" in manifests:
            ours["saliency"].append(saliency(loss, x).detach())
        if "ig" in manifests:
            ours["ig"].append(integrated_gradients(loss, x, e["ig_steps"]).detach())
        if "grad" in manifests or "gxi" in manifests:
            a, steps, done = descend(loss, x, e["eta"], e["tol"], e["max_iter"])
            iterations.append(steps)
            converged.append(done)
            for name, value in (("grad", a), ("gxi", a * x)):
                if name in manifests:
                    ours[name].append(value)
    out = {}
    for name, manifest in manifests.items():
        assert manifest["members"][:len(members)] == members and manifest["split"] == first["split"]
        folder = run / "explain" / name
        agra, mine = np.load(folder / "members.npy")[:len(members)], torch.stack(ours[name]).cpu().numpy()
        diff, scale = compare(agra, mine)
        # Where a max-pool tie in float32 is none in float64 (or rounding breaks a near-tie the
        # other way), a pair's gradient changes over one pooling window, an equally valid
        # subgradient; and a descent passing near any ReLU or max-pool kink can take its other
        # side and end elsewhere. Such pairs are counted as apart rather than measured.
        apart = diff > APART * scale
        row = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max()) / scale, "pairs": diff.size,
               "pairs_apart": int(apart.sum()), "max_rel_diff_together": float(diff[~apart].max(initial=0.0)) / scale}
        if name in ("grad", "gxi"):
            # gxi's counts are grad's (gxi runs grad's descent); without grad they are not kept.
            grad_dir = run / "explain" / "grad"
            if (grad_dir / "iterations.npy").exists():
                kept = len(members)
                row["iterations_differ"] = int((np.load(grad_dir / "iterations.npy")[:kept] != np.stack(iterations)).sum())
                row["converged_differ"] = int((np.load(grad_dir / "converged.npy")[:kept] != np.stack(converged)).sum())
        out[name] = row
    out["captum"] = Saliency is not None
    out["seconds"] = round(time.time() - started, 3)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
