"""GPU check of the image path (run by hand on a CUDA host with the `ml` extra): fp16, cancel, the memory switches,
and seconds per 512x512 image on a Stable Diffusion 1.5-shaped pipeline with random weights (speed does not
depend on the weights). `python -m bench.images_gpu_check`; writes $OUT/report.json."""
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import torch

from services.inference.images import ImageCancelled, ImageGenerator
from services.inference.settings import InferenceSettings
from tests.fixtures.tiny_diffusion import build_tiny_pipeline, clip_vocab

OUT = Path(os.environ.get("OUT", "/tmp/out"))
report = {"torch": torch.__version__, "cuda": torch.cuda.get_device_name(0)}


def gen(model, **env):
    return ImageGenerator(InferenceSettings(AION_IMAGE_MODEL=str(model), AION_DATA_DIR="/tmp/d",
                                            AION_IMAGE_MAX_STEPS="50000", **env))


async def one(g, steps=2, size=64, seed=1, job_id=None):
    job = g.new_job(prompt="a lighthouse at dusk", negative_prompt="blurry", width=size, height=size, steps=steps,
                    guidance_scale=7.5, seed=seed, job_id=job_id)
    t = time.perf_counter()
    r = await g.run(job)
    return r, time.perf_counter() - t


async def tiny_checks():
    model = build_tiny_pipeline(Path("/tmp/tiny-sd"))
    g = gen(model)
    r1, _ = await one(g)
    r2, _ = await one(g)
    report["tiny"] = {"device": g.device, "dtype": str(g._pipe.unet.dtype), "png_bytes": len(r1.pngs[0]),
                      "same_seed_same_png": r1.pngs[0] == r2.pngs[0]}
    job = g.new_job(prompt="slow", negative_prompt=None, width=64, height=64, steps=50000, guidance_scale=7.5,
                    seed=1, job_id="long")
    task = asyncio.create_task(g.run(job))
    while job.step < 3:
        await asyncio.sleep(0.01)
    g.cancel("long")
    try:
        await task
        report["tiny"]["cancel"] = "not cancelled"
    except ImageCancelled:
        report["tiny"]["cancel"] = f"cancelled at step {job.step} of 50000"
    g.close()


def sd15_shaped(folder: Path) -> Path:
    if (folder / "model_index.json").exists():
        return folder
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    with torch.device("cuda"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            sample_size=512)
        tok = CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=77)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                            num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
                                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae.half(), text_encoder=text.half(), tokenizer=tok, unet=unet.half(),
                                   scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                           beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                                                           steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


async def sd15_timing():
    model = sd15_shaped(Path("/tmp/sd15-random"))
    results = {}
    for name, env in (("default (vae slicing)", {}), ("attention slicing", {"AION_IMAGE_ATTENTION_SLICING": "true"}),
                      ("model cpu offload", {"AION_IMAGE_CPU_OFFLOAD": "true"})):
        g = gen(model, **env)
        await one(g, steps=2, size=512)  # load + warm up
        torch.cuda.reset_peak_memory_stats()
        times = []
        for seed in range(3):
            _, s = await one(g, steps=20, size=512, seed=seed)
            times.append(round(s, 3))
        results[name] = {"s_per_image_512px_20_steps": times, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                         "dtype": str(g._pipe.unet.dtype)}
        g.close()
        del g
        torch.cuda.empty_cache()
    report["sd15_shaped_random"] = results


async def main():
    await tiny_checks()
    sys.stdout.write(json.dumps(report) + "\n")
    await sd15_timing()


try:
    asyncio.run(main())
finally:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report, indent=1))
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
