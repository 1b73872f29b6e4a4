"""Data preparation for kdsr_plugins: DIV2K sub-images, benchmark sets, offline demo and real-photo sets, LMDB tools.

Command line: ``python -m kdsr_plugins.data_prep {demo,div2k,benchmark,photos,check-lmdb} ...``
(see ``datasets/README.md``). Importing this package imports ``kdsr_plugins`` (and BasicSR) first.
"""
from kdsr_plugins.core.lmdb_io import LmdbCheckError, check_lmdb  # part of the data_prep API
from kdsr_plugins.data_prep.benchmark import (
                                              BENCHMARK_SETS,
                                              benchmark_dataset_opt,
                                              detect_filename_tmpl,
                                              generate_lr,
                                              prepare_benchmark,
                                              validate_benchmark_set,
)
from kdsr_plugins.data_prep.degrade import bicubic_downsample, modcrop
from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.data_prep.div2k import prepare_div2k, subimage_grid, subimage_positions
from kdsr_plugins.data_prep.lmdb_tools import check_paired_lmdb, write_lmdb
from kdsr_plugins.data_prep.photos import build_photo_set

__all__ = [
    'BENCHMARK_SETS', 'LmdbCheckError', 'benchmark_dataset_opt', 'bicubic_downsample', 'build_demo_dataset',
    'build_photo_set',
    'check_lmdb', 'check_paired_lmdb', 'detect_filename_tmpl', 'generate_lr', 'modcrop', 'prepare_benchmark',
    'prepare_div2k', 'subimage_grid', 'subimage_positions', 'validate_benchmark_set', 'write_lmdb'
]
