"""Shared helpers of the KD core (taps, teachers, checkpoints, options)."""
