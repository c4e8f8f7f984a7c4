"""JPEG (in)compressibility as in DDPO: the size of a quality-95 JPEG written by Pillow, in kB (1 kB = 1000 B)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size in kB of each image [B,3,H,W] in [0,1] once encoded as JPEG at ``quality``."""
    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    sizes = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes)


class JpegCompressibility:
    """−kB: smaller files score higher."""

    def __init__(self, quality: int = 95):
        self.quality = quality

    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        return -jpeg_kilobytes(images, self.quality)


class JpegIncompressibility(JpegCompressibility):
    """+kB: detailed, noisy images score higher."""

    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        return jpeg_kilobytes(images, self.quality)
