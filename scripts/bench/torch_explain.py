"""PyTorch explanation baseline for agra's benchmark (Captum-like, per member).

agra explains each ensemble member with input gradients of
L(x) = (f(x) - 10)^2, the squared distance of the member's score from the top
score.  Captum's Saliency does the same one model at a time, so this script
measures that cost from Python, member by member:

  --method saliency  one gradient dL/dx per (member, signal);
  --method grad      K steps of x <- x - eta * dL/dx per (member, signal), a fixed
                     step count so the timing does not depend on convergence.

By default signals go one at a time ([1, 2, T] per call); --batched puts all the
signals of a member in one batch (Captum batches over its inputs, so that is the
fairer baseline; the bench reports both).  Members are freshly initialised (the
cost does not depend on the weights), in eval mode (no dropout), and their weights
do not require grad, so only input gradients are computed.  Timing follows a
warm-up gradient; one gradient evaluation is one (member, signal, step).

  python scripts/bench/torch_explain.py --method grad --iters 20 --members 50 \
      --signals 100 --device cuda --batched --data test.safetensors
"""
import argparse
import json
import sys
import time

import torch

from net import load_data, make_members

TARGET = 10.0


def input_grad(net, x):
    """dL/dx for L = sum over the batch of (f(x) - 10)^2; rows are independent."""
    x = x.detach().requires_grad_()
    loss = ((net(x) - TARGET) ** 2).sum()
    return torch.autograd.grad(loss, x)[0]


def explain_member(net, signals, method, iters, eta, batched):
    """Saliency maps or gradient-descent end points of one member, [S, 2, T]."""
    out = []
    for x in ([signals] if batched else signals.split(1)):
        if method == "saliency":
            out.append(input_grad(net, x))
        else:
            for _ in range(iters):
                x = x - eta * input_grad(net, x)
            out.append(x)
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", choices=["saliency", "grad"], default="saliency")
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--signals", type=int, default=100, help="first S signals of the data")
    ap.add_argument("--iters", type=int, default=10, help="steps of --method grad")
    ap.add_argument("--eta", type=float, default=0.01, help="step size of --method grad")
    ap.add_argument("--batched", action="store_true", help="all signals of a member in one batch")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--data", help="agra split (safetensors); synthetic signals when omitted")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    x, _ = load_data(a.data, dev, **({} if a.data else {"n": a.signals}))
    if x.shape[0] < a.signals:
        sys.exit(f"only {x.shape[0]} signals in {a.data}, asked for {a.signals}")
    signals = x[:a.signals]
    members = make_members(a.members, x.shape[-1], a.seed)
    for net in members:
        net.to(dev).eval().requires_grad_(False)
    steps = 1 if a.method == "saliency" else a.iters
    print(f"[torch_explain] method={a.method} M={a.members} S={a.signals} steps={steps} "
          f"batched={a.batched} T={x.shape[-1]} device={dev} threads={torch.get_num_threads()}",
          file=sys.stderr)

    input_grad(members[0], signals[:1])  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    checksum = 0.0
    for net in members:
        res = explain_member(net, signals, a.method, a.iters, a.eta, a.batched)
        checksum += res.abs().sum()
    checksum = float(checksum)  # also synchronises CUDA
    total = time.perf_counter() - start
    print(f"  checksum (sum |result|) {checksum:.6g}", file=sys.stderr)

    evals = a.members * a.signals * steps
    print(json.dumps({"method": a.method, "batched": a.batched, "device": a.device,
                      "members": a.members, "signals": a.signals, "iters": steps,
                      "threads": torch.get_num_threads(), "grad_evals": evals,
                      "grad_evals_per_s": evals / total, "total_s": total}))


if __name__ == "__main__":
    main()
