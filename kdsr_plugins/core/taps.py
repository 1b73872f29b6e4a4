"""Feature taps: capture intermediate tensors of a network by module path (forward hooks)."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from kdsr_plugins.core.stage_runners import num_units, unit_module_path

TapSpec = str | int


class TapError(ValueError):
    """An unknown or malformed tap specification."""


def resolve_tap(net: nn.Module, tap: TapSpec) -> tuple[str, bool]:
    """Turn a tap spec into ``(module_path, capture_input)``; raises ``TapError`` listing valid paths."""
    if isinstance(tap, bool) or not isinstance(tap, (str, int)):
        raise TapError(f'Tap {tap!r} must be a module path string or a body-unit index.')
    if isinstance(tap, int) or (isinstance(tap, str) and tap.lstrip('-').isdigit()):
        try:
            index, count = int(tap), num_units(net)
            return unit_module_path(net, index + count if -count <= index < 0 else index), False
        except (TypeError, ValueError) as err:
            raise TapError(f'Body-unit tap {tap!r} for {type(net).__name__} is out of range or unsupported: '
                           f'{err}') from err
    path, capture_input = (tap[:-3], True) if tap.endswith(':in') else (tap, False)
    modules = dict(net.named_modules())
    if path not in modules or path == '':
        valid = [name for name in modules if name]
        raise TapError(f'Unknown tap {tap!r} for {type(net).__name__}. Valid module paths (append ":in" for the '
                       f'module input, or give a body-unit index): {", ".join(valid)}')
    return path, capture_input


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a tapped tensor; autocast's half / bfloat16 features become float32 (losses are float32)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.clone()


class FeatureTaps:
    """Forward hooks on a bare network that record chosen tensors inside ``capture()``.

    Hooks are registered once, at construction. Outside a capture context nothing is stored,
    so validation forwards cost nothing. Every tensor is cloned at hook time because BasicSR's
    EDSR/RCAN add the global skip in place (and use in-place ReLUs). SwinIR token tensors
    (B x HW x C) are returned as maps B x C x H x W unless ``token_layout='tokens'``.

    Args:
        net: The bare network (not the DDP wrapper); hooks fire when the wrapper runs it.
        taps: Module paths (``body.3``, ``conv_after_body``, ``upsample:in``) or body-unit indices.
        token_layout: ``map`` (default) or ``tokens``.
    """

    def __init__(self, net: nn.Module, taps: Sequence[TapSpec], token_layout: str = 'map') -> None:
        if token_layout not in ('map', 'tokens'):
            raise TapError(f"token_layout must be 'map' or 'tokens', got {token_layout!r}")
        self.net = net
        self.specs = list(taps)
        self.paths = [resolve_tap(net, tap) for tap in self.specs]
        self.token_layout = token_layout
        self._active = False
        self._store: list[torch.Tensor | None] = [None] * len(self.paths)
        self._input_size: tuple[int, int] | None = None
        modules = dict(net.named_modules())
        self._handles = [net.register_forward_pre_hook(self._record_input_size)]
        for index, (path, capture_input) in enumerate(self.paths):
            module = modules[path]
            if capture_input:
                self._handles.append(module.register_forward_pre_hook(self._make_input_hook(index)))
            else:
                self._handles.append(module.register_forward_hook(self._make_output_hook(index)))

    def __len__(self) -> int:
        return len(self.paths)

    def _record_input_size(self, module: nn.Module, args: tuple) -> None:
        if self._active and args and torch.is_tensor(args[0]):
            self._input_size = tuple(args[0].shape[-2:])

    def _make_input_hook(self, index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if self._active:
                self._store[index] = _stored(args[0])
        return hook

    def _make_output_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._active:
                self._store[index] = _stored(output)
        return hook

    def _token_map_size(self, num_tokens: int) -> tuple[int, int]:
        h, w = self._input_size
        if h * w == num_tokens:
            return h, w
        window = getattr(self.net, 'window_size', None)
        if window:  # SwinIR pads its input to a window multiple before embedding
            hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
            if hp * wp == num_tokens:
                return hp, wp
        raise TapError(f'Cannot reshape {num_tokens} tokens to a map for input size {(h, w)}.')

    def _as_map(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.token_layout == 'tokens' or tensor.dim() != 3:
            return tensor
        b, n, c = tensor.shape
        h, w = self._token_map_size(n)
        return tensor.transpose(1, 2).reshape(b, c, h, w)

    @contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        """Record the taps of the forwards run inside the block; the yielded list is filled on exit."""
        result: list[torch.Tensor] = []
        self._store = [None] * len(self.paths)
        self._active = True
        try:
            yield result
        finally:
            self._active = False
            stored, self._store = self._store, [None] * len(self.paths)
        missing = [self.specs[i] for i, t in enumerate(stored) if t is None]
        if missing:
            raise TapError(f'Taps {missing} did not fire during the captured forward.')
        result.extend(self._as_map(t) for t in stored)

    def remove(self) -> None:
        """Detach all hooks (the taps are unusable afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
