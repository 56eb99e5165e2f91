"""Benchmarks behind ``genrec bench``: each writes JSON, CSV and a PNG plot."""
