"""The default model's 3D teachers and caption scorer, trained on the procedural world (``engine.data``).

* ``engine.teachers.configs``: the small AnySplat / VGGT configurations (same code as the full models).
* ``engine.teachers.data``: cached multi-view samples (input views, held-out views, depth, cameras) and
  their normalisation to the networks' convention (first camera's frame, unit mean point distance).
* ``engine.teachers.losses``: camera, depth, point and rendering losses; held-out metrics.
* ``engine.teachers.train``: the resumable trainer (``python -m engine teacher train``).
* ``engine.teachers.caption``: the CLIP-style caption scorer (a transformers ``CLIPModel``) and its trainer.

Import the submodules; this package does not import torch.
"""
