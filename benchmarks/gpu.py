"""GPU suite: training and sampling throughput of the GPU profile, ours against a glyffuser-style loop.

    python benchmarks/gpu.py            # on one CUDA GPU: about 5-8 minutes on an H100/H200
    python benchmarks/gpu.py --smoke    # the same suite at tiny size on CPU (tests/test_benchmarks.py)

Training, same UNet (params.yaml + profiles/gpu.yaml: 128 px, 129 M parameters with 384-d text), same device:
- glyffuser-style step: fp16 autocast + GradScaler, batch 16, eager, plain AdamW, and the text
  encoder (MiniLM-L6's BERT shape, random weights: its cost, not its answers, matters here) run on
  every batch's token ids;
- our step: the train stage's own step function (glyffuser.diffusion.training.TrainStep, built by build_training):
  stored text embeddings, bf16 autocast, batch 128, channels_last, fused AdamW, min-SNR loss,
  gradient clipping, EMA — eager, then torch.compile'd.
FLOPs per training image come from torch.utils.flop_counter on one forward+backward; achieved
TFLOP/s and the share of the device's dense bf16 peak follow from the measured img/s.

Sampling, 20-step DPM-Solver++ with guidance 5, same UNet: a plain loop (fp32, eager, conditional
and unconditional as two forwards) against glyffuser's `sample()` (bf16 autocast on CUDA, both
halves in one batched forward), eager and with the UNet torch.compile'd (`sample.compile`; the
compile's own time is reported apart). Weights are random: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bf16_peak, write_result  # noqa: E402
from timing import TEXT_DIM, sync, text_batch, time_steps, train_ours  # noqa: E402

from glyffuser.diffusion.process import sample, solver, training_scheduler  # noqa: E402
from glyffuser.diffusion.unet import build_unet, count_parameters, denoise, image_size  # noqa: E402
from glyffuser.params import load_params  # noqa: E402
from glyffuser.profiles import with_profile  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512, type_vocab_size=2)


def minilm_shaped_encoder(device: torch.device) -> tuple[torch.nn.Module, str]:
    """A BERT with all-MiniLM-L6-v2's shape; transformers' BertModel if importable, else torch's own layers."""
    try:
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig(**MINILM), add_pooling_layer=False)
        kind = "transformers BertModel (MiniLM-L6 shape)"

        def encode(ids, mask):
            return model(input_ids=ids, attention_mask=mask).last_hidden_state
    except ImportError:
        emb = torch.nn.Embedding(MINILM["vocab_size"], 384)
        layer = torch.nn.TransformerEncoderLayer(384, 12, 1536, batch_first=True, activation="gelu")
        stack = torch.nn.TransformerEncoder(layer, 6)
        model = torch.nn.ModuleDict({"emb": emb, "stack": stack})
        kind = "torch TransformerEncoder (MiniLM-L6 shape)"

        def encode(ids, mask):
            return stack(emb(ids), src_key_padding_mask=~mask.bool())
    model.to(device).eval()
    model.encode = encode
    return model, kind


def token_batch(batch: int, gen: torch.Generator, device: torch.device):
    """Token ids (B, L) and mask for prompts of 4..20 tokens (definitions average 10.5), padded to the longest."""
    lengths = torch.randint(4, 21, (batch,), generator=gen)
    length = int(lengths.max())
    ids = torch.randint(1000, MINILM["vocab_size"], (batch, length), generator=gen)
    mask = torch.arange(length)[None] < lengths[:, None]
    return ids.to(device), mask.to(device)


def train_glyffuser_style(p, device, batch, warmup, steps) -> dict:
    torch.manual_seed(0)
    # the glyffuser's own design: every pixel a UNet cell (no patches), epsilon, unshifted schedule
    unet = build_unet(p.resolution, TEXT_DIM, p.block_channels, p.layers_per_block, p.attention_levels,
                      p.attention_head_dim, p.pooled_text).to(device)
    encoder, kind = minilm_shaped_encoder(device)
    sched = training_scheduler(p.schedule, "epsilon", False)
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type)
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, 1, p.resolution, p.resolution, generator=gen) * 2 - 1).to(device)

    def step():
        ids, mask = token_batch(batch, gen, device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16):
            text = encoder.encode(ids, mask)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.float16):
            pred = denoise(unet, sched.add_noise(x0, noise, t), t, text, mask)
            loss = F.mse_loss(pred.float(), noise)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    first, per_step = time_steps(step, warmup, steps, device)
    return {"recipe": "fp16 autocast + GradScaler, eager, plain AdamW, text encoder per batch", "encoder": kind,
            "batch": batch, "img_per_s": round(batch / per_step, 1), "first_step_s": round(first, 2)}


@torch.inference_mode()
def plain_sampling_loop(unet, config: dict, text, mask, empty_text, empty_mask, seeds, steps, guidance) -> torch.Tensor:
    """The textbook loop: fp32, eager, conditional and unconditional as two forwards per step."""
    device = unet.device
    sched = solver("dpmsolver++", config)
    sched.set_timesteps(steps, device=device)
    res = image_size(unet)
    x = torch.cat([torch.randn(1, 1, res, res, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)
    for t in sched.timesteps:
        tt = t.expand(len(seeds))
        cond = denoise(unet, x, tt, text, mask)
        uncond = denoise(unet, x, tt, empty_text, empty_mask)
        x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x


def sampling(p, device, glyphs: int, batch: int, steps: int, compile_backend: str, guidance: float = 5.0) -> dict:
    torch.manual_seed(0)
    unet = build_unet(p.resolution, TEXT_DIM, p.block_channels, p.layers_per_block, p.attention_levels,
                      p.attention_head_dim, p.pooled_text, p.patch_size).to(device).eval()
    config = dict(training_scheduler(p.schedule, p.prediction, p.zero_terminal_snr, snr_scale=p.snr_scale()).config)
    gen = torch.Generator().manual_seed(0)
    text, mask = text_batch(glyphs, gen, device)
    empty, _ = text_batch(1, gen, device, length=2)
    empty = empty[0, :2].cpu()
    compiled = torch.compile(unet, backend=compile_backend)
    text_length = 64  # what GlyffuserPipeline(compile=True) pads to: the encoder's max_length

    def ours(model, seeds, sl, length=None, n_steps=steps):
        sample(model, config, text[sl].cpu(), mask[sl].cpu(), empty, seeds, n_steps, guidance, "dpmsolver++",
               text_length=length)

    results = {}
    for name in ("plain_loop", "glyffuser_sample", "glyffuser_sample_compiled"):
        if name == "glyffuser_sample_compiled":  # compile on the timed shapes: two steps of one full batch
            sync(device)
            t0 = time.perf_counter()
            ours(compiled, list(range(batch)), slice(0, batch), text_length, n_steps=2)
            sync(device)
            compile_s = time.perf_counter() - t0
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, glyphs, batch):
            sl = slice(s, s + batch)
            seeds = list(range(s, min(s + batch, glyphs)))
            if name == "plain_loop":
                n = len(seeds)
                plain_sampling_loop(unet, config, text[sl].float(), mask[sl], empty[None].expand(n, -1, -1).float().to(device),
                                    torch.ones(n, 2, dtype=torch.bool, device=device), seeds, steps, guidance)
            elif name == "glyffuser_sample":
                ours(unet, seeds, sl)
            else:
                ours(compiled, seeds, sl, text_length)
        sync(device)
        seconds = time.perf_counter() - t0
        results[name] = {"glyphs": glyphs, "batch": batch, "seconds": round(seconds, 2),
                         "glyphs_per_s": round(glyphs / seconds, 2)}
    results["plain_loop"]["recipe"] = "fp32, eager, conditional and unconditional as two forwards"
    results["glyffuser_sample"]["recipe"] = "glyffuser.diffusion.process.sample: bf16 autocast on CUDA, one batched forward"
    results["glyffuser_sample_compiled"]["recipe"] = (f"the same with the UNet torch.compile'd ({compile_backend}), "
                                                      "text padded to 64 tokens: GlyffuserPipeline(compile=True)")
    results["glyffuser_sample_compiled"]["compile_s"] = round(compile_s, 1)
    plain = results["plain_loop"]["glyphs_per_s"]
    results["speedup"] = round(results["glyffuser_sample"]["glyphs_per_s"] / plain, 2)
    results["speedup_compiled"] = round(results["glyffuser_sample_compiled"]["glyphs_per_s"] / plain, 2)
    results["steps"], results["guidance"], results["sampler"] = steps, guidance, "dpmsolver++"
    return results


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fitting(run, batch: int, device: torch.device, **kwargs) -> dict:
    """run(batch=...) at the largest of batch, batch/2, batch/4 that fits in device memory."""
    for b in (batch, batch // 2, batch // 4):
        try:
            out = run(batch=b, **kwargs)
            if b != batch:
                out["out_of_memory_at_batch"] = batch
            return out
        except torch.OutOfMemoryError:
            print(f"out of memory at batch {b}", flush=True)
            free(device)
    raise SystemExit("out of memory even at a quarter of the batch")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the suite runs")
    parser.add_argument("--params", type=Path, help="a full params file (default: params.yaml with the profile gpu, "
                                                    "or smoke with --smoke, applied: profiles/ hold differences only)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device: run with --smoke to check the suite on CPU")
    if args.params:
        p = load_params(args.params).train
    else:
        p = with_profile("smoke" if args.smoke else "gpu", ROOT / "params.yaml", ROOT).train
    if args.smoke:
        sizes = dict(g_batch=2, o_batch=4, warmup=1, steps=2, compile_backend="eager", glyphs=4, s_batch=2, s_steps=3)
    else:  # no cudnn.benchmark: the train stage does not set it, and this times the train stage's step
        sizes = dict(g_batch=16, o_batch=p.batch_size, warmup=10, steps=30, compile_backend="inductor", glyphs=256,
                     s_batch=128, s_steps=20)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    unet_params = count_parameters(build_unet(p.resolution, TEXT_DIM, p.block_channels, p.layers_per_block,
                                              p.attention_levels, p.attention_head_dim, p.pooled_text, p.patch_size))
    print(f"{name}: UNet {unet_params / 1e6:.1f} M parameters at {p.resolution} px "
          f"({p.patch_size}x{p.patch_size} patches)", flush=True)

    train = {"glyffuser_style": train_glyffuser_style(p, device, sizes["g_batch"], sizes["warmup"], sizes["steps"] * 2)}
    print("glyffuser-style:", train["glyffuser_style"], flush=True)
    free(device)
    train["ours_eager"] = fitting(lambda batch: train_ours(p, device, batch, sizes["warmup"], sizes["steps"], None,
                                                           count_flops=True), sizes["o_batch"], device)
    print("ours, eager:", train["ours_eager"], flush=True)
    free(device)
    train["ours_compiled"] = fitting(lambda batch: train_ours(p, device, batch, sizes["warmup"], sizes["steps"],
                                                              sizes["compile_backend"]), sizes["o_batch"], device)
    print("ours, compiled:", train["ours_compiled"], flush=True)
    flop = train["ours_eager"]["flop_per_image"]
    peak = bf16_peak(name)
    for row in train.values():
        row["achieved_tflops"] = float(f"{row['img_per_s'] * flop / 1e12:.3g}")  # 3 significant digits: the smoke's
        # tiny UNet on a busy CPU is a few GFLOP/s, which 4 decimals of TFLOP/s round to 0
        row["share_of_bf16_peak"] = round(row["achieved_tflops"] / peak, 3) if peak else None
    train["speedup_vs_glyffuser_style"] = round(train["ours_compiled"]["img_per_s"] / train["glyffuser_style"]["img_per_s"], 2)
    train["speedup_eager_vs_glyffuser_style"] = round(train["ours_eager"]["img_per_s"] / train["glyffuser_style"]["img_per_s"], 2)
    free(device)
    samp = sampling(p, device, sizes["glyphs"], sizes["s_batch"], sizes["s_steps"], sizes["compile_backend"])
    print("sampling:", samp, flush=True)
    results = {"smoke": args.smoke, "gpu": name, "bf16_peak_tflops": peak, "unet_parameters": unet_params,
               "resolution": p.resolution, "tflop_per_training_image": round(flop / 1e12, 4), "train": train,
               "sampling": samp}
    write_result("gpu-smoke" if args.smoke else "gpu", results, args.out)
    return results


if __name__ == "__main__":
    main()
