"""Masks -> SExtractor WEIGHT_IMAGE and FLAG_IMAGE maps."""
