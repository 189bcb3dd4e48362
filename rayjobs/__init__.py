"""Thin entries, one per stage: `python -m rayjobs.<stage>` locally or under `ray job submit`."""
