"""PyTorch training baseline for agra's benchmark.

agra trains an ensemble of M copies of the 1-D CNN in net.py packed into one
forward/backward.  This script trains the same ensemble from Python in three ways,
so the benchmark can tell agra's own cost from PyTorch's best practice:

  sequential  M plain nn.Modules, one after another, each with torch.optim.Adam;
  vmap        torch.func ensembling (stack_module_state + functional_call + vmap),
              each member its own batch of its own data order, one Adam;
  packed      agra's layout with PyTorch kernels: grouped Conv1d (groups=M) and
              torch.bmm for the two linear layers, one Adam over the packed tensors.

All modes: MSE loss, Adam lr 1e-3 (0.9, 0.999, 1e-8), batch 32, a fresh shuffle per
member per epoch, last partial batch kept.  The loss is summed over members, so each
member gets exactly its own gradient (Adam is per element).  Timing starts after a
few warm-up steps on a throwaway ensemble and covers every epoch of every member;
evaluation is not timed.  One JSON line goes to stdout, diagnostics to stderr.

  python scripts/bench/torch_train.py --mode packed --members 50 --epochs 10 \
      --device cuda --data train.safetensors --eval test.safetensors
"""
import argparse
import copy
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from net import CHANNELS, DROPOUT, KERNEL, SCORE_OFFSET, load_data, make_members, test_metrics

LR, BETAS, EPS, BATCH = 1e-3, (0.9, 0.999), 1e-8, 32
EVAL_CHUNK = 128


def adam(params, device):
    return torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS, fused=device.type == "cuda")


class SingleTrainer:
    """One member as a plain nn.Module (sequential mode uses M of these)."""

    def __init__(self, member, k, x, y):
        self.ids, self.m, self.x, self.y = [k], 1, x, y
        self.net = member.to(x.device).train()
        self.opt = adam(self.net.parameters(), x.device)

    def step(self, idx):  # idx [1, B] -> per-member loss [1]
        loss = F.mse_loss(self.net(self.x[idx[0]]), self.y[idx[0]])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach().view(1)

    @torch.no_grad()
    def predict(self, x):
        self.net.eval()
        out = torch.cat([self.net(c) for c in x.split(EVAL_CHUNK)]).view(1, -1)
        self.net.train()
        return out


class VmapTrainer:
    """torch.func ensembling of M members."""

    def __init__(self, members, x, y):
        self.ids, self.m, self.x, self.y = list(range(len(members))), len(members), x, y
        members = [mb.to(x.device) for mb in members]
        self.params, self.buffers = stack_module_state(members)
        self.base = copy.deepcopy(members[0]).to("meta")

        def loss_fn(p, b, xb, yb):
            return F.mse_loss(functional_call(self.base, (p, b), (xb,)), yb)

        def fwd(p, b, xb):
            return functional_call(self.base, (p, b), (xb,))

        self.vloss = vmap(loss_fn, randomness="different")
        self.vfwd = vmap(fwd, in_dims=(0, 0, None))
        self.opt = adam(list(self.params.values()), x.device)

    def step(self, idx):  # idx [M, B]
        losses = self.vloss(self.params, self.buffers, self.x[idx], self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        return losses.detach()

    @torch.no_grad()
    def predict(self, x):
        self.base.eval()
        out = torch.cat([self.vfwd(self.params, self.buffers, c) for c in x.split(EVAL_CHUNK)], 1)
        self.base.train()
        return out


class PackedTrainer:
    """agra's packed layout: grouped convolutions and batched matmuls."""

    def __init__(self, members, x, y):
        self.ids, self.m, self.x, self.y = list(range(len(members))), len(members), x, y
        m = self.m

        def leaf(t):
            return t.detach().clone().contiguous().to(x.device).requires_grad_()

        # conv weight [M*Cout, Cin, K]: member j owns output channels j*Cout..(j+1)*Cout
        self.convs = [leaf(torch.cat([mb.convs[i].weight for mb in members]))
                      for i in range(len(CHANNELS) - 1)]
        self.w1 = leaf(torch.stack([mb.fc1.weight.t() for mb in members]))  # [M, 512, 64]
        self.w2 = leaf(torch.stack([mb.fc2.weight.t() for mb in members]))  # [M, 64, 1]
        self.opt = adam(self.convs + [self.w1, self.w2], x.device)
        assert self.convs[0].shape == (m * CHANNELS[1], CHANNELS[0], KERNEL)

    def forward(self, xp, train):  # xp [B, M*2, T] -> [M, B]
        h = xp
        for w in self.convs:
            h = F.max_pool1d(F.relu(F.conv1d(h, w, padding=KERNEL // 2, groups=self.m)), 2)
        h = h.reshape(h.shape[0], self.m, -1).transpose(0, 1)  # [M, B, 32*T/16]
        h = F.dropout(F.relu(torch.bmm(h, self.w1)), DROPOUT, training=train)
        return SCORE_OFFSET + torch.bmm(h, self.w2).squeeze(-1)

    def step(self, idx):  # idx [M, B]
        b, t = idx.shape[1], self.x.shape[-1]
        xp = self.x[idx.t().flatten()].view(b, self.m * 2, t)  # row b: members' samples
        losses = ((self.forward(xp, True) - self.y[idx]) ** 2).mean(1)
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        return losses.detach()

    @torch.no_grad()
    def predict(self, x):
        t = x.shape[-1]
        outs = [self.forward(c[:, None].expand(-1, self.m, -1, -1).reshape(c.shape[0], -1, t), False)
                for c in x.split(EVAL_CHUNK)]
        return torch.cat(outs, 1)


def make_trainers(mode, members, x, y):
    if mode == "sequential":
        return [SingleTrainer(mb, k, x, y) for k, mb in enumerate(members)]
    return [{"vmap": VmapTrainer, "packed": PackedTrainer}[mode](members, x, y)]


def epoch_batches(n, ids, epoch, seed, device):
    """Index tensors [len(ids), <=BATCH]: a fresh permutation per member and epoch,
    last batch kept.  The order depends on (seed, member, epoch) only, so every mode
    shows each member the same batches (only dropout masks differ)."""
    order = torch.stack([
        torch.randperm(n, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + k * 10_007 + epoch)) for k in ids]).to(device)
    return [order[:, s:s + BATCH] for s in range(0, n, BATCH)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["sequential", "vmap", "packed"], required=True)
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--data", help="agra split (safetensors: perturbed [n,2,T], scores [n]); "
                    "synthetic n=750, T=256 when omitted")
    ap.add_argument("--eval", help="test split for test MSE / R^2")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps on a throwaway ensemble")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    x, y = load_data(a.data, dev)
    n, t = x.shape[0], x.shape[-1]
    print(f"[torch_train] mode={a.mode} M={a.members} E={a.epochs} n={n} T={t} "
          f"device={dev} threads={torch.get_num_threads()}", file=sys.stderr)

    warm = make_trainers(a.mode, make_members(a.members if a.mode != "sequential" else 1,
                                              t, a.seed + 1), x, y)[0]
    for idx in epoch_batches(n, warm.ids, -1, a.seed, dev)[:a.warmup]:
        warm.step(idx)
    sync(dev)
    del warm

    trainers = make_trainers(a.mode, make_members(a.members, t, a.seed), x, y)
    sync(dev)
    start = time.perf_counter()
    for k, tr in enumerate(trainers):
        for e in range(a.epochs):
            tot = torch.zeros(tr.m, device=dev)
            for idx in epoch_batches(n, tr.ids, e, a.seed, dev):
                tot += tr.step(idx) * idx.shape[1]
            if a.mode != "sequential" or e == a.epochs - 1:
                print(f"  {'member %d ' % k if a.mode == 'sequential' else ''}epoch {e + 1}: "
                      f"train mse mean {(tot / n).mean().item():.4f}", file=sys.stderr)
    sync(dev)
    total = time.perf_counter() - start

    out = {"mode": a.mode, "device": a.device, "members": a.members, "epochs": a.epochs,
           "threads": torch.get_num_threads(),
           "ms_per_member_epoch": 1000.0 * total / (a.members * a.epochs), "total_s": total,
           "test_mse_mean": None, "test_r2_mean": None, "test_r2_min": None}
    if a.eval:
        xt, yt = load_data(a.eval, dev)
        out.update(test_metrics(torch.cat([tr.predict(xt) for tr in trainers]), yt))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
