"""Real-photo KD benchmark (``bench/photo_benchmark.py``): options, scoring, statistics, report."""
