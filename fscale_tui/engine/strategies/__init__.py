"""Generation strategies behind ``engine.generate``: selection (judge, vote, weighted, usc,
tournament) and step-wise search (beam, dvts)."""
