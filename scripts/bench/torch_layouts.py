"""Per-step cost of the packed convolution layouts on CPU, in PyTorch's own kernels (the ones
agra calls): one training step (forward, backward) of P members of the paper network, batch 32,
for grouped conv1d + max_pool1d, grouped conv2d in channels-last memory, and channels-last with
the pool as a `maximum` of even and odd steps (docs/BENCHMARKS.md, convolution layout).

  python scripts/bench/torch_layouts.py --pack 3 --threads 1
"""
import argparse
import time

import torch
import torch.nn.functional as F

from net import CHANNELS, HIDDEN, KERNEL


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p, b, t = a.pack, 32, 256
    torch.manual_seed(0)
    ws = [(torch.randn(p * co, ci, KERNEL) / (ci * KERNEL) ** 0.5).requires_grad_()
          for ci, co in zip(CHANNELS[:-1], CHANNELS[1:])]
    w1 = (torch.randn(p, CHANNELS[-1] * t // 16, HIDDEN) * 0.04).requires_grad_()
    w2 = (torch.randn(p, HIDDEN, 1) * 0.1).requires_grad_()
    x, y = torch.randn(b, p * 2, t), torch.randn(p, b)

    def grouped(h, w):
        return F.max_pool1d(F.conv1d(h, w, padding=KERNEL // 2, groups=p), 2).relu()

    def channels_last(h, w, pool=lambda z: F.max_pool2d(z, (1, 2))):
        h4 = h.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        z = F.conv2d(h4, w.unsqueeze(2), padding=(0, KERNEL // 2), groups=p)
        return pool(z).relu().squeeze(2)

    def channels_last_maximum(h, w):
        return channels_last(h, w, lambda z: torch.maximum(z[..., 0::2], z[..., 1::2]))

    def step(layer):
        h = x
        for w in ws:
            h = layer(h, w)
        h = h.reshape(b, p, -1).transpose(0, 1)
        out = torch.bmm(F.dropout(torch.bmm(h, w1).relu(), 0.2), w2).squeeze(-1)
        ((out - y) ** 2).mean(1).sum().backward()
        for w in ws + [w1, w2]:
            w.grad = None

    for name, layer in [("grouped", grouped), ("channels-last", channels_last),
                        ("channels-last-maximum", channels_last_maximum)]:
        for _ in range(5):
            step(layer)
        start = time.perf_counter()
        for _ in range(a.steps):
            step(layer)
        ms = 1000 * (time.perf_counter() - start) / a.steps
        print(f"pack {p} {name:22s} {ms:7.2f} ms/step  {ms * 750 / 32 / p:6.1f} ms/member-epoch")


if __name__ == "__main__":
    main()
