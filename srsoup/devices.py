"""The run's device and dtype from their config names; an unavailable one is an error, never a silent fallback."""

from __future__ import annotations

import torch

from srsoup.errors import SrsoupError

DEVICES = "auto, cpu, cuda, cuda:N, mps"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Weight storage for layerwise casting (``storage_dtype``): kept in these, computed in the run's dtype.
STORAGE_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def dtype_name(dtype: torch.dtype) -> str:
    """The config name of a run dtype or a storage dtype (``torch.bfloat16`` -> ``bf16``)."""
    return next(n for table in (DTYPES, STORAGE_DTYPES) for n, t in table.items() if t == dtype)


def resolve_device(name: str | torch.device, planning: bool = False) -> torch.device:
    """``auto`` → cuda if available else cpu; an explicit device that is not available is an error.

    ``planning``: the device a run *would* use (``srsoup plan`` for a GPU run on a machine without one): auto and
    cuda mean a CUDA device whether or not this machine has one.
    """
    name = str(name)
    if name == "meta":
        return torch.device("meta")  # models built for their shapes only (srsoup plan); never a run's device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() or planning else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SrsoupError(f"device={name!r} is not a device; valid: {DEVICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise SrsoupError(f"device={name!r} is not supported; valid: {DEVICES}")
    if planning:
        return device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrsoupError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SrsoupError(f"device={name!r} but only {torch.cuda.device_count()} CUDA devices are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SrsoupError(f"device={name!r} but MPS is not available on this machine; use device=cpu or auto")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of ``fp32 | fp16 | bf16``; fp16 needs a GPU, bf16 a GPU that has it (or the CPU)."""
    if name not in DTYPES:
        raise SrsoupError(f"dtype={name!r} is not supported; valid: {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise SrsoupError(
            "dtype='fp16' needs a GPU (many fp16 kernels are missing on CPU); valid on CPU: fp32, bf16"
        )
    # (a CUDA device on a machine without one is srsoup plan's: the device it plans for is not here to ask)
    if (
        name == "bf16"
        and device.type == "cuda"
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
        raise SrsoupError(
            f"dtype='bf16' is not supported by {torch.cuda.get_device_name(device)}; valid: fp32, fp16"
        )
    return DTYPES[name]


def resolve_storage_dtype(name: str | None, dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The weights' storage dtype of ``storage_dtype`` (None: as ``dtype``); never wider than ``dtype``."""
    if name is None:
        return None
    if name not in STORAGE_DTYPES:
        raise SrsoupError(f"storage_dtype={name!r} is not supported; valid: null, {', '.join(STORAGE_DTYPES)}")
    storage = STORAGE_DTYPES[name]
    if device.type == "mps" and storage.itemsize == 1:
        raise SrsoupError(f"storage_dtype={name!r}: MPS has no float8 tensors; valid on MPS: null, bf16, fp16")

    def fits(t: torch.dtype) -> bool:  # narrower than the compute dtype, or that dtype itself
        return t.itemsize < dtype.itemsize or t == dtype

    if not fits(storage):
        valid = ["null", *(n for n, t in STORAGE_DTYPES.items() if fits(t))]
        raise SrsoupError(
            f"storage_dtype={name!r} is not narrower than dtype={dtype_name(dtype)!r} (the dtype layers compute "
            f"in); valid: {', '.join(valid)}"
        )
    return None if storage == dtype else storage
