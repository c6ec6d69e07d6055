"""Security building blocks, pure and sans-I/O: access decisions, payload encryption, tokens, audit chain.

Not public API: `pageq.App` and the CLI use them; the names users need are re-exported by `pageq`.
"""
