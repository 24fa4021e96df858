"""HTTP API, settings, database models, blob store and the `longdoc` CLI."""
