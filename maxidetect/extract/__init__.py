"""Source extraction: the SExtractor configuration (one for every engine),
the real SExtractor binary, the in-process SEP engine, catalogue formats."""
