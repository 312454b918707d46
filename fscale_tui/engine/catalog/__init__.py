"""catalog: which models exist and which to ask — config.toml and the built-ins read into
``Settings`` (``config``, ``builtins``), the selection rules (``registry``) and the catalogue as
the views see it (``service``). (ARCHITECTURE.md: the layers.)"""
