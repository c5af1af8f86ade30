"""The files stages hand to each other, each format read and written in one module: atomic writes,
Parquet tables, PNG <-> tensors, the glyph tables, the embeddings table, the model folder, checkpoints,
the sources manifest, fonts, Unihan, and content hashes. Readers here import no model or stage code,
so a stage that only reads an artifact does not depend on the code that wrote it."""
