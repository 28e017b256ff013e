"""Evaluation after training: significance tests between systems and the paper's results tables."""
