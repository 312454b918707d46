"""Learning from deployment (design §7): the call log, ratings, shadow challengers, evolve.

- :mod:`.store` — the SQLite call log + rating table: records, feedback, damaged files;
  :mod:`.migrations` — its schema and named migrations; :mod:`.rows` — what the learning
  reads of it (the rating replay, the rows of the label-free estimate).
- :mod:`.service` — the call log as the engine uses it: writes on the background writer,
  ratings snapshots, reads for views.
- :mod:`.ratings` — Elo with expected scores against leave-one-out consensus and feedback
  (displayed, for reference).
- :mod:`.reliability` — each model's accuracy estimated without labels (Dawid–Skene EM over
  every logged vote, feedback clamped): what the decisions follow.
- :mod:`.challenger` — Thompson-sampled shadow challengers (several while outsiders are
  uncertain), asked beside the panel.
- :mod:`.evolve` — the champion panel from the estimates, written to config.toml on ``--apply``.

Engine code: imports neither typer nor textual.
"""
