"""Read prompt rows from JSONL, Parquet or a datasets name/path, and validate them into states."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moaa_ray.config import InputConfig
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


def read_rows(config: InputConfig) -> Iterator[dict[str, Any]]:
    """Yield raw rows (``limit`` at most); a line that is not JSON yields ``{"__error__": ...}``."""
    fmt = detect_format(config)
    rows = {"jsonl": _read_jsonl, "parquet": _read_parquet, "datasets": _read_datasets}[fmt](config)
    for index, row in enumerate(rows):
        if config.limit is not None and index >= config.limit:
            return
        yield row


def _files(config: InputConfig, suffixes: tuple[str, ...]) -> list[Path]:
    path = Path(config.path)
    if path.is_dir():
        return sorted(f for f in path.iterdir() if f.suffix in suffixes)
    if not path.exists():
        raise FileNotFoundError(f"input file {config.path} does not exist")
    return [path]


def _read_jsonl(config: InputConfig) -> Iterator[dict[str, Any]]:
    for file in _files(config, (".jsonl", ".json")):
        with file.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"__error__": f"{file.name}:{line_number}: not JSON ({exc.msg})"}
                    continue
                yield row if isinstance(row, dict) else {"__error__": "line is not a JSON object"}


def _read_parquet(config: InputConfig) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for file in _files(config, (".parquet",)):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
            yield from batch.to_pylist()


def _read_datasets(config: InputConfig) -> Iterator[dict[str, Any]]:
    import datasets

    yield from datasets.load_dataset(config.path, split=config.split, streaming=True)


def load_states(configs: list[InputConfig]) -> tuple[list[dict], list[Reject]]:
    """Read every source, validate rows, and build MoA states keyed by row id.

    Returns:
        States (first occurrence of each row id) and rejects (bad rows and duplicates), in input order.
    """
    from moaa_ray.core.moa import new_state

    states: dict[str, dict] = {}
    rejects: list[Reject] = []
    for config in configs:
        for index, row in enumerate(read_rows(config)):
            try:
                if "__error__" in row:
                    raise RowError(row["__error__"])
                messages = conversation_from_row(
                    row,
                    prompt_column=config.prompt_column,
                    messages_column=config.messages_column,
                    system_column=config.system_column,
                    max_prompt_chars=config.max_prompt_chars,
                )
            except RowError as exc:
                rejects.append(Reject(config.path, index, str(exc)))
                continue
            row_id = compute_row_id(messages)
            if row_id in states:
                rejects.append(Reject(config.path, index, "duplicate of an earlier row", row_id))
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
