"""langbench: Rust vs Python LLM agents against a real Ollama, measured and tested."""

__version__ = "0.1.0"
