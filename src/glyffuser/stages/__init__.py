"""One module per DVC stage, in pipeline order: sources, render, embed, train, sample, classifier, evaluate,
umap, figures, guide. Each has a `run_<stage>` that writes the stage's outputs, and the
command around it (`add_arguments`, `command`, `main`) that both `glyffuser <stage>` and the DVC entry
point stages/<stage>.py run; nothing outside this folder writes a stage output."""
