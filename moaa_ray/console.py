"""What a person sees: a header, one progress line per stage, then the summary table.

Everything else goes to ``<run_dir>/logs/``: our own log lines, Ray's, Ray Data's, Ray Train's and
the libraries' (transformers, DeepSpeed, Python warnings), while the engine actors' and Ray Train
workers' output stays in Ray's session logs, linked there as ``logs/ray``. Our warnings and errors
still reach the console; ``-v`` brings everything back.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from moaa_ray.core.winrates import LC_FALLBACK_LABEL
from moaa_ray.redact import RedactingFilter

logger = logging.getLogger(__name__)
LOG_FILE = "moaa.log"
# Loggers that libraries give console handlers of their own; their records go to the log file.
LIBRARY_LOGGERS = (
    "ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "transformers", "deepspeed",
    "DeepSpeed", "datasets", "torch", "py.warnings",
)  # fmt: skip
# Ray Data sets up its loggers again for each dataset it runs, from this file when the variable names one.
RAY_DATA_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"ray.data": {"level": "INFO", "handlers": [], "propagate": True}},
}
LINE_EVERY_S = 10.0  # without a terminal, one progress line this often
BAR_WIDTH = 24

# Quiet only once :func:`setup` says so, so using the package as a library changes no logging.
_state: dict[str, Any] = {"verbose": True, "log_dir": None}


def setup(run_dir: str | Path, verbose: bool) -> Path:
    """Send every log record to ``<run_dir>/logs/moaa.log``; only ours reach the console.

    Args:
        run_dir: the run directory.
        verbose: show every library's log lines and the actors' output on the console too.

    Returns:
        The log file.
    """
    log_file = Path(run_dir) / "logs" / LOG_FILE
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for handler in (to_file, to_console):
        handler.addFilter(RedactingFilter())
    if not verbose:
        to_console.setLevel(logging.WARNING)
        to_console.addFilter(lambda record: record.name.startswith("moaa_ray"))
    root = logging.getLogger()
    root.handlers = [to_file, to_console]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _state.update(verbose=verbose, log_dir=log_file.parent)
    if not verbose:
        ray_data_logging = log_file.parent / "ray_data_logging.json"
        ray_data_logging.write_text(json.dumps(RAY_DATA_LOGGING))
        os.environ["RAY_DATA_LOGGING_CONFIG"] = str(ray_data_logging)
    route_library_logs()
    return log_file


def route_library_logs() -> None:
    """Take the console handlers off the libraries' loggers, so their records reach ours only.

    Libraries add those handlers when imported (Ray Data: at ``import ray.data``), so this runs again
    after the heavy imports and after connecting. Does nothing in verbose mode or before :func:`setup`.
    """
    if _state["verbose"]:
        return
    if (
        "ray.data" in sys.modules
    ):  # Ray Data's progress bars and progress log lines; ours replace them
        context = sys.modules["ray.data"].DataContext.get_current()
        context.enable_progress_bars = False
        context.enable_operator_progress_bars = False
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger.propagate = True


def is_verbose() -> bool:
    """Whether library output belongs on the console (``-v``, or not set up by the CLI)."""
    return _state["verbose"]


def say(text: str, stream: TextIO | None = None) -> None:
    """One line for the person at the console."""
    print(text, file=stream or sys.stdout, flush=True)


def link_ray_logs(session_dir: str | None) -> None:
    """Point ``<run_dir>/logs/ray`` at the Ray session's logs (actors, workers, Ray Data).

    A real directory there (a run directory copied with its links followed) is left alone: those are
    an earlier session's logs, and logging is no reason to fail a run.
    """
    if not session_dir or _state["log_dir"] is None:
        return
    link = _state["log_dir"] / "ray"
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        logger.warning("%s is not a link; Ray's logs of this session are in %s", link, session_dir)
        return
    link.symlink_to(Path(session_dir) / "logs", target_is_directory=True)


class Progress:
    """One stage's progress: a live bar on a terminal, otherwise a line every ``LINE_EVERY_S``.

    ``update`` takes the count done so far and any figures to show (``failed=2``, ``loss=0.61``);
    ``close`` prints the final line with the rate and the seconds taken.
    """

    def __init__(
        self,
        name: str,
        total: int,
        unit: str = "rows",
        stream: TextIO | None = None,
        every_s: float = LINE_EVERY_S,
    ):
        self.name, self.total, self.unit = name, total, unit
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.every_s = every_s
        self.started = self.last_line = time.monotonic()
        self.done = 0
        self.figures: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, done: int, **figures: Any) -> None:
        """Record progress; draw the bar, or print a line when one is due."""
        with self._lock:
            self.done = done
            self.figures.update(figures)
            now = time.monotonic()
            if self.live:
                self.stream.write("\r" + self.line(now) + "\033[K")
                self.stream.flush()
            elif now - self.last_line >= self.every_s:
                self.last_line = now
                say(self.line(now), self.stream)

    def close(self) -> None:
        """Print the final line."""
        with self._lock:
            now = time.monotonic()
            say(("\r" if self.live else "") + self.line(now, final=True), self.stream)

    def line(self, now: float, final: bool = False) -> str:
        """``name  [####----]  done/total unit · figures · rate``."""
        elapsed = max(now - self.started, 1e-9)
        filled = round(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        parts = [f"{self.done}/{self.total} {self.unit}"]
        parts += [f"{k.replace('_', ' ')} {_short(v)}" for k, v in self.figures.items()]
        parts.append(f"{self.done / elapsed:.2f} {self.unit}/s")
        if final:
            parts.append(f"{elapsed:.0f} s")
        return f"{self.name:<20} [{bar}] " + " · ".join(parts)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def follow_file(path: Path, apply: Callable[[dict], None], every_s: float = 1.0):
    """A context manager that calls ``apply`` with the JSON in ``path`` whenever it changes.

    Training's rank-0 worker writes its progress there; the driver, blocked in ``fit()``, follows it.
    """
    return _FileFollower(path, apply, every_s)


class _FileFollower:
    def __init__(self, path: Path, apply: Callable[[dict], None], every_s: float):
        self.path, self.apply, self.every_s = path, apply, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-follower", daemon=True)

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(self.every_s):
            try:
                stamp = self.path.stat().st_mtime_ns
                if stamp != seen:
                    seen = stamp
                    self.apply(json.loads(self.path.read_text()))
            except (OSError, ValueError):  # not written yet, or replaced while read
                continue

    def __enter__(self) -> _FileFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_json_atomically(path: Path, value: dict) -> None:
    """Write ``value`` as JSON so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def format_table(summary: dict) -> str:
    """The final table: one line per stage with its key figures and seconds, then where things are.

    A stage's benchmarks and its verifier figures (``verifier``) follow on lines of their own.

    Args:
        summary: ``stages`` (name -> the stage's summary), ``run_dir`` and ``final_model``.
    """
    keys = (
        "rows_total", "rows_rejected", "pairs_kept", "prompts_dropped", "final_loss", "steps",
        "win_rate", "lc_win_rate",
    )  # fmt: skip
    lines = [f"{'stage':<22} {'seconds':>8}  figures", "-" * 72]
    for name, stage in summary["stages"].items():
        shown = [f"{k}={_short(stage[k])}" for k in keys if stage.get(k) is not None]
        if stage.get("skipped"):
            shown.insert(0, "already done")
        if stage.get("status", "done") != "done":  # say it first: the stage is not complete
            shown.insert(0, f"{stage['status'].upper()}: rows_failed={stage.get('rows_failed')}")
        figures = ", ".join(shown)
        lines.append(f"{name:<22} {stage.get('seconds', 0):>8.1f}  {figures}")
        for bench, result in stage.get("benchmarks", {}).items():
            if result.get("format") == "verified":
                lines.append(
                    f"  {bench:<20} {'':>8}  accuracy={_short(result['accuracy'])} "
                    f"({result['correct']} of {result['verifiable']} verifiable correct)"
                )
                continue
            if result.get("baseline") is None:  # graded only (MT-Bench with baseline: none)
                overall = (result.get("mt_bench") or {}).get("overall")
                lines.append(f"  {bench:<20} {'':>8}  mt_bench={_short(overall)} (no baseline)")
                continue
            bt = result.get("bt") or {}
            fallback = result.get("lc_win_rate_kind") == "fallback"
            lc = LC_FALLBACK_LABEL if fallback else "lc_win_rate"
            lines.append(
                f"  {bench:<20} {'':>8}  win_rate={_short(result.get('win_rate'))}, "
                f"{lc}={_short(result.get('lc_win_rate'))}, bt={_short(bt.get('score'))} "
                f"[{_short(bt.get('lower'))}, {_short(bt.get('upper'))}] vs {result.get('baseline')}"
            )
        if stage.get("verifier"):
            lines.append(f"  {'verifier':<20} {'':>8}  {', '.join(_figures(stage['verifier']))}")
    measured = [m for m in summary.get("models", []) if m["accuracy"] is not None]
    if measured:
        lines += ["-" * 72, f"{'model':<22} {'accuracy':>8}  path"]
        for model in measured:
            accuracy = model["accuracy"]
            if isinstance(accuracy, dict):  # one figure per verified benchmark
                accuracy = " ".join(_short(value) for value in accuracy.values())
            lines.append(f"{model['stage']:<22} {_short(accuracy):>8}  {model['model_path'] or ''}")
    lines += ["-" * 72, f"run directory: {summary['run_dir']}"]
    if summary.get("final_model"):
        lines.append(f"final model:   {summary['final_model']}")
    return "\n".join(lines)


def _figures(values: dict, prefix: str = "") -> list[str]:
    """``key=value`` for each figure; a nested figure is named ``outer.inner``."""
    shown = []
    for key, value in values.items():
        if isinstance(value, dict):
            shown += _figures(value, f"{prefix}{key}.")
        else:
            shown.append(f"{prefix}{key}={_short(value)}")
    return shown


def _short(value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
