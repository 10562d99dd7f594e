"""The lowest layer, used by every other: reading batches, restoring a model's state, progress
bars and atomic file writes. It imports nothing else of dampen."""
