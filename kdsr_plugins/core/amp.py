"""Mixed precision (``train.amp``) and channels-last memory format (``train.channels_last``) of KD training.

One mechanism for every KD model (docs/amp.md): :class:`MixedPrecision` registers forward hooks on
the networks of a training step (student, teachers, auxiliary modules and any further frozen
network a method names). While ``KDModel.optimize_parameters`` runs its loss computation inside
:meth:`MixedPrecision.step_region`, each hooked forward runs under ``torch.autocast`` and its
outputs are cast back to float32, so every loss (and everything a method computes between
forwards) is float32. Backward and the optimizer step stay outside autocast; ``fp16`` scales the
loss with ``torch.amp.GradScaler`` (its state is part of the training state), ``bf16`` needs no
scaler. With ``channels_last`` the networks' 4-D weights and every 4-D network input are in
``torch.channels_last`` memory format.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from kdsr_plugins.core.schema import Field, OptionError

AMP_MODES = ('off', 'bf16', 'fp16')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
#: Key of the fp16 loss-scaler state in a training state.
SCALER_STATE_KEY = 'amp_scaler'


def _amp_value(value: Any, where: str) -> str:
    return 'off' if value is False else value  # YAML 1.1 reads a bare `off` as false


AMP_FIELD = Field('amp', 'any', 'off', 'mixed precision of the training forwards: off | bf16 | fp16 (fp16: CUDA '
                  'only, with a loss scaler); losses stay float32 (docs/amp.md)',
                  choices=(*AMP_MODES, False), coerce=_amp_value, type_doc='off | bf16 | fp16',
                  message='{where} must be off, bf16 or fp16 (docs/amp.md), got {value}.')
CHANNELS_LAST_FIELD = Field('channels_last', 'bool', False, 'student, teachers, auxiliary modules and their inputs '
                            'in torch.channels_last memory format (docs/amp.md)')


def amp_options(train_opt: dict | None) -> tuple[str, bool]:
    """Validated ``(train.amp, train.channels_last)`` of a ``train`` block (absent: ``('off', False)``)."""
    train_opt = train_opt or {}
    mode = AMP_FIELD.validate(train_opt.get('amp', 'off'), 'train.amp')
    mode = _amp_value(mode, 'train.amp')
    channels_last = CHANNELS_LAST_FIELD.validate(train_opt.get('channels_last', False), 'train.channels_last')
    return mode, bool(channels_last)


def to_float32(obj: Any) -> Any:
    """``obj`` with every half / bfloat16 tensor (also inside lists, tuples and dicts) cast to float32."""
    if torch.is_tensor(obj):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, dict):
        return type(obj)((k, to_float32(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(to_float32(v) for v in obj)
    return obj


def to_channels_last(obj: Any) -> Any:
    """``obj`` with every 4-D floating tensor (also inside lists, tuples and dicts) in channels-last format."""
    if torch.is_tensor(obj):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 and obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return type(obj)((k, to_channels_last(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(to_channels_last(v) for v in obj)
    return obj


def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bfloat16 kernels on this CPU (AVX-512 BF16 / AMX); else convolutions take a slow path."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def slow_precision_warning(mode: str, device_type: str) -> str | None:
    """The start-up warning of a precision mode that is slower than float32 on this machine, or None."""
    if mode == 'bf16' and device_type == 'cpu' and not native_bf16_cpu():
        return ('train.amp: bf16 on a CPU without native bfloat16 (no AVX-512 BF16 / AMX): oneDNN does not run bf16 '
                'convolutions here and they fall back to a slow path, many times slower than float32 (docs/amp.md, '
                'Speed); train.amp: off is faster on this machine.')
    return None


class MixedPrecision:
    """Autocast regions, loss scaling and memory format of one model's training step.

    Args:
        mode: ``off``, ``bf16`` or ``fp16``.
        device: The model's device; autocast uses its type.
        channels_last: Whether hooked networks take their inputs in channels-last format.
        allow_cpu_fp16: Tests only: accept ``fp16`` on a CPU device (otherwise an :class:`OptionError`).

    Attributes:
        skipped_steps: fp16 optimizer steps skipped by the scaler (inf/NaN gradients), over the whole run.
    """

    def __init__(self, mode: str, device: torch.device, channels_last: bool = False,
                 allow_cpu_fp16: bool = False) -> None:
        if mode not in AMP_MODES:
            raise OptionError(f'train.amp must be off, bf16 or fp16 (docs/amp.md), got {mode!r}.')
        self.device_type = torch.device(device).type
        if mode == 'fp16' and self.device_type != 'cuda' and not allow_cpu_fp16:
            raise OptionError(f'train.amp: fp16 needs a CUDA device (this run trains on {self.device_type}); use '
                              'train.amp: bf16 on CPU, or off (docs/amp.md).')
        self.mode = mode
        self.dtype = AMP_DTYPES.get(mode)
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=mode == 'fp16')
        self.skipped_steps = 0
        self._active = False
        self._entered: list[AbstractContextManager | None] = []

    @property
    def enabled(self) -> bool:
        """Whether forwards run in reduced precision."""
        return self.dtype is not None

    @property
    def uses_hooks(self) -> bool:
        return self.enabled or self.channels_last

    # ------------------------------------------------------------------ forwards
    def autocast(self) -> AbstractContextManager:
        """Autocast to the run's dtype inside a step region, else a no-op context."""
        if self.enabled and self._active:
            return torch.autocast(device_type=self.device_type, dtype=self.dtype)
        return nullcontext()

    @contextmanager
    def step_region(self) -> Iterator[None]:
        """The forwards of hooked networks inside this block run under autocast (outputs cast to float32)."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def log_setup(self, labels: list[str]) -> None:
        """Log the precision of the hooked networks ``labels`` (and the slow-path warning where it applies)."""
        from basicsr.utils import get_root_logger
        logger = get_root_logger()
        slow = slow_precision_warning(self.mode, self.device_type)
        if slow:
            logger.warning(slow)
        logger.info(f'Mixed precision: train.amp {self.mode}, channels_last {self.channels_last} '
                    f'({", ".join(labels)}); losses in float32.')

    def attach(self, net: nn.Module, convert: bool = True) -> None:
        """Hook ``net`` (a bare module, not a DDP wrapper): autocast in step regions, channels-last inputs.

        ``convert`` also puts its weights in channels-last format (modules a DDP wrapper already holds
        are converted before wrapping instead, by ``KDModel.model_to_device``).
        """
        if not self.uses_hooks:
            return
        if self.channels_last and convert:
            net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        net.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True)

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.channels_last:
            args, kwargs = to_channels_last(args), to_channels_last(kwargs)
        ctx = self.autocast() if self.enabled and self._active else None
        if ctx is not None:
            ctx.__enter__()
        self._entered.append(ctx)
        return args, kwargs

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        ctx = self._entered.pop() if self._entered else None
        if ctx is None:
            return None
        ctx.__exit__(None, None, None)
        return to_float32(output)

    def region_output(self, fn, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` under autocast (in a step region), its outputs cast to float32.

        For forwards that do not go through a hooked module's ``__call__`` (stage runners).
        """
        if self.channels_last:
            args, kwargs = to_channels_last(args), to_channels_last(kwargs)
        with self.autocast():
            out = fn(*args, **kwargs)
        return to_float32(out)

    # ------------------------------------------------------------------ backward / step
    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """One optimizer step (through the scaler under fp16); False when the scaler skipped it."""
        if not self.scaler.is_enabled():
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        skipped = self.scaler.get_scale() < scale  # the scale only shrinks after inf/NaN gradients
        self.skipped_steps += int(skipped)
        return not skipped

    def log_values(self) -> dict[str, float]:
        """Values logged with the losses (fp16: scale and skipped steps; else nothing)."""
        if not self.scaler.is_enabled():
            return {}
        return {'amp_scale': float(self.scaler.get_scale()), 'amp_skipped_steps': float(self.skipped_steps)}

    # ------------------------------------------------------------------ training state
    def state_dict(self) -> dict[str, Any] | None:
        """What a training state stores under :data:`SCALER_STATE_KEY` (None without a scaler)."""
        if not self.scaler.is_enabled():
            return None
        return {'mode': self.mode, 'scaler': self.scaler.state_dict(), 'skipped_steps': self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any] | None) -> list[str]:
        """Restore :meth:`state_dict`; returns warnings (a state of another precision mode)."""
        if not self.scaler.is_enabled():
            return [] if state is None else [f'train.amp is {self.mode}: the fp16 loss-scaler state in the training '
                                             'state is ignored.']
        if state is None:
            return ['train.amp is fp16 but the training state has no loss-scaler state (written by a run with '
                    f'another train.amp): the scaler starts afresh at scale {self.scaler.get_scale():g}.']
        self.scaler.load_state_dict(state['scaler'])
        self.skipped_steps = int(state.get('skipped_steps', 0))
        return []


def training_state(epoch: int, current_iter: int, optimizers: list, schedulers: list,
                   amp: MixedPrecision | None) -> dict[str, Any]:
    """BasicSR's training-state dict (epoch, iteration, optimizers, schedulers) plus the fp16 scaler state."""
    state: dict[str, Any] = {'epoch': epoch, 'iter': current_iter,
                             'optimizers': [o.state_dict() for o in optimizers],
                             'schedulers': [s.state_dict() for s in schedulers]}
    scaler = amp.state_dict() if amp is not None else None
    if scaler is not None:
        state[SCALER_STATE_KEY] = scaler
    return state
