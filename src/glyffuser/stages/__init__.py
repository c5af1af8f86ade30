"""One module per DVC stage, in pipeline order: sources, render, embed, train, sample, classifier, evaluate,
umap, figures, guide. Each has a `run_<stage>` that `glyffuser <stage>` (cli.py) calls and writes the
stage's outputs; nothing outside this folder writes a stage output."""
