"""The option reference, generated from the schemas: ``--options <ModelType>`` and docs/options.md."""
from __future__ import annotations

from kdsr_plugins.core.option_checks import (
    DIST_PARAMS_SCHEMA,
    LOGGER_SCHEMA,
    dataloader_fields,
    model_class,
    model_fields,
    paired_dataset_fields,
)
from kdsr_plugins.core.schema import Field, Schema

__all__ = ['model_rows', 'model_reference', 'options_markdown', 'RULE']

Row = tuple[str, str, str, str]

RULE = """\
**Method blocks and loss blocks.** Under `train:`, a *loss block* is a `*_opt` key whose value has a
`type:` naming a registered loss (`pixel_opt`, `kd_opt`, `feature_opt`, `feat_opt`, `ae_opt`,
`block_opt`, `feature_kd.terms[].loss`): BasicSR's `build_loss` builds it, so its other keys are
that loss class's `__init__` arguments (`loss_weight` >= 0, ...). A *method block* configures a
method and has no `type:` (`dukd_opt`, `mipkd_opt`, `feature_kd`, `feature_distillation`, `noisy`,
`optim_aux`, and the top-level `aggregator`); its keys are listed below. Networks (`network_g`,
`network_t`, `teachers[].network`, `aggregator.network`) take the registered arch's `__init__`
arguments, metrics (`val.metrics.<name>`) the metric function's, `optim_g` those of `torch.optim.Adam`
and `scheduler` those of BasicSR's `MultiStepRestartLR` / `CosineAnnealingRestartLR`."""

_INTRO = """\
# Option reference

Generated from the option schemas (`kdsr_plugins/core/schema.py`, declared per model class as
`option_fields`) by `python -m kdsr_plugins --options-md > docs/options.md`; a test keeps this file
current. `python -m kdsr_plugins --options <ModelType>` prints the same for one model.

Every option file is checked at start-up, before BasicSR creates or archives any experiment folder
(`kdsr_plugins/core/option_checks.py`, hooked into BasicSR's `parse_options`):

* unknown keys at any level stop the run with close matches and the list of valid keys; keys that
  BasicSR reads but ignores (e.g. `gt_size` of a validation set, `val.self_ensemble`, a metric
  argument swallowed by `**kwargs`) print a warning;
* numbers in any YAML spelling are numbers: PyYAML reads `1e-4` or `5e3` (no dot) as strings, and
  they are converted wherever the key is numeric (`lr`, `total_iter`, `milestones`, `loss_weight`,
  `ema_decay`, frequencies, ...);
* types and ranges are checked where a wrong value would be silently harmful (weights >= 0,
  probabilities in [0, 1], `ema_decay` in [0, 1), frequencies >= 1);
* `num_gpu` > 0 on a machine without CUDA stops with a hint (`num_gpu: 0` or `auto`); a tab in the
  indentation of the YAML file is reported as such (YAML indentation needs spaces).

Errors are `kdsr_plugins.core.schema.OptionError` (a `ValueError`).

"""


def _rows(fields: tuple[Field, ...], where: str) -> list[Row]:
    return Schema(where, tuple(fields)).reference_rows(where)


def _dataset_rows() -> list[Row]:
    fields = dataloader_fields('train') + paired_dataset_fields('train', target=True)
    rows = _rows(tuple(f for f in fields if f.name != 'dataroot_target'), 'datasets.<phase>')
    rows += [('datasets.<phase>.dataroot_target', 'str | mapping', 'required',
              'KDCachedTargetDataset only: ' + next(f.doc for f in fields if f.name == 'dataroot_target'))]
    return rows


def model_rows(model_type: str) -> list[tuple[str, list[Row]]]:
    """``(block title, rows)`` of every key a ``model_type`` option file may hold."""
    cls = model_class(model_type)
    fields = model_fields(cls)
    blocks = [('top level', _rows(tuple(f for f in fields[''] if f.name not in ('path', 'train', 'val', 'logger',
                                                                            'dist_params')), '')),
              ('datasets (keys of PairedImageDataset / KDCachedTargetDataset blocks; val/test: no batch, crop or '
               'flip keys)', _dataset_rows()),
              ('path', _rows(fields['path'], 'path')),
              ('train', _rows(fields['train'], 'train')),
              ('val', _rows(fields['val'], 'val')),
              ('logger', _rows(LOGGER_SCHEMA.fields, 'logger')),
              ('dist_params', _rows(DIST_PARAMS_SCHEMA.fields, 'dist_params'))]
    return blocks


def model_reference(model_type: str) -> str:
    """Plain-text reference of ``model_type``'s option keys (key, type, default, doc)."""
    lines = [f'Option keys of {model_type} (see docs/options.md for the rules):']
    for title, rows in model_rows(model_type):
        lines.append(f'\n[{title}]')
        width = max(len(r[0]) for r in rows)
        for key, kind, default, doc in rows:
            lines.append(f'  {key:<{width}}  {kind}  (default: {default})  {doc}')
    return '\n'.join(lines) + '\n'


def _md_table(rows: list[Row]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace('|', '\\|').replace('<', '&lt;')
    out = ['| key | type | default | meaning |', '| --- | --- | --- | --- |']
    out += [f'| `{k}` | {cell(t)} | `{cell(d)}` | {cell(doc)} |' for k, t, d, doc in rows]
    return out


def _own_fields(cls: type) -> dict[str, tuple[Field, ...]]:
    own = cls.__dict__.get('option_fields') or {}
    return {block: tuple(fields) for block, fields in own.items()}


def options_markdown() -> str:
    """docs/options.md: the rules, the keys of every KD model (``KDModel`` in full, then what each model adds)."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from kdsr_plugins.core.kd_model import KDModel

    lines = [_INTRO + RULE, '', '## Every KD model (`KDModel` and the models below)', '']
    for title, rows in model_rows('KDModel'):
        lines += [f'### {title}', ''] + _md_table(rows) + ['']
    models = sorted(name for name, obj in MODEL_REGISTRY._obj_map.items()
                    if isinstance(obj, type) and issubclass(obj, KDModel) and obj is not KDModel)
    for name in models:
        cls = MODEL_REGISTRY._obj_map[name]
        lines += [f'## `{name}`', '', f'Keys added or changed with respect to `KDModel` '
                  f'(`python -m kdsr_plugins --options {name}` lists all).', '']
        own: list[Row] = []
        for klass in reversed(cls.__mro__[:cls.__mro__.index(KDModel)]):
            for block, fields in _own_fields(klass).items():
                own += _rows(fields, block)
        lines += (_md_table(own) if own else ['No keys of its own.']) + ['']
    return '\n'.join(lines).rstrip() + '\n'

