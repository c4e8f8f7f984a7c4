"""The embedded default model: a procedural captioned-shapes grammar and the weights trained on it."""

from pathlib import Path

#: Diffusers-layout folder of the shipped model (``model_index.json``, ``unet/``, ``text_encoder/``, ...).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
