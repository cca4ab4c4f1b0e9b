"""Training-quality experiments on agra's network in PyTorch (docs/BENCHMARKS.md, training
quality): M members in agra's packed layout (grouped Conv1d + bmm, one Adam), lr decayed
linearly over the last epochs like agra, with or without a constant score offset and the
negate / time-reverse augmentation. Prints the test R^2 (mean, min) every 10 epochs to stderr
and one JSON line at the end.

  python scripts/bench/torch_quality.py --data runs/paper/data/train.safetensors \
      --eval runs/paper/data/test.safetensors --offset 10 --augment
"""
import argparse
import json
import sys

import torch

from net import SCORE_OFFSET, load_data, make_members
from torch_train import PackedTrainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--decay", type=int, default=20, help="epochs of linear lr decay at the end")
    ap.add_argument("--final", type=float, default=0.05, help="lr fraction reached by the decay")
    ap.add_argument("--offset", default="0", help="constant added to the output: a number or 'mean'")
    ap.add_argument("--augment", action="store_true", help="negate / time-reverse samples at random")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = load_data(a.data)
    xt, yt = load_data(a.eval)
    offset = y.mean().item() if a.offset == "mean" else float(a.offset)
    m, (n, _, t) = a.members, x.shape
    # The benchmark's packed trainer, its Adam driven with this script's learning rates; its
    # forward adds net.SCORE_OFFSET, swapped here for the offset under test.
    trainer = PackedTrainer(make_members(m, t, a.seed), x, y)
    opt = trainer.opt

    def forward(xp, train):  # [B, M*2, T] -> [M, B]
        return trainer.forward(xp, train) - SCORE_OFFSET + offset

    def test_r2():
        p = trainer.predict(xt) - SCORE_OFFSET + offset
        return 1 - ((p - yt) ** 2).mean(1) / yt.var(unbiased=False)

    g = torch.Generator().manual_seed(a.seed)
    for e in range(a.epochs):
        into_decay = e - (a.epochs - a.decay) + 1
        lr = a.lr * (1 - into_decay / a.decay * (1 - a.final)) if a.decay and into_decay > 0 else a.lr
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.stack([torch.randperm(n, generator=g) for _ in range(m)])
        for s in range(0, n, a.batch):
            idx = order[:, s:s + a.batch]
            b = idx.shape[1]
            xb = x[idx.t().flatten()].view(b, m, 2, t)
            if a.augment:
                sign = torch.randint(0, 2, (b, m, 1, 1), generator=g).float() * 2 - 1
                reverse = torch.randint(0, 2, (b, m, 1, 1), generator=g).bool()
                xb = torch.where(reverse, xb.flip(-1), xb) * sign
            loss = ((forward(xb.reshape(b, m * 2, t), True) - y[idx]) ** 2).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (e + 1) % 10 == 0 or e + 1 == a.epochs:
            r2 = test_r2()
            print(f"epoch {e + 1}: test R^2 mean {r2.mean():.3f} min {r2.min():.3f}", file=sys.stderr, flush=True)
    r2 = test_r2()
    print(json.dumps({"args": vars(a), "r2_mean": r2.mean().item(), "r2_min": r2.min().item()}))


if __name__ == "__main__":
    main()
