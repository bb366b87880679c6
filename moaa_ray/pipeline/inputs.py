"""Read prompt rows from JSONL, Parquet or a datasets name/path, and validate them into states."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from moaa_ray.config import InputConfig
from moaa_ray.core.moa import MoaRow, new_state
from moaa_ray.records import Reject, RowError, compute_row_id, conversation_from_row


def detect_format(config: InputConfig) -> str:
    """``jsonl``/``parquet`` by file suffix (or a directory's files), else ``datasets``."""
    if config.format != "auto":
        return config.format
    path = Path(config.path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    suffixes = {f.suffix for f in files if f.is_file()}
    if path.exists() and suffixes & {".jsonl", ".json"}:
        return "jsonl"
    if path.exists() and ".parquet" in suffixes:
        return "parquet"
    return "datasets"


# One row as read: where it is (``file.jsonl:12``, ``file.parquet#3``, ``name[split]#3``) and its
# data, or the RowError that makes it unreadable (a line that is not UTF-8 or not a JSON object).
RawRow = tuple[str, dict[str, Any] | RowError]


def read_rows(config: InputConfig) -> Iterator[tuple[int, str, dict[str, Any] | RowError]]:
    """Yield ``(position in the source, where, row or RowError)`` for the rows the config selects.

    ``limit`` keeps the first N rows; ``sample`` then keeps a seeded random N of those (see
    :func:`sample_rows`), in source order. A line that cannot be read becomes a RowError in place
    of its row, so the rows after it go on.
    """
    fmt = detect_format(config)
    rows: Iterable[tuple[int, RawRow]] = enumerate(_READERS[fmt](config))
    rows = itertools.islice(rows, config.limit)
    if config.sample is not None:
        rows = sample_rows(rows, config.sample, config.seed)
    for index, (where, row) in rows:
        yield index, where, row


def sample_rows(
    rows: Iterable[tuple[int, RawRow]], size: int, seed: int
) -> list[tuple[int, RawRow]]:
    """A seeded random ``size`` of the ``(position, row)`` items, in position order.

    Each position draws a number from a hash of ``seed`` and the position alone, and the ``size``
    lowest draws are kept: the same seed picks the same rows whatever the files, shards or workers,
    holding only ``size`` rows in memory while the source streams by.
    """
    kept = heapq.nsmallest(size, rows, key=lambda item: _draw(seed, item[0]))
    return sorted(kept, key=lambda item: item[0])


def _draw(seed: int, position: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _files(config: InputConfig, suffixes: tuple[str, ...]) -> list[Path]:
    path = Path(config.path)
    if path.is_dir():
        return sorted(f for f in path.iterdir() if f.suffix in suffixes)
    if not path.exists():
        raise FileNotFoundError(f"input file {config.path} does not exist")
    return [path]


def _read_jsonl(config: InputConfig) -> Iterator[RawRow]:
    for file in _files(config, (".jsonl", ".json")):
        with file.open("rb") as handle:  # decoded line by line: one bad byte rejects one line
            for line_number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield f"{file}:{line_number}", _parse_line(raw)


def _parse_line(raw: bytes) -> dict[str, Any] | RowError:
    """One JSONL line as a row, or the RowError saying why it cannot be one."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return RowError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})")
    except json.JSONDecodeError as exc:
        return RowError(f"not JSON ({exc.msg})")
    return row if isinstance(row, dict) else RowError("line is not a JSON object")


def _read_parquet(config: InputConfig) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    for file in _files(config, (".parquet",)):
        rows = (
            r for b in pq.ParquetFile(file).iter_batches(batch_size=1024) for r in b.to_pylist()
        )
        for number, row in enumerate(rows):
            yield f"{file}#{number}", row


def _read_datasets(config: InputConfig) -> Iterator[RawRow]:
    import datasets

    rows = datasets.load_dataset(config.path, split=config.split, streaming=True)
    for number, row in enumerate(rows):
        yield f"{config.path}[{config.split}]#{number}", row


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "datasets": _read_datasets}


def load_states(configs: list[InputConfig]) -> tuple[list[MoaRow], list[Reject]]:
    """Read every source, validate rows, and build MoA states keyed by row id.

    Returns:
        States (first occurrence of each row id) and rejects (bad rows and duplicates), in input order.
    """
    states: dict[str, MoaRow] = {}
    rejects: list[Reject] = []
    for config in configs:
        for index, where, row in read_rows(config):
            try:
                if isinstance(row, RowError):
                    raise row
                messages = conversation_from_row(
                    row,
                    prompt_column=config.prompt_column,
                    messages_column=config.messages_column,
                    system_column=config.system_column,
                    max_prompt_chars=config.max_prompt_chars,
                )
            except RowError as exc:
                rejects.append(Reject(config.path, index, f"{where}: {exc}"))
                continue
            row_id = compute_row_id(messages)
            if row_id in states:
                reason = f"{where}: duplicate of an earlier row"
                rejects.append(Reject(config.path, index, reason, row_id))
                continue
            states[row_id] = new_state(row_id, messages, source=f"{config.path}#{index}")
    return list(states.values()), rejects


def fingerprint_input(config: InputConfig) -> str:
    """sha256 of an input's files (or of its name and split for a datasets hub name)."""
    digest = hashlib.sha256()
    fmt = detect_format(config)
    if fmt == "datasets":
        digest.update(f"{config.path}:{config.split}".encode())
    else:
        for file in _files(config, (".jsonl", ".json", ".parquet")):
            digest.update(file.read_bytes())
    return digest.hexdigest()
