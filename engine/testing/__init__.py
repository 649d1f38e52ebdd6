"""Small models and configurations for tests and benchmarks.

- ``tiny``: tiny random models of the real architectures and the bundles built from them;
- ``dry_run``: the published full-size configurations on the meta device.
"""
