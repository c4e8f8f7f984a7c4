"""``storage_dtype``: weights kept narrow, cast layer by layer to the run's dtype (layerwise casting)."""

import json

import pytest
import torch

from srsoup.backbones.ddim import DDIMBackbone
from srsoup.backbones.sd3 import SD3Backbone
from srsoup.errors import SrsoupError
from srsoup.spec import build_spec
from tests.conftest import compose

CPU = torch.device("cpu")


def _load(cls, folder, storage=None, **kw):
    return cls.from_pretrained(
        str(folder), device=CPU, dtype=torch.float32, storage_dtype=storage, cfg_scale=3.0, chunk_size=8, **kw
    )


def _step_and_image(backbone):
    backbone.set_steps(4)
    x = backbone.initial_latents(torch.Generator().manual_seed(0))
    mean = backbone.step_distribution(x, 0, backbone.encode_prompt("a red circle")).mean
    return mean, backbone.decode(mean)


def test_bf16_storage_computes_as_fp32_on_bf16_rounded_weights(tiny, one_torch_thread):
    """Storage in bf16 is the fp32 model with its denoiser's and text encoder's weights rounded to bf16, exactly:
    every hooked layer is cast up for its forward, everything else was widened at load; the VAE is untouched."""
    stored = _load(DDIMBackbone, tiny / "sd15", torch.bfloat16)
    rounded = _load(DDIMBackbone, tiny / "sd15")
    for module in (rounded.unet, rounded.text_encoder):
        for p in module.parameters():
            p.data = p.data.to(torch.bfloat16).float()
    plain = _load(DDIMBackbone, tiny / "sd15")
    (m_s, img_s), (m_r, img_r), (m_p, _) = map(_step_and_image, (stored, rounded, plain))
    assert torch.equal(m_s, m_r) and torch.equal(img_s, img_r)
    assert not torch.equal(m_s, m_p)  # the rounding is real: the test would see a model left in fp32
    assert {p.dtype for p in stored.vae.parameters()} == {torch.float32}


@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_fp8_storage_keeps_layers_narrow_and_norms_wide(tiny, init, one_torch_thread):
    """fp8 storage on SD3 (MMDiT, two CLIPs, T5): Linear layers in fp8, norms and T5's token embedding (whose dtype
    the encoder's mask follows) in the compute dtype; the step runs and stays close to the fp32 model's."""
    stored = _load(SD3Backbone, tiny / "sd35m", torch.float8_e4m3fn, init=init)
    t5 = stored.text_encoders[2]
    assert stored.transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert stored.transformer.transformer_blocks[0].norm1.linear.weight.dtype == torch.float32
    assert t5.shared.weight.dtype == torch.float32 and t5.dtype == torch.float32
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    # _keep_in_fp32_modules: T5's feed-forward casts its input to wo's stored dtype, so wo must not be narrowed
    assert t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert {p.dtype for p in stored.vae.parameters()} == {torch.float32}
    mean, image = _step_and_image(stored)
    assert torch.isfinite(mean).all() and torch.isfinite(image).all()
    if init == "pretrained":
        ref, _ = _step_and_image(_load(SD3Backbone, tiny / "sd35m"))
        assert 0 < (mean - ref).abs().max() < 0.05


def test_plan_counts_stored_bytes():
    """srsoup plan's weight memory follows the storage dtype, at SD1.5's full size on the meta device: the UNet
    and text encoder (0.98B) narrow; the VAE (84M), the norms and CLIP's token embedding (38M) stay fp32:
    bf16 1 - 0.94 * 2 / 4 = 0.53 of fp32's bytes and more, fp8 1 - 0.94 * 3 / 4 = 0.30 and more."""
    from srsoup.planning import estimate

    def weights(*extra):
        spec = build_spec(compose("model=sd15", "model.init=random", "device=cpu", *extra), planning=True)
        return estimate(spec).parts[0].weight_bytes

    full, bf16, fp8 = weights(), weights("storage_dtype=bf16"), weights("storage_dtype=fp8_e4m3")
    assert 0.53 < bf16 / full < 0.57 and 0.30 < fp8 / full < 0.35


def test_plan_counts_a_wide_copy_while_fp8_weights_load():
    """fp8 weights are made or loaded in 16 bits and then cast: the largest component (SD3.5-medium's T5-XXL,
    4.76B parameters) is held in bf16 beside the stored weights once (measured: 20.9 GiB peak, estimated 20.45)."""
    from srsoup.planning import estimate

    def est(storage):
        overrides = ["model=sd35m", "model.init=random", "device=cpu", "guidance=none", f"storage_dtype={storage}"]
        return estimate(build_spec(compose(*overrides, "sampler.steps=1", "rewards=colorful_compress"), True))

    bf16, fp8 = est("bf16"), est("fp8_e4m3")
    assert bf16.load_bytes == 0  # loaded as stored
    assert 3.5e9 * 2 < fp8.load_bytes < 4.8e9 * 2  # T5's cast layers (not its embedding, not wo) in bf16
    assert fp8.peak_bytes == fp8.weight_bytes + max(fp8.activation_bytes, fp8.load_bytes) > bf16.weight_bytes


def test_run_records_storage_dtype(toy_cfg, tmp_path, one_torch_thread):
    from srsoup.runner import run

    out = run(toy_cfg("storage_dtype=bf16"), tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["storage_dtype"] == "bfloat16" and summary["fingerprint"]["storage_dtype"] == "torch.bfloat16"
    assert len(list((out / "images").glob("*"))) == 6


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["storage_dtype=fp64"],
            "storage_dtype='fp64' is not supported; valid: null, bf16, fp16, fp8_e4m3, fp8_e5m2",
        ),
        (
            ["dtype=bf16", "storage_dtype=fp16"],
            "storage_dtype='fp16' is not narrower than dtype='bf16' (the dtype layers compute in); "
            "valid: null, bf16, fp8_e4m3, fp8_e5m2",
        ),
    ],
)
def test_bad_storage_dtype_is_one_line(toy_cfg, overrides, message):
    with pytest.raises(SrsoupError) as err:
        build_spec(toy_cfg(*overrides))
    assert str(err.value) == message


def test_fp8_storage_on_mps_is_refused():
    from srsoup.devices import resolve_storage_dtype

    with pytest.raises(
        SrsoupError, match=r"^storage_dtype='fp8_e5m2': MPS has no float8 tensors; valid on MPS: null"
    ):
        resolve_storage_dtype("fp8_e5m2", torch.float32, torch.device("mps"))
    assert resolve_storage_dtype("bf16", torch.float32, torch.device("mps")) == torch.bfloat16


def test_a_loader_without_layerwise_casting_refuses_it(toy_cfg, monkeypatch):
    """A user's backbone whose from_pretrained does not take storage_dtype gets one line, not a silent no-op."""

    class Plain(DDIMBackbone):
        @classmethod
        def from_pretrained(cls, pretrained=None, *, device, dtype, cfg_scale, chunk_size=64):
            raise AssertionError("not loaded: the spec refuses first")

    monkeypatch.setattr("srsoup.spec._model", lambda model: Plain)
    with pytest.raises(SrsoupError, match=r"does not load with layerwise casting; valid: null$"):
        build_spec(toy_cfg("storage_dtype=bf16"))
