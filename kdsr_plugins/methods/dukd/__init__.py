"""DUKD, data-upcycling KD (arXiv 2309.14162): ``DUKDModel``, zoom-in/zoom-out upcycling, label consistency.

See docs/dukd.md.
"""
