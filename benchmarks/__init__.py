"""Reproducible measurements; each script writes JSON with the machine and the commit to results/."""
