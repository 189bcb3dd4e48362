"""Dataset loaders: raw CRS files -> catalog items and per-turn recommendation samples."""
