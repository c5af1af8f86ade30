"""The GPU benchmark suite runs end to end at tiny size on CPU (the real run needs a GPU)."""

import json
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_gpu_suite_smoke_on_cpu(tmp_path):
    import gpu

    results = gpu.main(["--smoke", "--out", str(tmp_path)])
    (written,) = tmp_path.glob("gpu-smoke-*.json")
    saved = json.loads(written.read_text())
    assert saved["smoke"] is True and saved["date"] and saved["device"]["cuda"] is None
    train = saved["train"]
    for name in ("glyffuser_style", "ours_eager", "ours_compiled"):
        assert train[name]["img_per_s"] > 0 and train[name]["achieved_tflops"] > 0
    assert train["ours_eager"]["flop_per_image"] > 1e6  # counted by torch.utils.flop_counter
    sampling = saved["sampling"]
    for name in ("plain_loop", "glyffuser_sample", "glyffuser_sample_compiled"):
        assert sampling[name]["glyphs_per_s"] > 0 and sampling[name]["glyphs"] == 4
    assert sampling["speedup"] > 0 and sampling["speedup_compiled"] > 0 and sampling["glyffuser_sample_compiled"]["compile_s"] > 0
    assert results["unet_parameters"] == saved["unet_parameters"]


def test_peak_lookup_prefers_the_exact_variant():
    import common

    assert common.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert common.bf16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert common.bf16_peak("NVIDIA H200") == 989.4
    assert common.bf16_peak("cpu") is None
