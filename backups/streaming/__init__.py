"""Bytes only, no ORM: the pipeline (source -> compressor -> SHA-256 -> sinks) and its codecs."""
