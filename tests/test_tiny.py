"""The embedded model: shipped weights load offline, follow prompts, and the training script runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from srsoup.tiny import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
# The bar: foreground and background colour both right on >= 0.8 of the held-out combinations. Measured
# on the shipped weights (srsoup.testing.tiny_eval, 4 seeds, 30 steps): 0.92 held-out, 1.0 seen; on the 12 images
# below 1.0. The bound is the issue's, not the measurement's.
ADHERENCE_THRESHOLD = 0.8


def test_shipped_weights_are_small_safetensors_in_diffusers_layout():
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 15 * 1024 * 1024
    names = {str(p.relative_to(WEIGHTS_DIR)) for p in files}
    assert {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    scheduler = json.loads((WEIGHTS_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is False


def test_shipped_weights_load_offline_and_warn_on_unknown_words(caplog):
    from srsoup.backbones.ddim import DDIMBackbone

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    backbone = DDIMBackbone.from_pretrained(None, device=torch.device("cpu"), dtype=torch.float32, cfg_scale=3.0)
    assert backbone.vae is None and backbone.latent_shape == (3, 32, 32)
    with caplog.at_level("WARNING"):
        backbone.encode_prompt("a red circle on an orange background")
    assert not caplog.records  # "an" reads as "a"
    with caplog.at_level("WARNING"):
        backbone.encode_prompt("a magenta hexagon on a blue background")
    assert "magenta" in caplog.text and "hexagon" in caplog.text


def test_held_out_prompts_are_followed():
    """Fixed seeds, unguided: foreground and background colours are right on combinations never trained on."""
    from srsoup.testing.tiny_eval import evaluate
    from srsoup.tiny.grammar import HELD_OUT

    scores, images, _ = evaluate(str(WEIGHTS_DIR), HELD_OUT[:6], seeds=[0, 1], steps=25, cfg_scale=3.0)
    assert images.shape == (12, 3, 32, 32)
    assert scores["both"] >= ADHERENCE_THRESHOLD, scores


def test_training_script_smoke(tmp_path):
    out = tmp_path / "model"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_tiny_t2i.py"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--toy",
            "--save-every",
            "1",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (out / "model_index.json").exists() and (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    log = json.loads((out / "training.json").read_text())
    assert log["steps"] == 2 and log["final_loss"] > 0
    # The training state resumes: a rerun with more steps starts from step 2.
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_tiny_t2i.py"),
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--toy",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "resuming from step 2" in res.stdout


def test_guidance_raises_its_reward_on_the_embedded_model(tmp_path):
    """Single guidance beats unguided sampling on its own reward, same prompts and seeds, for each reward."""
    from srsoup import runner
    from tests.conftest import compose

    base = [
        "sampler.steps=10",
        "guidance.num_candidates=4",
        "progress=false",
        "device=cpu",
        "seeds=[0,1]",
        "prompts.texts=[a red circle on a blue background,a small white triangle on a green background]",
    ]

    def mean_reward(run_dir, reward):
        import csv

        with open(run_dir / "rewards.csv") as f:
            return sum(float(r[f"r_{reward}"]) for r in csv.DictReader(f)) / 4

    plain = runner.run(compose(*base, "guidance=none"), tmp_path / "none")
    for reward in ("colorfulness", "jpeg_compressibility"):
        guided = runner.run(compose(*base, "guidance=single", f"guidance.reward={reward}"), tmp_path / reward)
        assert mean_reward(guided, reward) > mean_reward(plain, reward)
