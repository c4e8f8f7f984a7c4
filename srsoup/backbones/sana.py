"""Sana (Xie et al. 2024, arXiv:2410.10629): a SanaTransformer2DModel (linear DiT) on the shared flow SDE step.

Everything the model sees is as ``SanaPipeline.__call__`` prepares it, so that a deterministic run
(``model.noise_level=0``) gives the pipeline's images when the pipeline is given a FlowMatchEuler scheduler:

- text: Gemma-2's last hidden states (``Gemma2Model``) and attention mask, as ``SanaPipeline.encode_prompt`` with
  its defaults: the prompt lowercased and stripped (``clean_caption=False``), the *complex human instruction*
  (``model.complex_human_instruction``; true = the pipeline's own lines) put before it, padded on the right to the
  instruction's tokens + ``max_sequence_length`` − 2 tokens, then the first token and the last
  ``max_sequence_length`` − 1 kept (the instruction shapes the prompt's states through causal attention only).
  The unconditional half encodes "" at ``max_sequence_length`` tokens without the instruction. Both masks go to the
  transformer as its ``encoder_attention_mask``; CFG runs the pair as one doubled batch (one eval per item);
- latents: [32, H/32, W/32] (DC-AE: 32 channels, 32x compression) from the seed's CPU generator;
- schedule: ``FlowMatchEulerDiscreteScheduler.set_timesteps(T)`` with the release's ``flow_shift`` as its shift;
  the transformer gets the scheduler's timestep σ·1000 (float32) times its ``timestep_scale``;
- decode: latents / ``scaling_factor`` through ``AutoencoderDC`` (no shift factor).

Two things differ from the release's defaults, by design. Its scheduler is Flow-DPM-Solver
(``DPMSolverMultistepScheduler`` over flow sigmas), a second-order multistep solver whose update depends on the
previous step's prediction: no Gaussian around one state, so no candidates to score; the SRSoup step is the
reference SDE on FlowMatchEuler sigmas (Euler's step at noise level 0), as for SD3.5. And the pipeline maps
``height``/``width`` to its aspect-ratio bins and resizes the image back (``use_resolution_binning``); images here
are square at ``model.resolution``, which for the release's default (1024 px) is its own bin, so nothing changes
there; at other sizes the pipeline would sample at the bin and resize, this backbone samples at the size asked.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from srsoup.backbones.flow import FlowBackbone
from srsoup.backbones.loading import open_components
from srsoup.errors import SrsoupError

#: SanaPipeline's default ``max_sequence_length``: Gemma tokens of the prompt the transformer sees.
MAX_SEQUENCE_LENGTH = 300


@dataclass
class SanaCond:
    """Text conditioning of one prompt, the CFG pair stacked as [uncond, cond]."""

    hidden: torch.Tensor  # [2, max_sequence_length, caption_channels]: Gemma-2's last hidden states
    mask: torch.Tensor  # [2, max_sequence_length]: 1 for tokens, 0 for padding (the transformer's encoder mask)


def pipeline_instruction() -> list[str]:
    """The complex human instruction ``SanaPipeline.__call__`` uses by default (read from its signature)."""
    from diffusers import SanaPipeline

    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


class SanaBackbone(FlowBackbone):
    """Sana: linear DiT, Gemma-2 text encoder, DC-AE, FlowMatchEuler sigmas with the release's shift, SDE steps."""

    def __init__(
        self,
        *,
        transformer,
        text_encoder,
        tokenizer,
        vae,
        resolution: int | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        complex_human_instruction: bool | list[str] = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if transformer.config.get("guidance_embeds", False):
            raise SrsoupError(
                "this Sana transformer has a guidance embedding (Sana-Sprint, SanaSprintPipeline): not supported; "
                "use a SanaPipeline release"
            )
        self.transformer = transformer.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # as SanaPipeline sets it (Gemma's tokenizer defaults to left)
        self.vae = vae.to(self.device).eval()
        if not (isinstance(max_sequence_length, int) and max_sequence_length >= 1):
            raise SrsoupError(f"model.max_sequence_length={max_sequence_length} must be a positive whole number")
        self.max_sequence_length = max_sequence_length
        if complex_human_instruction is True:
            complex_human_instruction = pipeline_instruction()
        lines = complex_human_instruction or []
        if not (isinstance(lines, list | tuple) and all(isinstance(line, str) for line in lines)):
            raise SrsoupError(
                f"model.complex_human_instruction={complex_human_instruction!r} must be true (SanaPipeline's), "
                "false (none) or a list of lines"
            )
        self.instruction = "\n".join(lines)
        self.resolution = self._patch_resolution(resolution, "DC-AE")

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        noise_level: float = 0.8,
        resolution: int | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        complex_human_instruction: bool | list[str] = True,
        scheduler: dict | None = None,
        device: torch.device,
        dtype: torch.dtype,
        storage_dtype: torch.dtype | None = None,
        cfg_scale: float,
        chunk_size: int = 64,
    ) -> SanaBackbone:
        """Load each component named in ``model_index.json`` (SanaPipeline's layout).

        The release's scheduler config is Flow-DPM-Solver's; its ``flow_shift`` becomes FlowMatchEuler's ``shift``
        (``scheduler`` overrides either).
        """
        from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler

        folder = open_components(
            pretrained, revision, local_files_only, dtype, init, device, storage_dtype=storage_dtype
        )
        folder.require("transformer", "text_encoder", "tokenizer", "vae", family="a Sana")
        release = folder.json("scheduler_config.json", "scheduler")
        shift = release.get("shift", release.get("flow_shift"))
        return cls(
            transformer=folder.component("transformer"),
            text_encoder=folder.component("text_encoder"),
            tokenizer=folder.tokenizer("tokenizer"),
            vae=folder.vae(cls=AutoencoderDC),
            scheduler=folder.scheduler(
                FlowMatchEulerDiscreteScheduler, {**({"shift": shift} if shift else {}), **(scheduler or {})}
            ),
            noise_level=noise_level,
            resolution=resolution,
            max_sequence_length=max_sequence_length,
            complex_human_instruction=complex_human_instruction,
            device=device,
            dtype=dtype,
            cfg_scale=cfg_scale,
            chunk_size=chunk_size,
        )

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent cell: DC-AE halves the side once per encoder block after the first (32)."""
        return 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.resolution // self.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> SanaCond:
        text, mask = self._encode(prompt.lower().strip(), self.instruction)
        keep = [0, *range(-self.max_sequence_length + 1, 0)]  # the first token and the prompt's last ones
        text, mask = text[:, keep], mask[:, keep]
        uncond, uncond_mask = self._encode("", "")
        return SanaCond(hidden=torch.cat([uncond, text]).to(self.dtype), mask=torch.cat([uncond_mask, mask]))

    def _encode(self, prompt: str, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Gemma's last hidden states and the attention mask of ``instruction + prompt``, padded on the right."""
        length = self.max_sequence_length
        if instruction:
            length += len(self.tokenizer.encode(instruction)) - 2
        tokens = self.tokenizer(
            [instruction + prompt],
            padding="max_length",
            max_length=length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0], mask

    # --- per step -----------------------------------------------------------------------------------------
    def _velocity(self, x: torch.Tensor, timestep: float, cond: SanaCond) -> torch.Tensor:
        scale = self.transformer.config.timestep_scale

        def forward(model_in: torch.Tensor, n: int) -> torch.Tensor:
            t = torch.full((2 * n,), timestep, device=self.device, dtype=torch.float32) * scale
            return self.transformer(
                model_in,
                encoder_hidden_states=cond.hidden.repeat_interleave(n, dim=0),
                encoder_attention_mask=cond.mask.repeat_interleave(n, dim=0),
                timestep=t,
                return_dict=False,
            )[0]

        return self._cfg(x, forward)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self._vae_decode(x0)
