"""The committed default generator parts (models/default/generator): format, size and a quality floor."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.generator.clipcache import ClipCache
from engine.generator.vae import psnr, reconstruct

GENERATOR = Path(__file__).resolve().parent.parent / "models" / "default" / "generator"
# Held-out reconstruction PSNR of the committed VAE, measured when it was committed, minus a margin for
# other CPUs (see docs/default_model.md for the figures).
VAE_PSNR_FLOOR = 20.0  # measured 21.61 and 22.68 dB on these two clips (run 4, step-3750 VAE)


def test_committed_vae_is_a_wan_vae_in_fp16_with_latent_statistics():
    from diffusers import AutoencoderKLWan

    weights = load_file(str(GENERATOR / "vae" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    vae = AutoencoderKLWan.from_pretrained(str(GENERATOR / "vae"), torch_dtype=torch.float32)
    assert vae.config.z_dim == 16 and vae.config.temperal_downsample == [False, True, True]
    assert len(vae.config.latents_mean) == 16 and all(s > 0 for s in vae.config.latents_std)
    size = sum(p.stat().st_size for p in GENERATOR.rglob("*") if p.is_file())
    assert size <= 18 * 2**20, f"the generator parts take {size / 2**20:.1f} MB, the budget is 18 MB"


def test_committed_vae_reconstructs_held_out_clips_above_its_floor():
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(str(GENERATOR / "vae"), torch_dtype=torch.float32).eval()
    clips = ClipCache(None, "heldout", 2)  # 13 x 128 x 128 orbits of held-out scenes
    with torch.no_grad():
        for index in range(2):
            video = clips.frames(index).permute(1, 0, 2, 3)[None]
            value = psnr(reconstruct(vae, video), video)
            assert value >= VAE_PSNR_FLOOR, f"held-out clip {index}: {value:.2f} dB"


# Caption check of the shipped model's first frames on the first 8 held-out captions (seed i for caption i),
# measured when it was committed (session 6: 50 % of 28 named colours, 5 % of 20 relations), minus a margin for
# other CPUs; a prompt-blind or random generator shows next to none of the named colours.
COLOUR_FLOOR = 0.3


def test_the_shipped_model_draws_the_named_colours_of_held_out_captions():
    import numpy as np

    from engine.data import SyntheticClipDataset, generate_scene
    from engine.generator.quality import check_frame
    from engine.pipeline.settings import ModelBundle, RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline

    model = GENERATOR.parent
    bundle = ModelBundle.load(model)
    pipe = Vist3aPipeline.from_pretrained(str(model), runtime=RuntimeOptions(device="cpu", dtype="float32"))
    dataset = SyntheticClipDataset(8, seed=0, num_frames=1, height=128, width=128, split="heldout")
    colours = []
    for index in range(8):
        scene = generate_scene(dataset.item_seed(index))
        settings = bundle.generation_settings({"prompt": scene.caption, "seed": index})
        settings = settings.resolved(pipe.default_conditioning)
        latent = pipe.denormalize_latent(pipe.sample_latent(settings, index))
        frame = pipe.decode_frames(latent)[0, 0].clamp(0, 1).permute(1, 2, 0).numpy()
        colours += list(check_frame(frame, scene).colors_visible.values())
    pipe.release()
    assert np.mean(colours) >= COLOUR_FLOOR, f"{np.mean(colours):.0%} of {len(colours)} named colours visible"
