"""Training the default model's generator on the procedural world, in the Wan 2.1 formats.

* :mod:`engine.generator.clipcache`: rendered clips of ``engine.data`` stored once as uint8 files.
* :mod:`engine.generator.runs`: the training loop shared by the trainers (resumable checkpoints,
  JSONL logs, held-out evaluation, loss-curve PNG).
* :mod:`engine.generator.vae`: ``AutoencoderKLWan`` trained on clip crops; per-channel latent
  statistics written into its config as Wan's ``latents_mean``/``latents_std``.
* :mod:`engine.generator.text`: the tokenizer over the world's vocabulary and the frozen UMT5 encoder;
  out-of-vocabulary words.
* :mod:`engine.generator.video`: ``WanTransformer3DModel`` trained with flow matching on VAE latents of
  captioned orbit clips (caption dropout for classifier-free guidance); the ``WanPipeline`` folder.
* :mod:`engine.generator.cli`: ``python -m engine train vae|video``.
"""
