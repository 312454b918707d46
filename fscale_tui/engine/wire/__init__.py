"""wire: the one place a chat request is built and sent (``client``), its send limiter shared by
every process (``ratelimit``), the state processes share (``coordination``) and the HTTP
transport (``http``). (ARCHITECTURE.md: the layers.)"""
