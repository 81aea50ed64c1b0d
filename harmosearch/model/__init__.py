"""The model: loading (open_clip names, hf-hub, local files, bundled), the one-pass
encoder of global and dense vectors, query lexemes, and the one module that touches CUDA."""
