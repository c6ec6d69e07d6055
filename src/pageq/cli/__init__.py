"""The `pageq` command line. Uses only the public API. Not public API itself."""
