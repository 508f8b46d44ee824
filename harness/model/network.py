"""InceptionResnetV1 (FaceNet) in PyTorch, shaped by the weights of a frozen FaceNet graph.

Every convolution carries the TensorFlow scope it was trained under (``tf_scope``), so the
weights load by name from the frozen ``graph_final.pb`` and nothing is guessed: a missing
or mis-shaped tensor is an error.  Batch norm of the conv layers is already folded into
conv biases in that graph; only the bottleneck keeps a real BatchNorm (eps 1e-3).
Padding follows TensorFlow: every stride-2 layer is VALID and every SAME layer has stride 1
and odd kernels, so SAME is a symmetric ``k // 2`` pad here.

Imports torch: only ``prepare`` (the ``export`` extra) needs this module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SCOPE = "InceptionResnetV1"


class Conv(nn.Module):
    """Conv2d + bias (+ ReLU), sized from the TF weight tensor ``<scope>/weights`` (HWIO)."""

    def __init__(
        self, consts: dict[str, np.ndarray], scope: str, stride: int = 1, same: bool = True, relu: bool = True
    ):
        super().__init__()
        self.tf_scope = scope
        kh, kw, cin, cout = _const(consts, f"{scope}/weights").shape
        padding = (kh // 2, kw // 2) if same else 0
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias=True)
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x) if self.relu else x


def _const(consts: dict[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return consts[name]
    except KeyError:
        raise KeyError(f"the frozen FaceNet graph has no tensor {name!r}; is it an InceptionResnetV1 graph?") from None


class ResidualBlock(nn.Module):
    """block35 / block17 / block8: parallel branches, concat, 1x1 up-projection, scaled residual."""

    def __init__(self, consts, scope: str, branches: list[list[str]], relu: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[Conv(consts, f"{scope}/{name}") for name in branch]) for branch in branches
        )
        self.up = Conv(consts, f"{scope}/Conv2d_1x1", relu=False)
        self.scale = float(_const(consts, f"{scope}/mul/x"))
        self.relu = relu

    def forward(self, x):
        mixed = torch.cat([b(x) for b in self.branches], dim=1)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.relu else out


class Reduction(nn.Module):
    """Mixed_6a / Mixed_7a: conv branches ending in stride-2 VALID convs, plus a max-pool branch."""

    def __init__(self, consts, scope: str, branches: list[list[str]]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                *[
                    Conv(consts, f"{scope}/{name}", stride=2 if "1a_" in name else 1, same="1a_" not in name)
                    for name in branch
                ]
            )
            for branch in branches
        )

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches] + [F.max_pool2d(x, 3, stride=2)], dim=1)


B35 = [
    ["Branch_0/Conv2d_1x1"],
    ["Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3"],
    ["Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3"],
]
B17 = [["Branch_0/Conv2d_1x1"], ["Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1"]]
B8 = [["Branch_0/Conv2d_1x1"], ["Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", "Branch_1/Conv2d_0c_3x1"]]
MIXED_6A = [["Branch_0/Conv2d_1a_3x3"], ["Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_1/Conv2d_1a_3x3"]]
MIXED_7A = [
    ["Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3"],
    ["Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_1a_3x3"],
    ["Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_1a_3x3"],
]


class InceptionResnetV1(nn.Module):
    """FaceNet: (N,3,160,160) RGB in ``(x - 127.5) / 128`` -> (N,512) L2-normalised embedding."""

    def __init__(self, consts: dict[str, np.ndarray]):
        super().__init__()
        s = SCOPE
        self.stem = nn.Sequential(
            Conv(consts, f"{s}/Conv2d_1a_3x3", stride=2, same=False),
            Conv(consts, f"{s}/Conv2d_2a_3x3", same=False),
            Conv(consts, f"{s}/Conv2d_2b_3x3"),
            nn.MaxPool2d(3, stride=2),
            Conv(consts, f"{s}/Conv2d_3b_1x1", same=False),
            Conv(consts, f"{s}/Conv2d_4a_3x3", same=False),
            Conv(consts, f"{s}/Conv2d_4b_3x3", stride=2, same=False),
        )
        self.repeat = nn.Sequential(*[ResidualBlock(consts, f"{s}/Repeat/block35_{i}", B35) for i in range(1, 6)])
        self.mixed_6a = Reduction(consts, f"{s}/Mixed_6a", MIXED_6A)
        self.repeat_1 = nn.Sequential(*[ResidualBlock(consts, f"{s}/Repeat_1/block17_{i}", B17) for i in range(1, 11)])
        self.mixed_7a = Reduction(consts, f"{s}/Mixed_7a", MIXED_7A)
        self.repeat_2 = nn.Sequential(*[ResidualBlock(consts, f"{s}/Repeat_2/block8_{i}", B8) for i in range(1, 6)])
        self.block8 = ResidualBlock(consts, f"{s}/Block8", B8, relu=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        w = _const(consts, f"{s}/Bottleneck/weights")
        self.bottleneck = nn.Linear(w.shape[0], w.shape[1], bias=False)
        self.last_bn = nn.BatchNorm1d(w.shape[1], eps=1e-3)
        self._load(consts)
        self.eval()

    def _load(self, consts):
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, Conv):
                    w = _const(consts, f"{m.tf_scope}/weights")
                    bias_name = next(
                        (f"{m.tf_scope}/{n}" for n in ("Conv2D_bn_offset", "biases") if f"{m.tf_scope}/{n}" in consts),
                        f"{m.tf_scope}/biases",
                    )
                    m.conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
                    m.conv.bias.copy_(torch.from_numpy(_const(consts, bias_name)))
            bn = f"{SCOPE}/Bottleneck/BatchNorm"
            self.bottleneck.weight.copy_(torch.from_numpy(_const(consts, f"{SCOPE}/Bottleneck/weights").T.copy()))
            self.last_bn.weight.copy_(torch.from_numpy(_const(consts, f"{bn}/Const")))
            self.last_bn.bias.copy_(torch.from_numpy(_const(consts, f"{bn}/beta")))
            self.last_bn.running_mean.copy_(torch.from_numpy(_const(consts, f"{bn}/moving_mean")))
            self.last_bn.running_var.copy_(torch.from_numpy(_const(consts, f"{bn}/moving_variance")))

    def forward(self, x):
        x = self.stem(x)
        x = self.repeat(x)
        x = self.mixed_6a(x)
        x = self.repeat_1(x)
        x = self.mixed_7a(x)
        x = self.repeat_2(x)
        x = self.block8(x)
        x = self.avgpool(x).flatten(1)
        x = self.last_bn(self.bottleneck(x))
        return F.normalize(x, p=2, dim=1)
