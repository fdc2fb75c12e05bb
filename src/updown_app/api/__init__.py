"""HTTP endpoints, one module per concern: upload, publish, download (+ ranges, streaming), health, routes."""
