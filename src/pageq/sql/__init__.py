"""SQL of pageq: numbered migrations and named query blocks (data; read only by the store). Not public API."""
