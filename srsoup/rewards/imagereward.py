"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation") through its own package, an optional extra: ``pip install 'srsoup[imagereward]'``.

The package (``image-reward``, module ``ImageReward``) holds the BLIP-based model; it is not re-implemented here.
``pretrained`` is the package's model name (``ImageReward-v1.0``, fetched from THUDM/ImageReward into
``download_root``) or a folder holding ``ImageReward.pt`` and ``med_config.json``. BLIP's text side also loads the
``bert-base-uncased`` tokenizer from the hub, so offline use needs it in the hub cache too. Scores are the
package's (standardized, about −2…2); images go through PIL as the package expects.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srsoup.errors import SrsoupError
from srsoup.rewards.clipscore import resolve_device


def import_image_reward():
    """The ``ImageReward`` module, or one line saying how to install it (or why it did not import)."""
    try:
        import ImageReward
    except ModuleNotFoundError as err:
        if err.name not in (None, "ImageReward"):
            raise SrsoupError(
                f"reward 'imagereward': the image-reward package is installed but needs {err.name!r}, which is "
                f"missing; reinstall with `pip install 'srsoup[imagereward]'`"
            ) from None
        raise SrsoupError(
            "reward 'imagereward' needs the optional package image-reward: `pip install 'srsoup[imagereward]'` "
            "(or drop imagereward from the reward set)"
        ) from None
    except ImportError as err:
        raise SrsoupError(
            f"reward 'imagereward': the image-reward package failed to import ({err}); it pins old transformers "
            "APIs, so install it in an environment whose transformers it supports".splitlines()[0]
        ) from None
    return ImageReward


class ImageRewardScore:
    def __init__(
        self,
        pretrained: str = "ImageReward-v1.0",
        download_root: str | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        rm = import_image_reward()
        dev = resolve_device(device)
        kwargs = {"device": str(dev)}
        folder = Path(pretrained).expanduser()
        if folder.is_dir():
            name = str(folder / "ImageReward.pt")
            # The keyword for the BLIP config changed name across the package's releases.
            params = inspect.signature(rm.load).parameters
            key = "med_config" if "med_config" in params else "med_config_path"
            kwargs[key] = str(folder / "med_config.json")
        else:
            name = pretrained
            if download_root:
                kwargs["download_root"] = str(Path(download_root).expanduser())
        try:
            self.model = rm.load(name, **kwargs)
        except Exception as err:  # noqa: BLE001 - any loading failure becomes one actionable line
            raise SrsoupError(
                f"reward 'imagereward': {pretrained} is not available locally ({type(err).__name__}); download: "
                "`huggingface-cli download THUDM/ImageReward ImageReward.pt med_config.json --local-dir <folder>` "
                "or set rewards.imagereward.pretrained=<folder>"
            ) from None
        self.model.eval()
        self.dtype = dtype  # the package runs in fp32; kept for the common reward signature

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        arr = (
            (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        )
        pils = [Image.fromarray(a) for a in arr]
        scores = torch.empty(len(pils))
        for prompt in dict.fromkeys(prompts):
            idx = [i for i, p in enumerate(prompts) if p == prompt]
            out = self.model.score(prompt, [pils[i] for i in idx])
            scores[idx] = torch.tensor(out if isinstance(out, list) else [out], dtype=torch.float32).reshape(-1)
        return scores
