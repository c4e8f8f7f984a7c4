#!/usr/bin/env python
"""Train the embedded text-to-image model from scratch on procedurally generated captioned shapes.

v-prediction training on a linear schedule rescaled to zero terminal SNR (see ``srsoup.tiny.components``: with
epsilon prediction the network never took the background colour from the text) of a pixel-space
UNet2DConditionModel with a small CLIPTextModel, on 2 CPU cores in about 35 minutes at the defaults; writes the
diffusers-layout folder that ``model=tiny`` loads. Resumable:
a checkpoint is kept in ``OUT/.train_state.pt`` and picked up by a rerun with the same arguments.

    python scripts/train_tiny_t2i.py --out srsoup/tiny/weights
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from srsoup.tiny.components import (
    MAX_TOKENS,
    TRAIN_OVERRIDES,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    save_pipeline_folder,
)
from srsoup.tiny.grammar import render, sample_scenes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (diffusers layout)")
    p.add_argument("--steps", type=int, default=2600, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps before cosine decay")
    p.add_argument("--uncond-prob", type=float, default=0.1, help="caption dropout, for classifier-free guidance")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint interval in steps")
    p.add_argument(
        "--init-from",
        default=None,
        help="fine-tune the unet and text encoder of this folder instead of a fresh init",
    )
    p.add_argument(
        "--toy", action="store_true", help="tiny widths for smoke tests (the result is not a usable model)"
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    toy = dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, cross_attention_dim=16) if args.toy else {}
    tokenizer = build_tokenizer()
    if args.init_from:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(args.init_from, subfolder="unet", torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(args.init_from, subfolder="text_encoder", dtype=torch.float32)
    else:
        text_encoder = build_text_encoder(
            tokenizer, **(dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1) if args.toy else {})
        )
        unet = build_unet(sample_size=args.resolution, **toy)
    noise_scheduler = build_scheduler(**TRAIN_OVERRIDES)  # zero terminal SNR for training (see components.py)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    v_pred = noise_scheduler.config.prediction_type == "v_prediction"
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)

    def lr_at(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    state_path, start, losses = out / ".train_state.pt", 0, []
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, losses = state["step"], state["losses"]
        rng.seed(args.seed + start)
        torch.manual_seed(args.seed + start)
        print(f"resuming from step {start}")

    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train", dynamic_ncols=True)
    for step in bar:
        scenes = sample_scenes(args.batch_size, rng)
        x0 = render(scenes, args.resolution, gen) * 2 - 1
        captions = ["" if rng.random() < args.uncond_prob else s.caption for s in scenes]
        ids = tokenizer(
            captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids
        noise = torch.randn_like(x0)
        t = torch.randint(0, len(alphas_cumprod), (len(x0),))
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        hidden = text_encoder(ids).last_hidden_state
        pred = unet(xt, t, encoder_hidden_states=hidden).sample
        target = noise_scheduler.get_velocity(x0, noise, t) if v_pred else noise
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(
                loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", lr=f"{sched.get_last_lr()[0]:.2e}"
            )
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save(
                dict(
                    unet=unet.state_dict(),
                    text_encoder=text_encoder.state_dict(),
                    opt=opt.state_dict(),
                    sched=sched.state_dict(),
                    step=step + 1,
                    losses=losses,
                ),
                tmp,
            )
            tmp.replace(state_path)

    save_pipeline_folder(out, unet, text_encoder, tokenizer, build_scheduler())
    log = dict(
        init_from=args.init_from,
        prediction_type=noise_scheduler.config.prediction_type,
        train_scheduler_overrides=TRAIN_OVERRIDES,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        resolution=args.resolution,
        final_loss=sum(losses[-100:]) / max(1, len(losses[-100:])),
        wall_seconds_this_session=time.time() - t0,
        parameters=sum(p.numel() for p in params),
    )
    (out / "training.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log))


if __name__ == "__main__":
    main()
