"""Shipped presets: devices, clusters, models (YAML files read with importlib.resources)."""
