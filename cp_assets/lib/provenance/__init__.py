"""Provenance of one text: verbatim spans, semantic neighbours, cluster path, contamination, membership, seen_score."""
