"""VIST3A engine: text -> video latent -> stitched 3D decoder -> Gaussians / points + cameras.

The package root stays light (no torch import) so that small pure-Python parts, such as the worker
protocol and the file-format readers, can be used from Blender's own Python.
"""

__version__ = "0.1.0"
