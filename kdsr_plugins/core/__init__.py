"""The KD core: what two or more methods use.

``KDModel`` (teachers, output KD, auxiliary modules, checkpoints, exact resume, DDP wrapping),
teacher specs and checkpoint loading, feature taps, per-architecture stage runners, adapters,
the cached-target dataset, option validation and dataset start-up checks. Nothing here imports
a method.
"""
