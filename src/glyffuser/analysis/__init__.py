"""Measurements and plots the evaluate, umap and figures stages use: the radical judge (judge.py),
sample-quality metrics, stroke fidelity, and the diffusion-geometry plots."""
