"""The 3D reconstruction networks VIST3A decodes with: AnySplat (Gaussians) and VGGT (points).

Written from scratch; they load the official checkpoints (``lhjiang/anysplat``, ``facebook/VGGT-1B``)
unchanged. Entry points (import the submodules; this package does not import torch):

* ``VGGT.from_pretrained(path_or_hub_id)`` / ``AnySplat.from_pretrained(...)``, ``model.save_pretrained(dir)``;
  ``engine.models.loading.load_model(path_or_hub_id) -> (model, report)`` when the type is not known
  (checkpoint files: ``engine.models.checkpoint``).
* ``engine.models.anysplat.AnySplat`` / ``engine.models.vggt.VGGT``: ``predict(images)`` with frames in
  [0, 1], (S, 3, H, W) or (B, S, 3, H, W), H and W multiples of 14 -> ``AnySplatPrediction`` /
  ``VGGTPrediction`` (``engine.models.outputs``), convertible to ``Cameras``, ``GaussianScene`` and
  ``PointScene``.
* Stitching access: ``model.stage_names()``, ``model.trace(images, stages)``,
  ``model.forward_from(stage, tokens, images)`` (see ``engine.models.aggregator``).
* Hyper-parameters: ``engine.models.config`` (full-size defaults, ``tiny_*_config()`` for tests).
* CLI: ``python -m engine reconstruct FRAMES --model PATH --out DIR`` (``engine.models.cli``).
"""
