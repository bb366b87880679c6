"""Run directories: a manifest, one folder of Parquet shards per stage, a rejects file per stage.

Shards are written whole (temporary file, then rename), each holding finished rows keyed by ``row_id``;
a resubmitted stage reads the ids already written and processes only the others, so a crash loses at
most the batches in flight and never duplicates a row. One driver at a time holds a run directory
(:class:`RunLock`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from moaa_ray.redact import redact, register_secrets

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".moaa.lock"
SUPERSEDED = "superseded"
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


class RunLocked(RuntimeError):
    """Another live driver holds the run directory."""


class RunLock:
    """One driver per run directory: ``.moaa.lock`` records host, pid and start time.

    Re-entrant within a process (``moaa run`` holds it around stages that take it again). A lock
    whose process is gone on this host is stale and taken over with a warning; a lock held from
    another host cannot be checked, so the error says how to remove it.
    """

    _held: Counter = Counter()  # lock path -> depth, in this process

    def __init__(self, root: Path):
        self.path = root / LOCK

    def __enter__(self) -> RunLock:
        key = str(self.path.resolve())
        if not self._held[key]:
            self._acquire()
        self._held[key] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        key = str(self.path.resolve())
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
            self.path.unlink(missing_ok=True)

    def _acquire(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._break_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            return
        raise RunLocked(f"could not take {self.path}")

    def _break_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            holder = {}
        host, pid = holder.get("host"), holder.get("pid")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            logger.warning("taking over the stale lock of pid %s (no longer running)", pid)
            self.path.unlink(missing_ok=True)
            return
        if not holder:  # being written right now, or unreadable: give the writer a moment
            time.sleep(0.2)
            return
        raise RunLocked(
            f"{self.path.parent} is in use by pid {pid} on {host} since {holder.get('since')}; "
            f"wait for that driver, or use another run directory. If that driver is gone, "
            f"delete {self.path}."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunDir:
    """A run's directory and its ``manifest.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self) -> RunLock:
        """The run directory's driver lock (a context manager)."""
        return RunLock(self.root)

    def move_aside(self, paths: list[Path]) -> Path | None:
        """Move existing ``paths`` into ``superseded/<time>/``; never deletes. Returns the folder."""
        existing = [p for p in paths if p.exists()]
        if not existing:
            return None
        target = self.root / SUPERSEDED / time.strftime("%Y%m%d-%H%M%S")
        target.mkdir(parents=True, exist_ok=True)
        for path in existing:
            os.replace(path, target / path.relative_to(self.root).as_posix().replace("/", "__"))
        logger.warning("moved earlier outputs %s to %s", [p.name for p in existing], target)
        return target

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one."""
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def record_start(self, config: dict[str, Any]) -> None:
        """Store the resolved config, versions and git sha; credentials are masked (:mod:`redact`).

        Input hashes are part of each stage's fingerprint, under ``stages.<stage>.fingerprint``.
        """
        register_secrets(config)
        manifest = self.manifest()
        manifest.update(config=config, versions=package_versions(), git_sha=git_sha())
        self._write_manifest(manifest)

    def record(self, **fields: Any) -> None:
        """Set top-level manifest fields (e.g. the run's ``models``)."""
        manifest = self.manifest()
        manifest.update(fields)
        self._write_manifest(manifest)

    def stage_status(self, stage: str) -> dict[str, Any]:
        """What the manifest says of a stage (empty if it never ran)."""
        return self.manifest()["stages"].get(stage, {})

    def update_stage(self, stage: str, reset: bool = False, **fields: Any) -> None:
        """Merge fields (status, counts, timings) into a stage's manifest entry (``reset``: replace)."""
        manifest = self.manifest()
        if reset:
            manifest["stages"].pop(stage, None)
        entry = manifest["stages"].setdefault(stage, {})
        entry.update(fields, updated_at=_now())
        self._write_manifest(manifest)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(redact(manifest), indent=2, sort_keys=True)
        _write_atomically(self.root / MANIFEST, text)

    def remove_temp_files(self, path: Path) -> int:
        """Delete leftovers of interrupted atomic writes (``.*.tmp``) under ``path``; returns how many.

        Only the lock holder calls this, so no other writer's temporary file is in flight.
        """
        if not path.exists():
            return 0
        leftovers = [p for p in path.rglob(".*.tmp") if p.is_file()]
        for leftover in leftovers:
            leftover.unlink()
        return len(leftovers)

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
        self.path.mkdir(parents=True, exist_ok=True)  # again: --fresh may have moved it aside
        path = self.path / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, path)
        return path

    def read(self):
        """All shards as one Arrow table (None when the stage wrote nothing).

        A column that older shards lack (the schema grew since) reads as null in their rows.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shards()
        if not shards:
            return None
        return pa.concat_tables([pq.read_table(s) for s in shards], promote_options="default")

    def write_rejects(self, rejects: list[Any], name: str = "rejects.jsonl") -> Path:
        """Write the stage's rejects (dataclasses or dicts) as JSONL, replacing an earlier file."""
        lines = [
            json.dumps(redact(asdict(r) if hasattr(r, "__dataclass_fields__") else r))
            for r in rejects
        ]
        path = self.path / name
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, "".join(line + "\n" for line in lines))
        return path
