"""File formats: standard 3DGS PLY, point-cloud PLY, cameras JSON, atomic writes."""
