"""Media transcoding: long CPU-bound jobs in worker processes, with progress and heartbeats.
Run: ``python -m examples.transcode [--videos N --frames N --lease S]``; see `examples.transcode.tasks`."""
