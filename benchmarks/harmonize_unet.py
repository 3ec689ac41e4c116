"""A small 3D U-Net (two down-sampling levels) for the harmonization study; benchmarks only."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet3D(nn.Module):
    """Encoder 1 -> w -> 2w -> 4w, decoder with skip connections, ``n_classes`` logits per voxel.

    BatchNorm (not InstanceNorm) on purpose: its running statistics are shared by every training
    volume, so intensities on another scale shift them, which is the failure the study measures.
    """

    def __init__(self, n_classes: int = 3, width: int = 8):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.bottom = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.pool = nn.MaxPool3d(2)
        self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose3d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w)
        self.head = nn.Conv3d(w, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, D, H, W), sides divisible by 4
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)
