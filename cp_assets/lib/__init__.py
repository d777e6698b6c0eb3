"""Plain-Python building blocks (no dagster import): registry, readers, chunking, encoding, pgvector store, search."""
