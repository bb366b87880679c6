"""``moaa validate``: every problem of a config, found before anything starts and without Ray.

Loading already checks the schema, bounds, model references and criteria files. This adds what a
run would only find out later: that the files it reads exist (local inputs, the prompt template,
benchmark files, training data), that the Python functions it names import, and, given a Ray
cluster-launcher file, that every stage fits the cluster's GPUs and custom resources.

Stages run one after another and each stops its model pools when it ends, so the check is per
stage: what a stage asks for at full scale (each of its models' ``num_replicas[1]`` x
``num_gpus``, and x each of its ``resources``; one model at a time in staged mode; training:
``num_workers[1]`` x ``gpus_per_worker``) against the cluster's with every worker type at its
``max_workers``. One actor's GPUs and custom resources together must fit one node type: that is
how a model is pinned to a worker type (a custom resource only that type offers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moaa_ray.callables import load_callable
from moaa_ray.config.loading import ConfigCheck, ConfigError, check_config, read_yaml
from moaa_ray.config.run import MoaaConfig
from moaa_ray.core.templates import load_template
from moaa_ray.core.winrates import load_gamed_baseline

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class Report:
    """What ``moaa validate`` found: problems (exit 2) and notes on what it could not check."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def validate_config(
    path: str | Path, overrides: list[str] | None = None, cluster: str | Path | None = None
) -> Report:
    """Check a config completely, collecting every problem.

    Args:
        path: the YAML config.
        overrides: ``dotted.key=value`` overrides, as for every command.
        cluster: a Ray cluster-launcher YAML (``cluster.yaml``) to check the GPUs against; None
            skips that check.

    Returns:
        The problems, each ``<source>: <dotted.key>: <what is wrong>``, and notes.
    """
    check = check_config(path, overrides)
    report = Report(problems=list(check.problems))
    if check.config is None:
        return report
    _check_files(check, check.config, report)
    report.problems += _gamed_baseline_problems(check, check.config)
    report.problems += _callable_problems(check, check.config)
    if cluster is not None:
        _check_cluster(check, check.config, Path(cluster), report)
    return report


def _named_files(config: MoaaConfig) -> list[tuple[str, str]]:
    """``(dotted key, path)`` of every local file or directory the config reads.

    An input counts as local when its format is jsonl or parquet, its name ends in a file suffix,
    or it starts with ``/``, ``.`` or ``~``; any other name is a ``datasets`` hub name.
    """
    files: list[tuple[str, str]] = []
    for section in ("generate", "preferences"):
        stage = getattr(config, section)
        for i, source in enumerate(stage.inputs if stage else []):
            local = source.format in ("jsonl", "parquet") or source.path.endswith(_LOCAL_SUFFIXES)
            if local or source.path.startswith(("/", ".", "~")):
                files.append((f"{section}.inputs.{i}.path", source.path))
    for i, bench in enumerate(config.evaluate.benchmarks if config.evaluate else []):
        for name in (
            "path",
            "reference_answers_path",
            "baseline_answers_path",
            "gamed_baseline_path",
        ):
            value = getattr(bench, name)
            if value is not None:
                files.append((f"evaluate.benchmarks.{i}.{name}", value))
    for section in ("sft", "dpo"):
        train = getattr(config, section)
        if train is not None and train.data_path is not None:
            files.append((f"{section}.data_path", train.data_path))
    return files


def _check_files(check: ConfigCheck, config: MoaaConfig, report: Report) -> None:
    """Missing files are problems; those on storage this machine does not mount are notes."""
    for key, name in _named_files(config):
        path = Path(name).expanduser()
        if path.exists():
            continue
        storage = _unmounted_storage(path)
        if storage is not None:
            report.notes.append(f"{key}: {name} not checked: {storage} is not mounted here")
        else:
            report.problems.append(f"{check.source(key)}: {key}: {name} does not exist")
    if config.generate is not None:
        template = config.generate.aggregate_template
        try:
            load_template(template)
        except OSError:
            report.problems.append(
                f"{check.source('generate.aggregate_template')}: generate.aggregate_template: "
                f"{template!r} is neither a file nor a template in moaa_ray/prompts/"
            )


def _gamed_baseline_problems(check: ConfigCheck, config: MoaaConfig) -> list[str]:
    """Gamed-baseline files here that are not AlpacaEval's ``df_gamed.csv``: a column missing or
    a value that is no number."""
    problems = []
    for i, bench in enumerate(config.evaluate.benchmarks if config.evaluate else []):
        key, name = f"evaluate.benchmarks.{i}.gamed_baseline_path", bench.gamed_baseline_path
        if name is None or not Path(name).expanduser().is_file():
            continue  # a missing file is already a problem, or a note when it is not mounted
        try:
            load_gamed_baseline(Path(name).expanduser())
        except ValueError as exc:
            problems.append(f"{check.source(key)}: {key}: {exc}")
    return problems


def _unmounted_storage(path: Path) -> Path | None:
    """The storage root of an absolute path when it is absent here (``/mnt/shared`` on a laptop).

    The root is the path's first two directories (``/data`` for a file directly under it). A
    missing file whose root exists is a plain mistake; a missing root means other machines' storage.
    """
    if not path.is_absolute():
        return None
    parts = path.parts[:3] if len(path.parts) > 3 else path.parts[:2]
    root = Path(*parts)
    return None if root.exists() else root


def _callable_problems(check: ConfigCheck, config: MoaaConfig) -> list[str]:
    """Functions named by function engines and the verifier that cannot be imported."""
    specs = [
        (f"models.{n}.path", m.path) for n, m in config.models.items() if m.engine == "function"
    ]
    if config.verifier is not None:
        specs.append(("verifier", config.verifier))
    problems = []
    for key, spec in specs:
        try:
            load_callable(spec)
        except ValueError as exc:
            problems.append(f"{check.source(key)}: {key}: {exc}")
    return problems


@dataclass(frozen=True)
class ClusterResources:
    """A cluster-launcher file's stated resources (``resources:`` of each node type: GPUs and
    custom resources; CPUs and memory the launcher detects): each node type's, and the cluster's
    with every worker type at its ``max_workers``."""

    node_types: dict[str, dict[str, float]]
    total: dict[str, float]

    def fitting(self, actor: dict[str, float]) -> list[str]:
        """The node types one node of which holds an actor asking for ``actor``."""
        return [
            name
            for name, offered in self.node_types.items()
            if all(offered.get(key, 0.0) >= amount for key, amount in actor.items() if amount > 0)
        ]


def read_cluster_resources(path: Path) -> ClusterResources:
    """The resources of a Ray cluster-launcher config with every worker type at ``max_workers``.

    A node type's resources are its ``resources:`` (a GPU count not stated is 0: the launcher can
    detect it, this check cannot). Worker types are filled most GPUs first up to the cluster's
    ``max_workers`` (Ray's default: 2); the head node counts once.

    Raises:
        ConfigError: the file cannot be read or has no ``available_node_types``.
    """
    try:
        cluster = read_yaml(path.read_text(), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read cluster config: {exc}") from None
    types = cluster.get("available_node_types") if isinstance(cluster, dict) else None
    if (
        not isinstance(types, dict)
        or not types
        or not all(isinstance(t, dict) for t in types.values())
    ):
        raise ConfigError(f"{path}: available_node_types: expected the cluster's node types")
    try:
        return _count_resources(cluster, types)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot count its resources: {exc}") from None


def _count_resources(cluster: dict, types: dict[str, dict]) -> ClusterResources:
    stated = {
        name: {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        for name, spec in types.items()
    }
    head = cluster.get("head_node_type")
    counts = {str(head): 1} if head in types else {}
    cap = int(cluster.get("max_workers", 2))
    workers = (n for n in types if n != head)
    for name in sorted(workers, key=lambda n: stated[n].get("GPU", 0.0), reverse=True):
        counts[name] = max(0, min(int(types[name].get("max_workers", cap)), cap))
        cap -= counts[name]
    total: dict[str, float] = {}
    for name, count in counts.items():
        for key, amount in stated[name].items():
            total[key] = total.get(key, 0.0) + amount * count
    return ClusterResources(node_types=stated, total=total)


def _actor_demands(config: MoaaConfig) -> list[tuple[str, dict[str, float]]]:
    """Each model's and training stage's config key, and what one of its actors asks of a node."""
    demands = [
        (f"models.{n}.resources" if m.resources else f"models.{n}.num_gpus",
         {"GPU": m.num_gpus, **m.resources})
        for n, m in config.models.items()
    ]  # fmt: skip
    for stage in ("sft", "dpo"):
        train = getattr(config, stage)
        if train is not None:
            demands.append((f"{stage}.gpus_per_worker", {"GPU": train.gpus_per_worker}))
    return demands


def _stage_demands(config: MoaaConfig) -> dict[str, dict[str, float]]:
    """What each stage asks for at full scale, by resource (see the module docstring)."""
    pools: dict[str, set[str]] = {}
    for key, name in config.model_references():
        stage = key.split(".")[0]
        if stage not in ("sft", "dpo") and name in config.models:  # sft/dpo.model: a start point
            pools.setdefault(stage, set()).add(name)
    demand: dict[str, dict[str, float]] = {}
    for stage, names in pools.items():
        staged = (
            stage == "generate" and config.generate is not None and config.generate.mode == "staged"
        )
        combine = max if staged else sum
        models = [config.models[n] for n in names]
        keys = {"GPU", *(k for m in models for k in m.resources)}
        demand[stage] = {
            key: combine(
                m.num_replicas[1] * (m.num_gpus if key == "GPU" else m.resources.get(key, 0.0))
                for m in models
            )
            for key in keys
        }
    for stage in ("sft", "dpo"):
        train = getattr(config, stage)
        if train is not None:
            demand[stage] = {"GPU": train.num_workers[1] * train.gpus_per_worker}
    return demand


def _amount(amount: float, resource: str) -> str:
    return f"{amount:g} GPUs" if resource == "GPU" else f"{amount:g} of resource {resource!r}"


def _offers(resources: dict[str, float]) -> str:
    return ", ".join(f"{key}: {amount:g}" for key, amount in resources.items()) or "nothing stated"


def _check_cluster(check: ConfigCheck, config: MoaaConfig, path: Path, report: Report) -> None:
    """Each stage's resources against the cluster's, and each actor's against its node types."""
    try:
        cluster = read_cluster_resources(path)
    except ConfigError as exc:
        report.problems += exc.problems
        return
    demands = _stage_demands(config)
    for stage, demand in demands.items():
        for resource, amount in sorted(demand.items()):
            have = cluster.total.get(resource, 0.0)
            if amount > have:
                report.problems.append(
                    f"{check.path}: {stage}: asks for {_amount(amount, resource)} at max "
                    f"replicas or workers; {path} has {have:g} with every worker type at "
                    f"max_workers"
                )
    for key, asks in _actor_demands(config):
        if cluster.fitting(asks):
            continue
        if key.endswith(".resources"):
            types = "; ".join(f"{n}: {_offers(r)}" for n, r in cluster.node_types.items())
            report.problems.append(
                f"{check.source(key)}: {key}: one actor asks for {_offers(asks)}, which no node "
                f"type of {path} offers ({types})"
            )
        else:
            most = max((r.get("GPU", 0.0) for r in cluster.node_types.values()), default=0.0)
            report.problems.append(
                f"{check.source(key)}: {key}: {asks['GPU']:g} GPUs for one actor, but no node of "
                f"{path} has more than {most:g}"
            )
    largest = max((d.get("GPU", 0.0) for d in demands.values()), default=0)
    report.notes.append(
        f"{path}: {cluster.total.get('GPU', 0.0):g} GPUs at max workers; the largest stage asks "
        f"for {largest:g}"
    )


def format_report(config_path: str, report: Report) -> str:
    """The lines ``moaa validate`` prints: each problem, or that the config is valid; then notes."""
    if report.problems:
        head = [f"{config_path}: {len(report.problems)} problem(s):"]
        head += [f"  {problem}" for problem in report.problems]
    else:
        head = [f"{config_path}: valid"]
    return "\n".join(head + [f"  note: {note}" for note in report.notes])
