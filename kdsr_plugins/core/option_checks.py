"""Start-up check of a whole option file against the keys BasicSR 1.4.2 and this package read (docs/options.md).

Run by the ``parse_options`` patch (``kdsr_plugins.compat.patches``) before BasicSR creates or
archives any experiment folder: every block (top level, ``datasets.*``, ``network_*``, ``path``,
``train`` and each loss block, ``val`` and its metrics, ``logger``, ``dist_params`` and each method
block) is checked with :mod:`kdsr_plugins.core.schema`. Blocks whose keys depend on their
``type:`` (networks, losses, metrics, the optimizer and scheduler) take their keys from the
registered class's ``__init__`` signature; datasets from the keys the dataset class reads.
Unknown keys raise :class:`~kdsr_plugins.core.schema.OptionError` with close matches and the valid
keys; keys that are read but ignored give warnings; numbers written in any YAML spelling
(``1e-4``) are numbers.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from kdsr_plugins.compat.patches import RegistryNameError, unknown_name_message
from kdsr_plugins.core.schema import REQUIRED, Field, OptionError, Schema, close_matches, coerce_number

__all__ = ['UnknownNameError', 'check_option_file', 'check_num_gpu', 'model_class', 'model_schema', 'load_option_file',
           'network_block', 'teacher_network_block', 'loss_block', 'NOOP_VAL_SELF_ENSEMBLE']

NOOP_VAL_SELF_ENSEMBLE = 'BasicSR 1.4.2 has no self-ensemble; the key does nothing.'
_SET_BY_BASICSR = 'parse_options sets it (the value in the file is overwritten).'


# ------------------------------------------------------------------------------ type-dependent blocks
class UnknownNameError(OptionError, RegistryNameError):
    """A ``type:`` (or ``model_type``) that names nothing in its BasicSR registry; also a ``KeyError`` as before."""


def _registry_get(registry: Any, name: Any, where: str, label: str | None = None) -> Any:
    label = f'{where}.type' if label is None else label
    if not isinstance(name, str):
        raise OptionError(f'{label}: expected a registered name (a string), got {name!r}.')
    if name not in registry._obj_map:
        raise UnknownNameError(f'{label}: {unknown_name_message(registry, name)}')
    return registry._obj_map[name]


def _numeric_like(default: Any) -> Any:
    """A normaliser for a key whose default is a number (or a list of numbers)."""
    def check(value: Any, where: str) -> Any:
        if isinstance(value, str):
            number = coerce_number(value)
            if number is value:
                raise OptionError(f'{where}: expected a number, got {value!r}')
            return int(number) if isinstance(default, int) and float(number).is_integer() else number
        if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
            return [check(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return value
    return check


def _is_number_default(default: Any) -> bool:
    if isinstance(default, bool):
        return False
    if isinstance(default, (int, float)):
        return True
    return isinstance(default, (list, tuple)) and bool(default) and all(_is_number_default(v) for v in default)


@lru_cache(maxsize=None)
def signature_schema(obj: Any, where: str, skip: int = 0, numbers: tuple[str, ...] = ()) -> Schema:
    """The keys of an ``obj(**block)`` call: its ``__init__`` (or function) parameters after ``skip`` positional ones.

    A parameter whose default is a number (or list of numbers), or named in ``numbers``, is
    numeric (number strings are coerced, other strings rejected); ``loss_weight`` must be >= 0.
    With ``**kwargs`` the schema is open (unknown keys are warned about, not refused).
    """
    func = obj.__init__ if inspect.isclass(obj) else obj
    params = list(inspect.signature(func).parameters.values())
    if inspect.isclass(obj):
        params = params[1:]  # self
    params = params[skip:]
    fields = [Field('type', 'str', REQUIRED, 'registered name')]
    has_kwargs = False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            has_kwargs = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        default = REQUIRED if p.default is p.empty else p.default
        numeric = p.name in numbers or _is_number_default(p.default)
        kw: dict[str, Any] = {'coerce': _numeric_like(p.default if _is_number_default(p.default) else 0.0)} \
            if numeric else {}
        if p.name == 'loss_weight':
            kw = {'kind': 'number', 'min': 0.0, 'message': '{where}: expected a non-negative number, got {value}'}
        fields.append(Field(p.name, default=default, doc=f'{getattr(obj, "__name__", obj)} argument', **kw))
    return Schema(where, tuple(fields), open=has_kwargs)


def _typed_block(registry_name: str, skip: int = 0, numbers: tuple[str, ...] = (), extra: tuple[Field, ...] = ()):
    def check(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
        from basicsr.utils import registry as registries

        if not isinstance(value, Mapping):
            raise OptionError(f'{where} must be a mapping with a type, got {type(value).__name__}.')
        if 'type' not in value:
            raise OptionError(f'{where} needs a \'type\' key (a name in BasicSR\'s {registry_name}).')
        obj = _registry_get(getattr(registries, registry_name), value['type'], where)
        schema = signature_schema(obj, where, skip, numbers)
        if extra:
            schema = schema.extend(*extra)
        _warn_swallowed(schema, value, where, warnings, obj)
        return schema.check(value, where, warnings=warnings, in_place=in_place, defaults=False)
    return check


def _warn_swallowed(schema: Schema, value: Mapping, where: str, warnings: list[str] | None, obj: Any) -> None:
    if not schema.open or warnings is None:
        return
    for key in value:
        if key not in schema:
            hint = close_matches(key, schema.keys)
            warnings.append(f'{where}.{key} is passed to {getattr(obj, "__name__", obj)}(**kwargs), which ignores '
                            f'it{"; did you mean " + ", ".join(map(repr, hint)) + "?" if hint else ""} '
                            f'(its keys: {sorted(schema.keys)}).')


#: ``network_*`` blocks: ``type`` (ARCH_REGISTRY) + the arch's ``__init__`` arguments.
network_block = _typed_block('ARCH_REGISTRY')
#: ``type: auto`` (a teacher built from its checkpoint by spandrel, docs/auto_teachers.md).
AUTO_NETWORK_SCHEMA = Schema('network (type auto)', (
    Field('type', 'str', REQUIRED, 'auto: detect the architecture from the checkpoint', choices=('auto',)),
    Field('arch', 'str', None, "spandrel's architecture name to insist on (e.g. HAT)"),
))


def teacher_network_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    """A teacher's network block: a registered arch, or ``type: auto`` (built from the checkpoint)."""
    if isinstance(value, Mapping) and value.get('type') == 'auto':
        return AUTO_NETWORK_SCHEMA.check(value, where, warnings=warnings, in_place=in_place, defaults=False)
    return network_block(value, where, warnings, in_place)


#: Loss blocks (``*_opt`` with a ``type``): ``type`` (LOSS_REGISTRY) + the loss's ``__init__`` arguments.
loss_block = _typed_block('LOSS_REGISTRY')
_metric_block = _typed_block('METRIC_REGISTRY', skip=2, extra=(
    Field('better', 'str', 'higher', 'which direction is better (best-metric tracking)', choices=('higher', 'lower')),))


def _optimizer_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    import torch

    if not isinstance(value, Mapping) or 'type' not in value:
        raise OptionError(f'{where} needs a \'type\' key (BasicSR 1.4.2 builds only Adam).')
    if value['type'] != 'Adam':
        raise OptionError(f'{where}.type: BasicSR 1.4.2 builds only Adam (get_optimizer), got {value["type"]!r}.')
    schema = signature_schema(torch.optim.Adam, where, skip=1, numbers=('lr',))
    schema = schema.extend(Field('lr', 'number', REQUIRED, 'learning rate', min=0.0, min_open=True))
    return schema.check(value, where, warnings=warnings, in_place=in_place, defaults=False)


def _scheduler_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    from basicsr.models import lr_scheduler

    if not isinstance(value, Mapping) or 'type' not in value:
        raise OptionError(f'{where} needs a \'type\' key (MultiStepLR, MultiStepRestartLR or '
                          'CosineAnnealingRestartLR).')
    kinds = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
             'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
    if value['type'] not in kinds:
        raise OptionError(f'{where}.type: invalid value {value["type"]!r}; valid: {list(kinds)} (BasicSR 1.4.2).')
    schema = signature_schema(kinds[value['type']], where, skip=1)
    ints = [Field(k, 'list', REQUIRED if k in ('milestones', 'periods') else (0,), 'iterations', item='int')
            for k in ('milestones', 'periods', 'restarts') if k in schema]
    schema = schema.extend(*ints)
    if 'gamma' in schema:
        schema = schema.extend(Field('gamma', 'number', 0.1, 'learning-rate factor at each milestone', min=0.0,
                                     min_open=True))
    return schema.check(value, where, warnings=warnings, in_place=in_place, defaults=False)


# ------------------------------------------------------------------------------ datasets
def dataloader_fields(phase: str) -> tuple[Field, ...]:
    train = phase == 'train'
    why = f'BasicSR uses batch size 1 and no workers outside training (build_dataloader, phase {phase}).'
    return (
        Field('name', 'str', REQUIRED, 'dataset name (logs, result folders)'),
        Field('type', 'str', REQUIRED, 'registered dataset class'),
        Field('phase', 'str', doc='set by parse_options from the block name'),
        Field('scale', 'int', doc='set by parse_options from the top-level scale'),
        Field('batch_size_per_gpu', 'int', REQUIRED if train else None, 'batch size per process', min=1,
              ignored='' if train else why),
        Field('num_worker_per_gpu', 'int', REQUIRED if train else None, 'data-loading workers per process', min=0,
              ignored='' if train else why),
        Field('dataset_enlarge_ratio', 'number', 1, 'repeat the training set this many times per epoch', min=0.0,
              min_open=True, ignored='' if train else 'read for the training set only.'),
        Field('prefetch_mode', 'str', None, 'data prefetcher', choices=('cpu', 'cuda'), nullable=True),
        Field('pin_memory', 'bool', False, 'pin host memory (needed by prefetch_mode cuda)'),
        Field('persistent_workers', 'bool', False, 'keep workers between epochs'),
        Field('num_prefetch_queue', 'int', 1, 'queue length of prefetch_mode cuda', min=1),
    )


_IO_BACKEND = Schema('io_backend', (
    Field('type', 'str', REQUIRED, 'file backend', choices=('disk', 'lmdb', 'memcached')),
), open=True)


def paired_dataset_fields(phase: str, target: bool = False) -> tuple[Field, ...]:
    train = phase == 'train'
    why = 'read in the training phase only (PairedImageDataset).'
    fields = [
        Field('dataroot_gt', 'str', REQUIRED, 'GT folder or .lmdb'),
        Field('dataroot_lq', 'str', REQUIRED, 'LQ folder or .lmdb'),
        Field('meta_info_file', 'str', None, 'list of GT file names (disk backend)'),
        Field('io_backend', 'mapping', REQUIRED, 'file backend: {type: disk | lmdb}', schema=_IO_BACKEND),
        Field('filename_tmpl', 'str', '{}', 'LQ file name template (disk backend)'),
        Field('gt_size', 'int', REQUIRED if train else None, 'GT crop size', min=1, ignored='' if train else why),
        Field('use_hflip', 'bool', REQUIRED if train else None, 'random horizontal flips',
              ignored='' if train else why),
        Field('use_rot', 'bool', REQUIRED if train else None, 'random 90° rotations and transposes',
              ignored='' if train else why),
        Field('mean', 'list', None, 'normalisation mean', item='number'),
        Field('std', 'list', None, 'normalisation std', item='number'),
        Field('color', 'str', None, 'y: train / test on the Y channel', choices=('y',), nullable=True),
    ]
    if target:
        fields.append(Field('dataroot_target', 'str|mapping', REQUIRED,
                            'cached teacher output LMDB, or {teacher name: LMDB}'))
    return tuple(fields)


def dataset_schema(dataset_type: Any, phase: str, where: str) -> Schema:
    """Schema of one ``datasets.<phase>`` block of ``dataset_type`` (open for dataset types not catalogued)."""
    base = dataloader_fields(phase)
    if dataset_type == 'PairedImageDataset':
        return Schema(where, base + paired_dataset_fields(phase))
    if dataset_type == 'KDCachedTargetDataset':
        return Schema(where, base + paired_dataset_fields(phase, target=True))
    return Schema(where, base, open=True)


def _datasets_block(value: Any, where: str, warnings: list[str] | None, in_place: bool, is_train: bool = True) -> Any:
    if not isinstance(value, Mapping) or not value:
        raise OptionError(f'{where} must be a mapping of dataset blocks (train, val, test_1, ...), got {value!r}.')
    out = {}
    for name, block in value.items():
        phase = str(name).split('_')[0]
        sub = f'{where}.{name}'
        if is_train and phase not in ('train', 'val'):
            hint = close_matches(name, ['train', 'val'])
            raise OptionError(f'{sub}: BasicSR training reads only the phases train and val / val_<n> '
                              f'(the block name before "_"), got {name!r}'
                              f'{"; did you mean " + repr(hint[0]) + "?" if hint else "."}')
        if not isinstance(block, Mapping):
            raise OptionError(f'{sub} must be a mapping, got {type(block).__name__}.')
        if 'type' in block:
            from basicsr.utils.registry import DATASET_REGISTRY
            _registry_get(DATASET_REGISTRY, block['type'], sub)
        out[name] = dataset_schema(block.get('type'), phase, sub).check(block, sub, warnings=warnings,
                                                                        in_place=in_place, defaults=not in_place)
    if is_train and 'train' not in value:
        raise OptionError(f'{where} needs a train block (training reads datasets.train).')
    return value if in_place else out


def _test_datasets_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    return _datasets_block(value, where, warnings, in_place, is_train=False)


def _metrics_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    if not isinstance(value, Mapping):
        raise OptionError(f'{where} must be a mapping {{metric name: {{type: calculate_psnr, ...}}}}, got {value!r}.')
    for name, block in value.items():
        _metric_block(block, f'{where}.{name}', warnings, in_place)
    return value


# ------------------------------------------------------------------------------ BasicSR's blocks
def _num_gpu(value: Any, where: str) -> Any:
    if isinstance(value, str) and value != 'auto':
        raise OptionError(f'{where}: expected an integer >= 0 or auto, got {value!r}')
    return value


def _freq(name: str, doc: str, default: Any = REQUIRED) -> Field:
    return Field(name, 'int', default, doc, min=1)


LOGGER_SCHEMA = Schema('logger', (
    _freq('print_freq', 'log every N iterations'),
    _freq('save_checkpoint_freq', 'save models and training state every N iterations'),
    Field('use_tb_logger', 'bool', REQUIRED, 'write TensorBoard logs under tb_logger/'),
    Field('wandb', 'mapping', None, 'Weights & Biases (needs use_tb_logger)', schema=Schema('logger.wandb', (
        Field('project', 'str', None, 'project name (~: off)'),
        Field('resume_id', 'str', None, 'run id to resume'))), nullable=True),
), doc='BasicSR\'s MessageLogger and checkpoint frequency.')

DIST_PARAMS_SCHEMA = Schema('dist_params', (
    Field('backend', 'str', 'nccl', 'process-group backend (read with --launcher slurm only)'),
    Field('port', 'int', 29500, 'rendezvous port (read with --launcher slurm only)', min=1),
))

VAL_FIELDS = (
    Field('val_freq', 'int', None, 'validate every N iterations (training)', min=1),
    Field('save_img', 'bool', REQUIRED, 'save the SR images under visualization/'),
    Field('suffix', 'str', None, 'file-name suffix of saved images (default: the run name)', nullable=True),
    Field('metrics', 'mapping', None, 'metric name -> {type: calculate_psnr | calculate_ssim, crop_border, '
          'test_y_channel, better}', dynamic=_metrics_block, role='metrics'),
    Field('pbar', 'bool', False, 'show a progress bar'),
    Field('self_ensemble', 'bool', False, 'not implemented', ignored=NOOP_VAL_SELF_ENSEMBLE),
)

PATH_FIELDS = (
    Field('pretrain_network_g', 'str', None, 'student / network_g checkpoint to start from'),
    Field('param_key_g', 'str', 'params', 'key of the network_g weights in that checkpoint', nullable=True),
    Field('strict_load_g', 'bool', True, 'load network_g strictly'),
    Field('resume_state', 'str', None, 'training state to resume from (training)'),
    Field('ignore_resume_networks', 'str|list', None, 'networks not reloaded on resume'),
    Field('allow_random_init', 'bool', False, 'test entry: score a network without pretrain_network_g (random '
          'weights) on purpose'),
) + tuple(Field(k, 'any', ignored=_SET_BY_BASICSR)
          for k in ('experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root'))

TRAIN_FIELDS = (
    Field('ema_decay', 'number', 0, 'EMA decay of the student weights (0: no EMA)', min=0.0, max=1.0, max_open=True),
    Field('optim_g', 'mapping', REQUIRED, 'student optimizer {type: Adam, lr, weight_decay, betas}',
          dynamic=_optimizer_block, role='optimizer'),
    Field('scheduler', 'mapping', REQUIRED, 'learning-rate schedule {type: MultiStepLR, milestones, gamma}',
          dynamic=_scheduler_block, role='scheduler'),
    Field('total_iter', 'int', REQUIRED, 'training iterations', min=1),
    Field('warmup_iter', 'int', -1, 'linear warm-up iterations (-1: none)', min=-1),
    Field('pixel_opt', 'mapping', None, 'loss block: student vs GT (l_pix)', dynamic=loss_block, role='loss'),
    Field('perceptual_opt', 'mapping', None, 'loss block: perceptual loss (l_percep)', dynamic=loss_block,
          role='loss'),
)

TOP_FIELDS = (
    Field('name', 'str', REQUIRED, 'run name: experiments/<name>, results/<name>, tb_logger/<name>'),
    Field('model_type', 'str', REQUIRED, 'registered model class'),
    Field('scale', 'int', None, 'upscaling factor', min=1),
    Field('num_gpu', 'int|str', REQUIRED, 'GPUs per process; 0: CPU; auto: all visible', min=0,
          coerce=_num_gpu, type_doc='int in [0, inf) | auto'),
    Field('manual_seed', 'int', None, 'random seed (~: random)'),
    Field('datasets', 'mapping', REQUIRED, 'dataset blocks: train, val / val_<n> (training); test_<n> (test)',
          dynamic=_datasets_block, role='datasets'),
    Field('network_g', 'mapping', REQUIRED, 'network block of the student (type + arch arguments)',
          dynamic=network_block, role='network'),
    Field('path', 'mapping', REQUIRED, 'checkpoint paths'),
    Field('train', 'mapping', None, 'training settings'),
    Field('val', 'mapping', None, 'validation settings'),
    Field('logger', 'mapping', None, 'logging settings'),
    Field('dist_params', 'mapping', None, 'distributed settings (slurm)', schema=DIST_PARAMS_SCHEMA),
    Field('find_unused_parameters', 'bool', False, 'DDP find_unused_parameters'),
) + tuple(Field(k, 'any', ignored=_SET_BY_BASICSR)
          for k in ('dist', 'rank', 'world_size', 'auto_resume', 'is_train', 'root_path'))


# ------------------------------------------------------------------------------ per model class
def model_class(model_type: Any) -> type:
    """The registered model class of ``model_type`` (:class:`OptionError` listing close names otherwise)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    return _registry_get(MODEL_REGISTRY, model_type, 'model_type', 'model_type')


def model_fields(cls: type) -> dict[str, tuple[Field, ...]]:
    """Fields per block (``''`` top level, ``path``, ``train``, ``val``) declared along ``cls``'s MRO.

    BasicSR's ``SRModel`` keys first, then each class's ``option_fields`` (a later field of the
    same name replaces an earlier one).
    """
    merged: dict[str, dict[str, Field]] = {'': {}, 'path': {}, 'train': {}, 'val': {}}
    for block, fields in (('', TOP_FIELDS), ('path', PATH_FIELDS), ('train', TRAIN_FIELDS), ('val', VAL_FIELDS)):
        merged[block].update({f.name: f for f in fields})
    for klass in reversed(cls.__mro__):
        for block, fields in (klass.__dict__.get('option_fields') or {}).items():
            merged.setdefault(block, {}).update({f.name: f for f in fields})
    return {block: tuple(fields.values()) for block, fields in merged.items()}


def _strict(cls: type) -> bool:
    from basicsr.models.sr_model import SRModel
    return cls is SRModel or 'option_fields' in {k for klass in cls.__mro__ for k in klass.__dict__}


def model_schema(cls: type, is_train: bool = True, network_keys: tuple[str, ...] = ()) -> Schema:
    """The schema of a whole option file for model class ``cls`` (training or test)."""
    fields = model_fields(cls)
    strict = _strict(cls)
    path_fields = list(fields['path'])
    for key in network_keys:  # BasicSR's path keys of every further network_<x>
        x = key[len('network_'):]
        for f in (Field(f'pretrain_network_{x}', 'str', None, f'{key} checkpoint'),
                  Field(f'param_key_{x}', 'str', 'params', f'key of the {key} weights', nullable=True),
                  Field(f'strict_load_{x}', 'bool', True, f'load {key} strictly')):
            if f.name not in {p.name for p in path_fields}:
                path_fields.append(f)
    path = Schema('path', tuple(path_fields), open=not strict)
    train = Schema('train', fields['train'], open=not strict)
    val_fields = list(fields['val'])
    if is_train:
        val_fields = [f if f.name != 'val_freq' else Field(f.name, f.kind, REQUIRED, f.doc, min=1) for f in val_fields]
    val = Schema('val', tuple(val_fields))
    top = []
    for f in fields['']:
        if f.name == 'path':
            f = Field('path', 'mapping', REQUIRED, f.doc, schema=path)
        elif f.name == 'train':
            f = Field('train', 'mapping', REQUIRED if is_train else None, f.doc, schema=train,
                      ignored='' if is_train else 'test_pipeline does not read it.')
        elif f.name == 'val':
            f = Field('val', 'mapping', None if is_train else REQUIRED, f.doc, schema=val, nullable=is_train)
        elif f.name == 'logger':
            f = Field('logger', 'mapping', REQUIRED if is_train else None, f.doc, schema=LOGGER_SCHEMA,
                      ignored='' if is_train else 'test_pipeline does not read it.')
        elif f.name == 'datasets' and not is_train:
            f = Field('datasets', 'mapping', REQUIRED, f.doc, dynamic=_test_datasets_block, role='datasets')
        top.append(f)
    return Schema('', tuple(top), open=not strict,
                  unknown_message='Unknown option key(s) {unknown} at the top level of the option file; '
                                  'valid keys: {valid}.')


def check_option_file(opt: Mapping[str, Any], is_train: bool = True, in_place: bool = False) -> list[str]:
    """Check a loaded option file; return the warnings (read-but-ignored keys).

    Args:
        opt: The option mapping as loaded from YAML (before or after BasicSR's ``parse_options``).
        is_train: Training (``train.py``) or test (``test.py``) options.
        in_place: Write coerced numbers (``'1e-4'`` -> 1e-4) back into ``opt``.

    Raises:
        OptionError: The first problem found, naming the key and the valid keys or values.
    """
    if not isinstance(opt, Mapping):
        raise OptionError(f'The option file must be a mapping of option keys, got {type(opt).__name__}.')
    for key in ('model_type',):
        if key not in opt:
            raise OptionError(f'The option file needs a {key!r} key (the registered model class, e.g. KDModel).')
    cls = model_class(opt['model_type'])
    networks = tuple(k for k in opt if isinstance(k, str) and k.startswith('network_'))
    schema = model_schema(cls, is_train, networks)
    extra_networks = tuple(Field(k, 'mapping', None, 'network block', dynamic=network_block, role='network')
                           for k in networks if k not in schema)
    if extra_networks and _strict(cls):
        names = [k for k in networks if k not in schema]
        raise OptionError(f'{", ".join(names)}: {cls.__name__} builds no such network; its networks: '
                          f'{[f.name for f in schema.fields if f.role == "network"]}.'
                          + (f' Did you mean {close_matches(names[0], schema.keys)[0]!r}?'
                             if close_matches(names[0], schema.keys) else ''))
    warnings: list[str] = []
    schema.extend(*extra_networks).check(opt, '', warnings=warnings, in_place=in_place, defaults=False)
    return warnings


def check_num_gpu(opt: Mapping[str, Any]) -> None:
    """Refuse ``num_gpu > 0`` when CUDA is unavailable (or has fewer devices), suggesting ``0`` or ``auto``."""
    n = opt.get('num_gpu')
    if isinstance(n, str) and n != 'auto':
        raise OptionError(f'num_gpu: expected an integer >= 0 or auto, got {n!r}')
    if n == 'auto' or isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise OptionError(f'num_gpu: {n} but this machine has no usable CUDA device (torch '
                          f'{torch.__version__}, CUDA {"built" if torch.backends.cuda.is_built() else "not built"}): '
                          'set num_gpu: 0 to run on the CPU, or num_gpu: auto to use whatever GPUs are visible.')
    if n > available and not os.environ.get('LOCAL_RANK'):
        raise OptionError(f'num_gpu: {n} but only {available} CUDA device(s) are visible: set num_gpu: {available} '
                          'or num_gpu: auto.')


def _tab_lines(path: str) -> list[int]:
    with open(path, encoding='utf-8', errors='replace') as f:
        return [i for i, line in enumerate(f, 1) if '\t' in line[:len(line) - len(line.lstrip())]]


def load_option_file(path: str) -> Any:
    """The option YAML ``path`` parsed with the safe ordered loader; a clear :class:`OptionError` if it cannot be.

    A file whose indentation contains a tab says so (with the lines): YAML indentation needs spaces.
    """
    import yaml

    from kdsr_plugins.compat.patches import safe_ordered_yaml

    if not os.path.isfile(path):
        raise OptionError(f'Option file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.load(f, Loader=safe_ordered_yaml()[0])
    except yaml.constructor.ConstructorError:
        raise  # a tag the safe loader refuses (e.g. python/object/apply): PyYAML's message names it
    except yaml.YAMLError as err:
        tabs = _tab_lines(path)
        if tabs or "'\\t'" in str(err):  # PyYAML: found character '\t' that cannot start any token
            where = f' (line {", ".join(map(str, tabs[:5]))})' if tabs else ''
            raise OptionError(f'{path}: the file contains a tab character in its indentation{where}; YAML '
                              f'indentation needs spaces: replace each tab with spaces. ({err})'.replace('\n', ' ')) \
                from None
        raise OptionError(f'{path}: not valid YAML: {err}') from None
