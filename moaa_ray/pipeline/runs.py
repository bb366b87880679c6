"""Run directories: a manifest, one folder of Parquet shards per stage, a rejects file per stage.

Shards are written whole (temporary file, then rename), each holding finished rows keyed by ``row_id``;
a resubmitted stage reads the ids already written and processes only the others, so a crash loses at
most the batches in flight and never duplicates a row.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "moaa-ray", "ray", "torch", "transformers", "vllm", "deepspeed", "trl", "peft", "datasets",
    "pyarrow",
)  # fmt: skip


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a run's results."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """The working directory's git commit, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    """A run's directory and its ``manifest.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one."""
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def record_start(self, config: dict[str, Any], inputs: dict[str, str] | None = None) -> None:
        """Store the resolved config, versions, git sha and input hashes (no secrets live in config)."""
        manifest = self.manifest()
        manifest.update(config=config, versions=package_versions(), git_sha=git_sha())
        manifest.setdefault("inputs", {}).update(inputs or {})
        _write_atomically(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def stage_status(self, stage: str) -> dict[str, Any]:
        """What the manifest says of a stage (empty if it never ran)."""
        return self.manifest()["stages"].get(stage, {})

    def update_stage(self, stage: str, **fields: Any) -> None:
        """Merge fields (status, counts, timings) into a stage's manifest entry."""
        manifest = self.manifest()
        entry = manifest["stages"].setdefault(stage, {})
        entry.update(fields, updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _write_atomically(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def stage(self, name: str) -> StageDir:
        """The folder of one stage."""
        return StageDir(self.root / name)


class StageDir:
    """Parquet shards of finished rows plus a rejects file, for one stage."""

    def __init__(self, path: Path):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    def shards(self) -> list[Path]:
        """Finished shard files, oldest name first."""
        return sorted(self.path.glob("part-*.parquet"))

    def done_ids(self) -> set[str]:
        """Row ids already written."""
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for shard in self.shards():
            ids.update(pq.read_table(shard, columns=["row_id"]).column("row_id").to_pylist())
        return ids

    def write_shard(self, rows: list[dict[str, Any]], schema: Any) -> Path | None:
        """Write rows as one new shard, atomically; nothing for no rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return None
        path = self.path / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, path)
        return path

    def read(self):
        """All shards as one Arrow table (None when the stage wrote nothing)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shards()
        return pa.concat_tables([pq.read_table(s) for s in shards]) if shards else None

    def write_rejects(self, rejects: list[Any], name: str = "rejects.jsonl") -> Path:
        """Write the stage's rejects (dataclasses or dicts) as JSONL, replacing an earlier file."""
        lines = [
            json.dumps(asdict(r) if hasattr(r, "__dataclass_fields__") else r) for r in rejects
        ]
        path = self.path / name
        _write_atomically(path, "".join(line + "\n" for line in lines))
        return path
