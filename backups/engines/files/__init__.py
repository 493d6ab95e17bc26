"""The files engine (engine): tar archives written (archive) and extracted safely (extract)."""
