"""gpuhost/: what a GPU host needs (the bundle, the synthetic gemma3:latest-shaped GGUF)."""
