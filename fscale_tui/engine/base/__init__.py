"""base: what every layer speaks and stands on, importing nothing above it — settings and paths,
state files (storage), events, errors, the output boundary and the redactor, spend, call types,
JSONL, the background writer. (ARCHITECTURE.md: the layers.)"""
