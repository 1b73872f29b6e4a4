"""One folder per paper: each holds only what its paper adds to the KD core; no method imports another."""
