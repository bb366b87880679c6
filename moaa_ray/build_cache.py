"""Model folders built once per cache directory: atomically (built aside, renamed into place) and
under a file lock, so concurrent processes on one node build each folder once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$MOAA_CACHE_DIR`` or ``~/.cache/moaa_ray``."""
    return Path(os.environ.get("MOAA_CACHE_DIR", Path.home() / ".cache" / "moaa_ray"))


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Build ``target`` unless it exists; other processes wait on a lock instead of building it too.

    Args:
        target: the directory to make; it counts as built once it holds ``config.json``.
        build: writes the model into the (temporary) directory it is given, renamed to ``target``.

    Returns:
        ``target``.
    """
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _build_atomically(target, build)
    return target


def _build_atomically(target: Path, build) -> None:
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        build(tmp)
        os.replace(tmp, target)
        logger.info("built %s", target)
    except OSError:
        if not (target / "config.json").exists():  # lost a race only if the winner finished
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
