"""Differentiable Gaussian rasterization (gsplat on CUDA, pure PyTorch on the CPU)."""
