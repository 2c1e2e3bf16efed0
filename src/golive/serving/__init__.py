"""golive serve: the Open Inference Protocol v2 server (HTTP + gRPC), its batcher, metrics and statistics, and the
Triton model-repository export. Imported only by the CLI and by tests: it needs the ``serve`` extra."""
