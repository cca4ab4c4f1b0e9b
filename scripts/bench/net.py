"""Shared pieces of agra's PyTorch baselines: the member network, the data loader
and the test metrics, so that torch_train.py and torch_explain.py time the very
same model as agra (see those scripts for the benchmark itself).

One member: 4 x [Conv1d(k=5, pad=2, no bias) -> ReLU -> MaxPool1d(2)] with
channels 2->16->32->32->32, flatten (32*T/16), Linear(.., 64, no bias) -> ReLU
-> Dropout(0.2) -> Linear(64, 1, no bias) -> squeeze, plus the constant
SCORE_OFFSET (agra's model.score_offset).  Output: a score in [0, 10].
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = (2, 16, 32, 32, 32)
KERNEL = 5
HIDDEN = 64
DROPOUT = 0.2
SCORE_OFFSET = 10.0
SYNTH_N, SYNTH_T, SYNTH_SEED = 750, 256, 0


class Net(nn.Module):
    """One ensemble member, PyTorch default (kaiming uniform) init."""

    def __init__(self, t=SYNTH_T):
        super().__init__()
        assert t % 16 == 0, "T must be a multiple of 16 (four max-pools of 2)"
        self.convs = nn.ModuleList(
            nn.Conv1d(ci, co, KERNEL, padding=KERNEL // 2, bias=False)
            for ci, co in zip(CHANNELS[:-1], CHANNELS[1:]))
        self.fc1 = nn.Linear(CHANNELS[-1] * t // 16, HIDDEN, bias=False)
        self.drop = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(HIDDEN, 1, bias=False)

    def forward(self, x):  # x [B, 2, T] -> [B]
        for conv in self.convs:
            x = F.max_pool1d(F.relu(conv(x)), 2)
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        return SCORE_OFFSET + self.fc2(x).squeeze(-1)


def load_data(path=None, device="cpu", n=SYNTH_N, t=SYNTH_T, seed=SYNTH_SEED):
    """(perturbed [n, 2, T] f32, scores [n] f32) from agra's safetensors split
    file, or fixed-seed synthetic data of the same shapes when path is None."""
    if path:
        from safetensors.torch import load_file
        d = load_file(path)
        x, y = d["perturbed"].float(), d["scores"].float()
    else:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 2, t, generator=g)
        y = torch.rand(n, generator=g) * 10.0
    assert x.dim() == 3 and x.shape[1] == 2 and y.shape == (x.shape[0],), (x.shape, y.shape)
    return x.to(device).contiguous(), y.to(device).contiguous()


def make_members(m, t, seed):
    """M freshly initialised members (deterministic for a given seed)."""
    torch.manual_seed(seed)
    return [Net(t) for _ in range(m)]


def test_metrics(pred, y):
    """pred [M, n], y [n] -> dict of mean test MSE, mean and min R^2
    (R^2 = 1 - MSE / var(y), population variance)."""
    mse = ((pred - y) ** 2).mean(1)
    r2 = 1.0 - mse / y.var(unbiased=False)
    return {"test_mse_mean": mse.mean().item(), "test_r2_mean": r2.mean().item(),
            "test_r2_min": r2.min().item()}
