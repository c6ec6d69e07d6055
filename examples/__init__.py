"""Runnable examples of pageq (docs/examples.md): ``python -m examples.orders``, ``python -m
examples.transcode``, ``python -m examples.ledger``, from the repository's root. Each uses the embedded
database unless PAGEQ_DSN is set, and finishes by itself."""
