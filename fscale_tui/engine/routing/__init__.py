"""Routing and calibrated cascades (design §8): UniRoute-style routing over prompt clusters and
Trust-or-Escalate thresholds, measured on real (or replayed) model behaviour.

- ``tasks``: labelled task files (JSONL) and the exact messages a task is asked with.
- ``embed`` / ``clusters``: prompt embeddings (hashed TF-IDF, numpy only; or a local model's
  llama.cpp embeddings, cached on disk) and spherical K-means.
- ``profile``: run models on a task file; accuracy, stability, latency, correlation, Ψ.
- ``router``: Ψ(m)[c] (shrunk toward the model's global error, strength cross-fitted) and
  argmin Ψ + λ·cost.
- ``knobs``: representation, K, shrinkage and λ chosen on validation only; the oracle LP bound.
- ``calibrate``: exact binomial (Clopper–Pearson) bounds and fixed-sequence threshold testing.
- ``cascade``: stages, confidence signals and ``-k auto`` at run time.
- ``mmlu``: converter for the shared MMLU-Pro replay set.

numpy is imported by these modules only, never by the one-shot commands that do not route.
"""
