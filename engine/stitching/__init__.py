"""Model stitching (VIST3A §2-3): join a video VAE's latent space to a 3D network at layer k*.

- ``layer_spec``: the stitching conv (spec strings such as ``conv3d_k5x3x3_o1024_s1x2x2_p2x1x1``,
  ``StitchingLayer``: latent (B, C, T_lat, h, w) -> patch tokens (B, T, h'*w', D)).
- ``search``: ``find_stitch_layer``, one streaming pass with float64 normal equations per candidate layer.
- ``vae``: adapters over the diffusers video VAEs (Wan, CogVideoX, HunyuanVideo, SVD); imports diffusers.
- ``sources``: clips (folders, synthetic) and the activation source over ``engine.models`` networks.
- ``cli``: ``python -m engine stitch search``.

Submodules are imported explicitly (``from engine.stitching.search import find_stitch_layer``) so that
importing one does not pull in diffusers or the 3D models.
"""
