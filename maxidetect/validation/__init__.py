"""What the masks buy, measured: simulated frames with truth, scoring
against truth, the catalogue benchmark, model comparison."""
