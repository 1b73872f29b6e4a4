"""The one reader and writer of BasicSR-format LMDBs (``data.mdb``, ``lock.mdb``, ``meta_info.txt``).

Format (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``): a folder ``<name>.lmdb`` whose values are
stored under ASCII keys, plus ``meta_info.txt`` with one line per value::

    <key>.<ext> (<h>,<w>,<c>) <compress_level>

``<ext>`` is ``png`` for images (and 16-bit PNG target caches), ``npy`` for float32 target caches.

Key rule (see ``docs/core.md``, "LMDB and meta_info.txt"): the key of a line is
``line.split('.')[0]``, exactly what BasicSR's ``paired_paths_from_lmdb`` takes, so a key is
non-empty ASCII without dots or whitespace (:func:`is_valid_key`). Blank lines are skipped; BasicSR
would read one as the empty key, so :class:`LmdbWriter` never writes one. Every reader of a
``meta_info.txt`` in this package goes through :func:`read_meta_info`, every writer through
:class:`LmdbWriter`, every validation of a whole LMDB (start-up data checks, ``check-lmdb``) through
:func:`check_lmdb`.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import lmdb
import numpy as np

from kdsr_plugins.core.image_files import preview

__all__ = ['META_INFO_FILE', 'MIN_MAP_SIZE', 'LmdbCheckError', 'LmdbWriter', 'MetaEntry', 'check_lmdb',
           'estimate_map_size', 'format_meta_line', 'is_valid_key', 'meta_info_key', 'meta_info_keys',
           'meta_info_shapes', 'parse_meta_line', 'read_meta_info']

META_INFO_FILE = 'meta_info.txt'
MIN_MAP_SIZE = 64 << 20
_META_LINE = re.compile(r'^(?P<name>[^\s.]+)\.(?P<ext>[A-Za-z0-9]+) \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\) '
                        r'(?P<level>\d+)$')
_WHITESPACE = re.compile(r'\s')


class LmdbCheckError(ValueError):
    """An LMDB folder is missing, incomplete or corrupt."""


def estimate_map_size(raw_bytes: int, num_values: int) -> int:
    """LMDB ``map_size`` for values of ``raw_bytes`` decoded bytes in total.

    PNG-encoded values never exceed the raw size by much; the margin (2x raw, one page of
    overhead per value, plus 64 MB) keeps this safe. ``map_size`` only reserves address space:
    ``data.mdb`` grows with the data actually written.
    """
    return max(MIN_MAP_SIZE, 2 * raw_bytes + 8192 * num_values + MIN_MAP_SIZE)


@dataclass(frozen=True)
class MetaEntry:
    """One ``meta_info.txt`` line: key, ``(h, w, c)`` shape, value file extension, PNG compression level."""

    key: str
    shape: tuple[int, int, int]
    ext: str = 'png'
    compress_level: int = 1


def is_valid_key(key: str) -> bool:
    """Whether ``key`` survives BasicSR's ``line.split('.')[0]``: non-empty ASCII, no dots, no whitespace."""
    return bool(key) and key.isascii() and '.' not in key and not _WHITESPACE.search(key)


def meta_info_key(line: str) -> str:
    """The key of a ``meta_info.txt`` line, by BasicSR's rule ``line.split('.')[0]``."""
    return line.split('.')[0]


def parse_meta_line(line: str) -> MetaEntry:
    """Parse one ``<key>.<ext> (h,w,c) <level>`` line (surrounding whitespace ignored).

    Raises:
        ValueError: The line does not have that form.
    """
    m = _META_LINE.match(line.strip())
    if m is None:
        raise ValueError(f"expected '<key>.<ext> (h,w,c) <level>', got {line.strip()!r}")
    # The name admits no dot or whitespace, so it equals meta_info_key(line): BasicSR reads the same key.
    return MetaEntry(m['name'], (int(m['h']), int(m['w']), int(m['c'])), m['ext'], int(m['level']))


def format_meta_line(key: str, shape: tuple[int, ...], ext: str = 'png', compress_level: int = 1) -> str:
    """The ``meta_info.txt`` line of one value (no newline); a 2-D shape counts as one channel."""
    h, w = int(shape[0]), int(shape[1])
    c = 1 if len(shape) == 2 else int(shape[2])
    return f'{key}.{ext} ({h},{w},{c}) {int(compress_level)}'


def read_meta_info(lmdb_path: str | os.PathLike) -> list[MetaEntry]:
    """Entries of ``<lmdb_path>/meta_info.txt`` in file order.

    Raises:
        LmdbCheckError: The file is missing, empty, has a malformed line or lists a key twice.
    """
    lmdb_path = os.fspath(lmdb_path)
    meta_path = osp.join(lmdb_path, META_INFO_FILE)
    if not osp.isfile(meta_path):
        raise LmdbCheckError(f'missing {META_INFO_FILE} in {lmdb_path}')
    entries: list[MetaEntry] = []
    seen: set[str] = set()
    with open(meta_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = parse_meta_line(line)
            except ValueError:
                raise LmdbCheckError(f'malformed line {lineno} in {meta_path}: {line.strip()!r} '
                                     "(expected '<key>.<ext> (h,w,c) <level>')") from None
            if entry.key in seen:
                raise LmdbCheckError(f'key {entry.key!r} listed twice in {meta_path}')
            seen.add(entry.key)
            entries.append(entry)
    if not entries:
        raise LmdbCheckError(f'empty {META_INFO_FILE} in {lmdb_path}')
    return entries


def meta_info_keys(lmdb_path: str | os.PathLike) -> list[str]:
    """Keys listed in ``meta_info.txt``, in file order (see :func:`read_meta_info`)."""
    return [e.key for e in read_meta_info(lmdb_path)]


def meta_info_shapes(lmdb_path: str | os.PathLike) -> dict[str, tuple[int, int, int]]:
    """``{key: (h, w, c)}`` from ``meta_info.txt``, in file order (see :func:`read_meta_info`)."""
    return {e.key: e.shape for e in read_meta_info(lmdb_path)}


class LmdbWriter:
    """Write values and ``meta_info.txt`` of one BasicSR-format LMDB.

    Values are buffered and committed every ``batch`` puts (or ``max_pending_bytes``, whichever
    comes first); a commit that overflows ``map_size``
    is retried with the map doubled (``map_size`` only reserves address space: ``data.mdb`` grows
    with the data written). :meth:`close` commits the rest and writes ``meta_info.txt`` last, in
    put order, so a folder with a ``meta_info.txt`` is complete. :meth:`abort` (also on an
    exception inside a ``with`` block) closes the environment and removes the folder.

    Args:
        lmdb_path: Folder to write (created if missing; callers decide whether an existing one may go).
        map_size: Initial LMDB map size in bytes.
        batch: Values per write transaction.
        max_pending_bytes: Commit early once the buffered values reach this size.
    """

    def __init__(self, lmdb_path: str | os.PathLike, map_size: int, batch: int = 5000,
                 max_pending_bytes: int = 64 << 20) -> None:
        if int(map_size) <= 0 or int(batch) <= 0:
            raise ValueError(f'map_size and batch must be positive, got {map_size} and {batch}')
        self.path = os.fspath(lmdb_path)
        self.batch = int(batch)
        self.max_pending_bytes = int(max_pending_bytes)
        self._pending_bytes = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._lines: list[str] = []
        self._keys: set[str] = set()
        self._env: lmdb.Environment | None = lmdb.open(self.path, map_size=int(map_size))

    def put(self, key: str, value: bytes, shape: tuple[int, ...], ext: str = 'png', compress_level: int = 1) -> None:
        """Store ``value`` under ``key``, listed in ``meta_info.txt`` with ``shape``, ``ext``, ``compress_level``.

        Raises:
            ValueError: ``key`` breaks the key rule or was put before.
        """
        if self._env is None:
            raise RuntimeError(f'LMDB writer of {self.path} is closed')
        if not is_valid_key(key):
            raise ValueError(f'invalid LMDB key {key!r} (need non-empty ASCII without dots or spaces)')
        if key in self._keys:
            raise ValueError(f'duplicate LMDB key {key!r} in {self.path}')
        self._keys.add(key)
        value = bytes(value)
        self._pending.append((key.encode('ascii'), value))
        self._pending_bytes += len(value)
        self._lines.append(format_meta_line(key, shape, ext, compress_level) + '\n')
        if len(self._pending) >= self.batch or self._pending_bytes >= self.max_pending_bytes:
            self.commit()

    def put_many(self, items: Iterable[tuple[str, bytes, tuple[int, ...]]], ext: str = 'png',
                 compress_level: int = 1) -> None:
        """:meth:`put` every ``(key, value, shape)``."""
        for key, value, shape in items:
            self.put(key, value, shape, ext, compress_level)

    def commit(self) -> None:
        """Write the buffered values in one transaction (doubling the map while it is full)."""
        if self._env is None or not self._pending:
            return
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:  # the transaction was aborted: grow and redo it
                self._env.set_mapsize(self._env.info()['map_size'] * 2)
        self._pending, self._pending_bytes = [], 0

    def close(self) -> str:
        """Commit, close the environment and write ``meta_info.txt``; return the folder."""
        if self._env is None:
            raise RuntimeError(f'LMDB writer of {self.path} is closed')
        self.commit()
        self._env.close()
        self._env = None
        with open(osp.join(self.path, META_INFO_FILE), 'w') as f:
            f.writelines(self._lines)
        return self.path

    def abort(self) -> None:
        """Drop what is buffered, close the environment and remove the folder."""
        if self._env is not None:
            self._env.close()
            self._env = None
        self._pending, self._pending_bytes = [], 0
        shutil.rmtree(self.path, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._lines)

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._env is not None:
            self.close()


def _open_checked(lmdb_path: str) -> lmdb.Environment:
    """Open read-only, verifying first that data.mdb is not truncated (a read past its end is SIGBUS)."""
    data_path = osp.join(lmdb_path, 'data.mdb')
    try:
        env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as e:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: {e}') from e
    needed = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    size = osp.getsize(data_path)
    if size < needed:
        env.close()
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: data.mdb is truncated ({size} bytes, needs {needed})')
    return env


def check_lmdb(lmdb_path: str | os.PathLike, decode: bool = True,
               sample: int | None = None) -> dict[str, tuple[int, int, int]]:
    """Validate a BasicSR-format LMDB.

    Checks: the folder name ends in ``.lmdb``; ``data.mdb`` and ``meta_info.txt`` exist; the
    database opens and is not truncated; every meta key is stored; with ``decode``, every value
    decodes as an image of the shape listed in ``meta_info.txt``.

    Args:
        lmdb_path: The ``.lmdb`` folder.
        decode: Also decode every value (slower; otherwise only presence is checked).
        sample: With ``decode``, decode only this many values, evenly spread over the keys (first
            and last included); every key's presence is still checked.

    Returns:
        ``{key: (h, w, c)}`` from ``meta_info.txt``.

    Raises:
        LmdbCheckError: (a ``ValueError``) naming the first problem found.
    """
    lmdb_path = os.fspath(lmdb_path).rstrip('/\\')
    if not lmdb_path.endswith('.lmdb'):
        raise LmdbCheckError(f"not an LMDB folder (name must end in '.lmdb'): {lmdb_path}")
    if not osp.isdir(lmdb_path):
        raise LmdbCheckError(f'LMDB folder not found: {lmdb_path}')
    if not osp.isfile(osp.join(lmdb_path, 'data.mdb')):
        raise LmdbCheckError(f'missing data.mdb in {lmdb_path}')
    shapes = meta_info_shapes(lmdb_path)
    env = _open_checked(lmdb_path)
    try:
        missing, bad_decode, bad_shape = [], [], []
        keys = list(shapes)
        if decode and sample is not None and len(keys) > sample:
            step = (len(keys) - 1) / max(1, sample - 1)
            to_decode = {keys[round(i * step)] for i in range(sample)}
        else:
            to_decode = set(keys) if decode else set()
        with env.begin(write=False) as txn:
            for key, shape in shapes.items():
                value = txn.get(key.encode('ascii'))
                if value is None:
                    missing.append(key)
                    continue
                if key in to_decode:
                    img = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
                    if img is None:
                        bad_decode.append(key)
                        continue
                    got = (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])
                    if got != shape:
                        bad_shape.append(f'{key} {got} vs meta {shape}')
    except lmdb.Error as e:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: {e}') from e
    finally:
        env.close()
    if missing:
        raise LmdbCheckError(f'meta_info.txt keys missing from the LMDB {lmdb_path}: {preview(missing)}')
    if bad_decode:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: values do not decode as images: {preview(bad_decode)}')
    if bad_shape:
        raise LmdbCheckError(f'image shapes differ from meta_info.txt in {lmdb_path}: {preview(bad_shape, 3)}')
    return shapes
