"""crs-augment core: pure, testable stage logic (no Ray imports at module level)."""

__version__ = "0.1.0"
