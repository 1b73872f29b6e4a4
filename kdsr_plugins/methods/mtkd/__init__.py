"""MTKD, multi-teacher KD (arXiv 2404.09571): DCTSwin aggregator, wavelet loss, both stages. See docs/mtkd.md."""
