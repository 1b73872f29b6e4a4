"""MiPKD, mixture-of-priors KD (arXiv 2404.02573): ``MiPKDModel`` and ``MiPKDMixer``. See docs/mipkd.md."""
