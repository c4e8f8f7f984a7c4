"""`srsoup plan`: FLOPs from the architecture agree with torch's flop counter; counts; refusing what cannot fit."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from srsoup.errors import SrsoupError
from srsoup.planning import estimate, main
from srsoup.planning.flops import tally
from srsoup.spec import build_spec
from tests.conftest import compose

CPU = dict(device=torch.device("cpu"), dtype=torch.float32, cfg_scale=5.0, chunk_size=4)


def counted(fn) -> int:
    """torch's own count. Its formulas do not cover the CPU's fused attention kernel, so attention runs on the math
    backend here, whose matrix products it counts (the architecture's FLOPs are the same either way)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with FlopCounterMode(display=False) as counter, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        try:
            fn()
        except NotImplementedError:  # a result copied off the meta device at the very end
            pass
    return counter.get_total_flops()


def assert_close_flops(fn, rel: float = 0.10) -> int:
    ours, torch_count = tally(fn).flops, counted(fn)
    assert torch_count > 0 and abs(ours - torch_count) <= rel * torch_count, (ours, torch_count)
    return ours


@pytest.mark.parametrize("name", ["sd15", "sd35m"])
def test_tally_matches_torch_flop_counter_on_random_weight_models(tiny, name):
    from srsoup.backbones.ddim import DDIMBackbone
    from srsoup.backbones.sd3 import SD3Backbone

    cls = DDIMBackbone if name == "sd15" else SD3Backbone
    backbone = cls.from_pretrained(str(tiny / name), **CPU)
    backbone.set_steps(4)
    cond = backbone.encode_prompt("a photo of a cat")
    x = torch.randn(3, *backbone.latent_shape)
    assert_close_flops(lambda: backbone.step_distribution(x, 0, cond))
    assert_close_flops(lambda: backbone.decode(x))


def test_tally_matches_torch_flop_counter_at_full_size_on_meta():
    """SD1.5 at its published architecture, built on the meta device: no weights, seconds."""
    from srsoup.backbones.ddim import DDIMBackbone

    meta = torch.device("meta")
    backbone = DDIMBackbone.from_pretrained(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", init="random", **{**CPU, "device": meta}
    )
    backbone.set_steps(50)
    cond = backbone.encode_prompt("a photo of a cat")
    x = torch.empty(1, *backbone.latent_shape, device=meta)
    flops = assert_close_flops(lambda: backbone.step_distribution(x, 0, cond))
    assert 1.2e12 < flops < 2.0e12  # one CFG eval (two UNet rows at 64x64 latents)
    assert_close_flops(lambda: backbone.decode(x))


def test_estimate_counts_are_the_plans_and_memory_grows_with_chunk_size():
    spec = build_spec(compose("device=cpu", "seeds=[0,1]"))
    est = estimate(spec)
    assert est.groups == 4 * 2
    assert est.per_group["reward_queries"] == spec.plan.reward_queries == 1632
    assert est.per_group["denoiser_evals"] == spec.plan.denoiser_evals
    assert est.per_group["decodes"] == spec.plan.decodes
    backbone = est.parts[0]
    assert backbone.role == "backbone" and 6e6 < backbone.params < 7e6
    assert est.flops_per_group > backbone.calls["denoiser_eval"].flops * spec.plan.denoiser_evals
    smaller = estimate(build_spec(compose("device=cpu", "chunk_size=8")))
    assert smaller.activation_bytes < est.activation_bytes and smaller.weight_bytes == est.weight_bytes


def test_the_estimate_counts_no_batch_larger_than_the_group_makes():
    """A short unguided run never builds a batch of chunk_size rows: its estimate is of the batches it makes."""
    short = ("device=cpu", "guidance=none", "sampler.steps=1")
    spec = build_spec(compose(*short, "chunk_size=4096"))
    largest = max(2 * spec.plan.denoiser_evals, spec.plan.decodes, len(spec.weights))  # CFG: two rows an eval
    assert largest < 4096
    capped, fitted = estimate(spec), estimate(build_spec(compose(*short, f"chunk_size={largest}")))
    assert capped.activation_bytes == fitted.activation_bytes
    guided = estimate(build_spec(compose("device=cpu", "chunk_size=4096")))
    assert guided.activation_bytes > capped.activation_bytes


def test_plan_prints_counts_and_refuses_bad_input_in_one_line(capsys):
    assert main(["device=cpu", "seeds=[0,1]"]) == 0
    out = capsys.readouterr().out
    assert "1,632" in out and "13,056" in out  # reward queries per group, and for 4 prompts x 2 seeds
    assert "peak memory (estimate)" in out and "time (estimate)" in out
    assert main(["guidance.num_candidates=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("srsoup plan: error: guidance.num_candidates=0") and "\n" not in err


def test_run_refuses_up_front_what_cannot_fit(toy_cfg, tmp_path, monkeypatch):
    import srsoup.planning as planning
    from srsoup import runner

    monkeypatch.setattr(planning, "device_memory_bytes", lambda device: 1024)
    with pytest.raises(SrsoupError, match=r"estimated peak memory .* exceeds cpu's .* lower chunk_size"):
        runner.run(toy_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_gpu_check_runs_end_to_end_on_the_cpu_with_tiny_copies(tiny, tmp_path):
    """`make gpu-check` is for a CUDA machine; --tiny runs the same cases through the same code on the CPU."""
    import json

    from srsoup.planning.gpu_check import main as gpu_check

    assert gpu_check(["--out", str(tmp_path), "--tiny", str(tiny)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["case"] for r in results] == ["sd15", "flux_dev"]
    for r in results:
        assert r["denoiser_evals"] > 0 and r["reward_queries"] > 0 and r["evals_per_second"] > 0
        assert 0 < r["model_seconds"] <= r["wall_seconds"] and r["plan_flops"] > 0
    assert "| sd15 |" in (tmp_path / "results.md").read_text()
