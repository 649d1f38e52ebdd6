"""Text to 3D scene: the generation pipeline and everything around it.

- ``vist3a``: ``Vist3aPipeline`` (text -> video latent -> 3D decoder -> scene) and the decoder interface;
- ``decoders``: the built-in 3D decoder kinds (stitched checkpoint, released AnySplat-stitched);
- ``settings``: generation settings, runtime options, model bundles (torch-free: the add-on imports it);
- ``run_folder``: writing and re-reading a run folder (scene files, cameras, preview, metadata);
- ``memory``: the automatic memory policy (CPU offload, VAE tiling);
- ``model_choice``: which bundle ``demo`` / ``generate`` use when none is named (ends with the embedded
  ``models/default``; torch-free: the add-on imports it);
- ``cli``, ``demo``: ``python -m engine generate`` and ``python -m engine demo``.

Nothing is imported here, so ``engine.pipeline.settings`` stays importable without torch.
"""
