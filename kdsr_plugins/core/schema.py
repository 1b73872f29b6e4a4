"""One declarative option schema: fields with type, default, range/choices and doc (docs/options.md).

A :class:`Schema` is a list of :class:`Field` objects; ``Schema.check(block, where)`` validates
one option block (unknown keys with close matches and the list of valid keys, types, ranges,
choices), coerces YAML number spellings that PyYAML reads as strings (``1e-4``, ``5e3``) where a
field is numeric and returns the normalised dict with defaults filled in. The KD core keys, every
method block and the option-file check (``kdsr_plugins.core.option_checks``) are declared with it,
and the option reference (``python -m kdsr_plugins --options <ModelType>``, ``docs/options.md``)
is generated from the same declarations.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ['OptionError', 'Field', 'Schema', 'REQUIRED', 'check_choice', 'close_matches',
           'coerce_number', 'unknown_keys_message']


class OptionError(ValueError):
    """An option file or block that cannot work; the message says which key and how to fix it."""


class _Required:
    def __repr__(self) -> str:
        return 'required'


#: ``Field.default`` of a key that must be given.
REQUIRED: Any = _Required()

_NUMBER_RE = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')
_KIND_TEXT = {'any': 'any value', 'bool': 'true/false', 'int': 'an integer', 'number': 'a number', 'str': 'a string',
              'list': 'a list', 'mapping': 'a mapping', 'null': '~'}


def check_choice(value: Any, valid: Iterable[Any], message: str) -> Any:
    """``value`` if it is one of ``valid``, else :class:`OptionError` with ``message`` (the caller's text)."""
    if value not in tuple(valid):
        raise OptionError(message)
    return value


def close_matches(word: Any, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` close matches of ``word`` among ``candidates`` (difflib), case-insensitively too."""
    candidates = [str(c) for c in candidates]
    found = difflib.get_close_matches(str(word), candidates, n=n, cutoff=0.6)
    lower = {c.lower(): c for c in candidates}
    for m in difflib.get_close_matches(str(word).lower(), list(lower), n=n, cutoff=0.6):
        if lower[m] not in found:
            found.append(lower[m])
    return found[:n]


def unknown_keys_message(unknown: Sequence[str], valid: Iterable[str], where: str, template: str | None = None,
                         sort_valid: bool = True) -> str:
    """The message for keys outside ``valid``: the keys, the valid list and close matches."""
    valid = list(valid)
    listed = sorted(set(valid)) if sort_valid else valid
    template = template or 'Unknown option key(s) {unknown} in {where}; valid keys: {valid}.'
    msg = template.format(unknown=list(unknown), where=where or 'the top level', valid=listed)
    hints = [f'{k!r} -> {", ".join(repr(m) for m in ms)}' for k in unknown if (ms := close_matches(k, valid))]
    if hints:
        msg += f' Did you mean: {"; ".join(hints)}?'
    return msg


def coerce_number(value: Any) -> Any:
    """A float for a number-like string (PyYAML reads ``1e-4`` and ``5e3`` as strings); else ``value``."""
    if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        return float(value.strip())
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(where: str, key: str) -> str:
    return f'{where}.{key}' if where else key


@dataclass(frozen=True)
class Field:
    """One option key.

    Attributes:
        name: The key.
        kind: ``any``, ``bool``, ``int``, ``number``, ``str``, ``list``, ``mapping`` or several
            joined by ``|`` (e.g. ``int|list``).
        default: Value used when the key is absent (:data:`REQUIRED`: the key must be given).
        doc: One line for the option reference.
        choices: Accepted values (checked after ``aliases``).
        aliases: Accepted alternative spellings mapped to their canonical value.
        min, max: Inclusive numeric bounds (``min_open`` / ``max_open``: exclusive).
        nullable: ``~`` (None) is accepted.
        item: Kind of each list element (numbers in a list are coerced too).
        schema: Sub-schema of a mapping value (a nested block).
        item_schema: Schema of each mapping element of a list value.
        check: Extra normaliser ``(value, where) -> value`` run after the generic checks (its result
            is not written back by an in-place check).
        coerce: Normaliser ``(value, where) -> value`` whose result is kept (also written back by
            an in-place check), e.g. numbers from strings.
        dynamic: Checker of a block whose keys depend on its value (e.g. its ``type:``):
            ``(value, where, warnings, in_place) -> value``.
        role: What the key configures, for the reference: ``loss`` (a loss block built by
            BasicSR's ``build_loss``), ``network``, ``method`` ...
        message: Error text for a bad value (``{where}`` = dotted key, ``{value}`` = repr);
            default: the generic type / range / choice messages.
        ignored: Non-empty: the key is read but has no effect; the text says why (a warning).
        type_doc: Type as shown in the reference (default: from ``kind`` and ``item``).
    """

    name: str
    kind: str = 'any'
    default: Any = None
    doc: str = ''
    choices: tuple | None = None
    aliases: Mapping[str, Any] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    nullable: bool = False
    item: str | None = None
    schema: Schema | None = None
    item_schema: Schema | None = None
    check: Callable[[Any, str], Any] | None = None
    coerce: Callable[[Any, str], Any] | None = None
    dynamic: Callable[[Any, str, Any, bool], Any] | None = None
    role: str = ''
    message: str | None = None
    ignored: str = ''
    type_doc: str = ''

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.kind.split('|'))

    # ---------------------------------------------------------------- reference text
    def type_text(self) -> str:
        """Type (with choices and range) as one short string."""
        if self.type_doc:
            return self.type_doc
        if self.role in ('loss', 'network', 'optimizer', 'scheduler'):
            return f'{self.role} block'
        if self.choices is not None:
            text = ' | '.join(_yaml_text(c) for c in self.choices)
        else:
            text = ' | '.join(k if k != 'list' or not self.item else f'list[{self.item}]' for k in self.kinds)
        rng = self.range_text()
        if rng:
            text += f' in {rng}'
        if self.nullable:
            text += ' | ~'
        return text

    def range_text(self) -> str:
        if self.min is None and self.max is None:
            return ''
        lo = '(-inf' if self.min is None else ('(' if self.min_open else '[') + _num_text(self.min)
        hi = 'inf)' if self.max is None else _num_text(self.max) + (')' if self.max_open else ']')
        return f'{lo}, {hi}'

    def default_text(self) -> str:
        if self.required:
            return 'required'
        return _yaml_text(self.default)

    # ---------------------------------------------------------------- checking
    def _fail(self, where: str, value: Any, generic: str) -> OptionError:
        text = self.message if self.message is not None else generic
        return OptionError(text.format(where=where, value=repr(value), key=self.name))

    def _expected(self) -> str:
        return ' or '.join(_KIND_TEXT.get(k, k) for k in self.kinds)

    def _coerce_kind(self, value: Any, where: str) -> Any:
        kinds = self.kinds
        if 'any' in kinds:
            return value
        if ('number' in kinds or 'int' in kinds) and 'str' not in kinds:
            value = coerce_number(value)
        if 'bool' in kinds and isinstance(value, bool):
            return value
        if 'int' in kinds and _is_number(value):
            if isinstance(value, int):
                return value
            if math.isfinite(value) and float(value).is_integer():
                return int(value)
        if 'number' in kinds and _is_number(value):
            return value
        if 'str' in kinds and isinstance(value, str):
            return value
        if 'list' in kinds and isinstance(value, (list, tuple)):
            if self.item in ('number', 'int'):
                item = Field(self.name, self.item, message=self.message)
                value = [item._coerce_kind(v, f'{where}[{i}]') for i, v in enumerate(value)]
            return value
        if 'mapping' in kinds and isinstance(value, Mapping):
            return value
        if kinds == ('bool',):
            raise self._fail(where, value, '{where}: expected true/false, got {value}')
        raise self._fail(where, value, f'{{where}}: expected {self._expected()}, got {{value}}')

    def validate(self, value: Any, where: str, warnings: list[str] | None = None, in_place: bool = False) -> Any:
        """The normalised ``value`` of this key at ``where`` (dotted name); :class:`OptionError` if invalid."""
        if value is None and (self.nullable or self.default is None):
            return None
        if self.aliases and isinstance(value, str) and value in self.aliases:
            value = self.aliases[value]
        elif self.choices is not None:
            value = coerce_number(value) if 'number' in self.kinds or 'int' in self.kinds else value
            if isinstance(value, bool) and not any(isinstance(c, bool) for c in self.choices) \
                    or value not in self.choices:
                extra = f' (aliases: {sorted(self.aliases)})' if self.aliases else ''
                raise self._fail(where, value,
                                 f'{{where}}: invalid value {{value}}; valid: {list(self.choices)}{extra}')
        else:
            value = self._coerce_kind(value, where)
        if self.coerce is not None:
            value = self.coerce(value, where)
        if _is_number(value) and not self._in_range(value):
            raise self._fail(where, value, f'{{where}}: expected {self._expected()} in {self.range_text()}, '
                                           'got {value}')
        # in place: nested blocks are normalised where they are (no defaults added), the value is kept
        if self.schema is not None and isinstance(value, Mapping):
            checked = self.schema.check(value, where, warnings=warnings, in_place=in_place, defaults=not in_place)
            value = value if in_place else checked
        if self.item_schema is not None and isinstance(value, (list, tuple)):
            checked = [self.item_schema.check(v, f'{where}[{i}]', warnings=warnings, in_place=in_place,
                                              defaults=not in_place) for i, v in enumerate(value)]
            value = value if in_place else checked
        if self.dynamic is not None and value is not None:
            checked = self.dynamic(value, where, warnings, in_place)
            value = value if in_place else checked
        if self.check is not None:
            checked = self.check(value, where)
            value = value if in_place else checked
        return value

    def _in_range(self, value: float) -> bool:
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return False
        if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
            return False
        return True


@dataclass(frozen=True)
class Schema:
    """The keys of one option block.

    Attributes:
        where: Dotted name of the block in messages (``train.mipkd_opt``).
        fields: Its keys.
        doc: One paragraph for the option reference.
        open: Unknown keys are accepted (a block this package does not own).
        unknown_message: Template of the unknown-key error (``{unknown}``, ``{where}``, ``{valid}``).
        sort_valid: List the valid keys sorted (else in declaration order).
        field_prefix: Dotted prefix of the field names in value errors (default: ``where``).
    """

    where: str
    fields: tuple[Field, ...] = ()
    doc: str = ''
    open: bool = False
    unknown_message: str | None = None
    sort_valid: bool = True
    field_prefix: str | None = None
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: f for f in self.fields})

    def __getitem__(self, name: str) -> Field:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def keys(self) -> list[str]:
        return [f.name for f in self.fields]

    def extend(self, *fields: Field, where: str | None = None, doc: str | None = None, **changes: Any) -> Schema:
        """A copy with ``fields`` added (a field of the same name replaces the old one)."""
        names = {f.name for f in fields}
        merged = tuple(f for f in self.fields if f.name not in names) + tuple(fields)
        return replace(self, fields=merged, where=self.where if where is None else where,
                       doc=self.doc if doc is None else doc, **changes)

    def without(self, *names: str) -> Schema:
        """A copy without the fields ``names``."""
        return replace(self, fields=tuple(f for f in self.fields if f.name not in names))

    def check(self, block: Mapping[str, Any] | None, where: str | None = None, *, warnings: list[str] | None = None,
              in_place: bool = False, defaults: bool = True) -> dict:
        """Validate ``block`` and return it normalised (defaults filled in unless ``defaults`` is false).

        Args:
            block: The option mapping; ``None`` means an empty block.
            where: Dotted name in messages (default: the schema's).
            warnings: Collects messages about keys that are read but ignored.
            in_place: Write coerced values (numbers from strings) back into ``block``.
            defaults: Fill in the defaults of absent keys.

        Raises:
            OptionError: Not a mapping, unknown keys (with close matches and the valid keys),
                a missing required key, or an invalid value.
        """
        where = self.where if where is None else where
        if block is None:
            block = {}
        if not isinstance(block, Mapping):
            raise OptionError(f'{where or "The option file"} must be a mapping, got {type(block).__name__}.')
        if not self.open:
            unknown = [k for k in block if k not in self._index]
            if unknown:
                raise OptionError(unknown_keys_message(sorted(map(str, unknown)), self.keys, where,
                                                       self.unknown_message, self.sort_valid))
        prefix = where if self.field_prefix is None else self.field_prefix
        out: dict[str, Any] = {k: v for k, v in block.items() if k not in self._index}
        for f in self.fields:
            if f.name not in block:
                if f.required:
                    raise OptionError(f'{where + " needs" if where else "The option file needs"} a {f.name!r} key'
                                      f'{" (" + f.doc + ")" if f.doc and not where.endswith("]") else ""}.')
                if defaults:
                    out[f.name] = f.default
                continue
            if f.ignored and warnings is not None:
                warnings.append(f'{_join(where, f.name)} is ignored: {f.ignored}')
            value = f.validate(block[f.name], _join(prefix, f.name), warnings, in_place)
            if in_place and value is not block[f.name] and isinstance(block, dict) and not _same(value, block[f.name]):
                block[f.name] = value
            out[f.name] = value
        return out

    # ---------------------------------------------------------------- reference
    def reference_rows(self, where: str | None = None) -> list[tuple[str, str, str, str]]:
        """``(key, type, default, doc)`` rows, nested blocks flattened with dotted keys."""
        where = self.where if where is None else where
        rows = []
        for f in self.fields:
            key = _join(where, f.name)
            doc = (f.doc + (f' (ignored: {f.ignored})' if f.ignored else '')).strip()
            rows.append((key, f.type_text(), f.default_text(), doc))
            sub = f.schema or f.item_schema
            if sub is not None:
                rows += sub.reference_rows(key + ('[]' if f.item_schema is not None else ''))
        return rows


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and a == b
    except Exception:  # noqa: BLE001  (tensors and other odd values: treat as changed)
        return False


def _num_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _yaml_text(value: Any) -> str:
    if value is None:
        return '~'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_text(v) for v in value) + ']'
    if isinstance(value, Mapping):
        return '{' + ', '.join(f'{k}: {_yaml_text(v)}' for k, v in value.items()) + '}'
    return str(value)
