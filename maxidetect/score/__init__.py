"""Per-detection contaminant scores (MD_CONTAM, MD_CLASS)."""
