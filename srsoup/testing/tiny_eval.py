"""Prompt adherence of the embedded model: held-out and seen colour-shape-background combinations.

Samples each prompt with plain DDIM (no reward guidance) over several seeds and reports the fraction of images
whose background and foreground colours are right (``srsoup.rewards.adherence.adherence_hits``). Optionally
writes a sample grid PNG.

    python -m srsoup.testing.tiny_eval                       # the shipped weights
    python -m srsoup.testing.tiny_eval --model DIR --grid docs/tiny_samples.png
"""

from __future__ import annotations

import argparse
import json
import random
from typing import TYPE_CHECKING

from srsoup.tiny import WEIGHTS_DIR

if TYPE_CHECKING:
    import torch


def evaluate(model: str, combos, seeds, steps: int, cfg_scale: float):
    import torch

    from srsoup.backbones.ddim import DDIMBackbone
    from srsoup.guidance.none import NoGuidance
    from srsoup.rewards.adherence import adherence_hits
    from srsoup.sampling import sample_group
    from srsoup.tiny.grammar import Scene

    backbone = DDIMBackbone.from_pretrained(
        model, device=torch.device("cpu"), dtype=torch.float32, cfg_scale=cfg_scale, chunk_size=64
    )
    method = NoGuidance()
    method.setup(torch.zeros(1, 1), ["none"])
    prompts, images = [], []
    for fg, shape, bg in combos:
        prompt = Scene(fg, shape, bg).caption
        for seed in seeds:
            result = sample_group(
                backbone=backbone,
                method=method,
                rewards={},
                prompt=prompt,
                seed=seed,
                num_steps=steps,
                progress=False,
            )
            prompts.append(prompt)
            images.append(result.images[0])
    images = torch.stack(images)
    return {part: float(adherence_hits(images, prompts, part=part).mean()) for part in PARTS}, images, prompts


PARTS = ("both", "background", "foreground")


def save_grid(images: torch.Tensor, cols: int, path: str, scale: int = 3) -> None:
    import torch
    from PIL import Image

    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    canvas = torch.ones(3, rows * (h + 2), cols * (w + 2))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = im
    arr = (canvas.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    img = Image.fromarray(arr)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(WEIGHTS_DIR), help="diffusers folder (default: the shipped weights)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per prompt")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--seen", type=int, default=12, help="how many seen (training) combinations to check")
    p.add_argument("--grid", default=None, help="write a sample grid PNG (held-out prompts x 8 seeds) here")
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    from srsoup.tiny.grammar import HELD_OUT, TRAIN_COMBOS

    seeds = list(range(args.seeds))
    seen = random.Random(0).sample(list(TRAIN_COMBOS), args.seen)
    held, held_images, held_prompts = evaluate(args.model, HELD_OUT, seeds, args.steps, args.cfg_scale)
    seen_score, _, _ = evaluate(args.model, seen, seeds, args.steps, args.cfg_scale)
    figures = {
        **{f"held_out_{p}": round(held[p], 4) for p in PARTS},
        **{f"seen_{p}": round(seen_score[p], 4) for p in PARTS},
        "held_out_prompts": len(HELD_OUT),
        "seen_prompts": len(seen),
        "seeds": args.seeds,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
    }
    print(json.dumps(figures, indent=2))
    if args.grid:
        save_grid(held_images, args.seeds, args.grid)
        print(f"sample grid ({len(HELD_OUT)} held-out prompts x {args.seeds} seeds) written to {args.grid}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
