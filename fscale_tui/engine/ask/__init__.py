"""ask: the one path to a model (``asker``): health, substitution, events, cancellation; a reply
becomes a vote or text here (``parsing``); model health verdicts (``health``).
(ARCHITECTURE.md: the layers.)"""
