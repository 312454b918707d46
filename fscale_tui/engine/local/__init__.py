"""Embedded local models (the ``[local]`` extra): llama.cpp servers for small GGUF models."""
