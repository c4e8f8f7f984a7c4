"""Accelerator classes for wall-time estimates, and the memory of the device a run will use.

Peak figures are the vendors' dense (no sparsity) tensor-core numbers from their data sheets; fp32 is the plain
fp32 rate (torch does not use TF32 for matmuls unless asked). An estimate divides a run's FLOPs by peak × an
assumed utilisation (``--utilization``, default 0.35: diffusion UNets and DiTs in bf16 with SDPA reach 30-50% of
peak at large batch; small batches and the VAE decoder reach less).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gib: float
    tflops: dict[str, float]  # dtype name → dense peak TFLOP/s
    source: str


ACCELERATORS = {
    a.name: a
    for a in (
        Accelerator("a100-40gb", 40, {"bf16": 312, "fp16": 312, "fp32": 19.5}, "NVIDIA A100 data sheet (SXM)"),
        Accelerator("a100-80gb", 80, {"bf16": 312, "fp16": 312, "fp32": 19.5}, "NVIDIA A100 data sheet (SXM)"),
        Accelerator("h100", 80, {"bf16": 989, "fp16": 989, "fp32": 67}, "NVIDIA H100 data sheet (SXM, dense)"),
        Accelerator("h200", 141, {"bf16": 989, "fp16": 989, "fp32": 67}, "NVIDIA H200 data sheet (SXM, dense)"),
        Accelerator("l40s", 48, {"bf16": 362, "fp16": 362, "fp32": 91.6}, "NVIDIA L40S data sheet (dense)"),
        Accelerator("rtx4090", 24, {"bf16": 165, "fp16": 165, "fp32": 82.6}, "NVIDIA Ada whitepaper (fp32 accum)"),
    )
}


def device_memory_bytes(device: torch.device) -> int | None:
    """Memory of the device a run uses: a CUDA device's total, or this machine's RAM for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    return None


def detect_accelerator() -> Accelerator | None:
    """The accelerator class of the visible CUDA device, when its name says which."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().lower().replace(" ", "")
    for key in ("h200", "h100", "l40s", "4090"):
        if key in name:
            return ACCELERATORS["rtx4090" if key == "4090" else key]
    if "a100" in name:
        return ACCELERATORS[
            "a100-80gb" if torch.cuda.get_device_properties(0).total_memory > 50 * GIB else "a100-40gb"
        ]
    return None
