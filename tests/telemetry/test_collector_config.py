"""Static checks of otel-collector.yaml and compose.yaml (Docker is not needed to run them).

Each ``*_problems`` function returns a list of human-readable problems (empty when the file is
fine). The tests assert the shipped files have none, and ``test_checkers_catch_broken_configs``
feeds deliberately broken copies to the same functions so no check can pass vacuously.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_FILE = ROOT / "otel-collector.yaml"
COMPOSE_FILE = ROOT / "compose.yaml"

Config = dict[str, Any]

SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}
SIGNALS = {"traces", "metrics", "logs", "profiles"}
DURATION_RE = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$")
DURATION_KEYS = {"timeout", "interval", "max_elapsed_time"}
DURATION_SUFFIXES = ("_timeout", "_interval")
# Count-valued keys that merely look like batch settings: they must be plain integers.
COUNT_KEYS = {"send_batch_size", "send_batch_max_size"}
REMOVED_EXPORTER_TYPES = {"jaeger", "jaeger_thrift", "jaeger_thrift_http", "logging"}
REMOVED_RECEIVER_TYPES = {"opencensus"}
# OTLP/gRPC exporter was renamed to `otlp_grpc` (and `otlphttp` to `otlp_http`) in v0.144.0.
RENAME_VERSION = (0, 144, 0)
DEPRECATED_ALIASES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}
OTLP_GRPC_TYPES = {"otlp_grpc", "otlp"}
LOOPBACK = "127.0.0.1"


def load_yaml(path: Path) -> Config:
    """Parse a YAML file with the safe loader and insist on a mapping at the top."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} must hold a mapping at the top level"
    return data


def component_type(component_id: str) -> str:
    """`otlp_grpc/jaeger` -> `otlp_grpc`: the type part of a `type[/name]` component id."""
    return component_id.split("/", 1)[0]


def pipelines(cfg: Config) -> dict[str, Config]:
    found = (cfg.get("service") or {}).get("pipelines") or {}
    return found if isinstance(found, dict) else {}


def section(cfg: Config, name: str) -> Config:
    found = cfg.get(name) or {}
    return found if isinstance(found, dict) else {}


# --- otel-collector.yaml checks -------------------------------------------------------------


def pipeline_reference_problems(cfg: Config) -> list[str]:
    """Every id a pipeline names must be defined in the matching top-level section."""
    problems: list[str] = []
    if not pipelines(cfg):
        problems.append("service.pipelines defines no pipeline")
    for pipe_id, pipe in pipelines(cfg).items():
        if component_type(pipe_id) not in SIGNALS:
            problems.append(f"pipeline {pipe_id!r} is not one of {sorted(SIGNALS)}")
        for key, sect in SECTIONS.items():
            ids = pipe.get(key) or []
            if key != "processors" and not ids:
                problems.append(f"pipeline {pipe_id!r} has no {key}")
            for comp in ids:
                if comp not in section(cfg, sect):
                    problems.append(f"pipeline {pipe_id!r} uses {key[:-1]} {comp!r}, not defined")
    return problems


def unused_component_problems(cfg: Config) -> list[str]:
    """Every defined receiver/processor/exporter is used by a pipeline; every extension enabled."""
    problems: list[str] = []
    for key, sect in SECTIONS.items():
        used = {comp for pipe in pipelines(cfg).values() for comp in pipe.get(key) or []}
        for comp in section(cfg, sect):
            if comp not in used:
                problems.append(f"{key[:-1]} {comp!r} is defined but no pipeline uses it")
    enabled = set((cfg.get("service") or {}).get("extensions") or [])
    for ext in section(cfg, "extensions"):
        if ext not in enabled:
            problems.append(f"extension {ext!r} is defined but not in service.extensions")
    for ext in enabled - set(section(cfg, "extensions")):
        problems.append(f"service.extensions enables {ext!r}, which is not defined")
    return problems


def processor_order_problems(cfg: Config) -> list[str]:
    """memory_limiter must be first and batch last in each pipeline."""
    problems: list[str] = []
    for pipe_id, pipe in pipelines(cfg).items():
        types = [component_type(p) for p in pipe.get("processors") or []]
        if not types or types[0] != "memory_limiter":
            problems.append(f"pipeline {pipe_id!r}: memory_limiter must be the first processor")
        if not types or types[-1] != "batch":
            problems.append(f"pipeline {pipe_id!r}: batch must be the last processor")
    return problems


def memory_limiter_problems(cfg: Config) -> list[str]:
    """Each memory_limiter has a check_interval and a limit, with the spike below the limit."""
    problems: list[str] = []
    limiters = {
        k: v or {}
        for k, v in section(cfg, "processors").items()
        if component_type(k) == "memory_limiter"
    }
    if not limiters:
        problems.append("no memory_limiter processor is defined")
    for name, conf in limiters.items():
        if "check_interval" not in conf:
            problems.append(f"{name}: check_interval is missing (the limiter never checks)")
        for unit in ("mib", "percentage"):
            limit, spike = conf.get(f"limit_{unit}"), conf.get(f"spike_limit_{unit}")
            if limit is not None and spike is not None and not spike < limit:
                problems.append(f"{name}: spike_limit_{unit} must be below limit_{unit}")
        if conf.get("limit_mib") is None and conf.get("limit_percentage") is None:
            problems.append(f"{name}: set limit_mib or limit_percentage")
    return problems


def is_duration_key(key: str) -> bool:
    return key in DURATION_KEYS or key.endswith(DURATION_SUFFIXES)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield (dotted path, key, value) for every mapping entry, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, str(key), value
            yield from walk(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{path}[{i}]")


def duration_problems(cfg: Config) -> list[str]:
    """Durations are strings with a unit (`1s`, `500ms`); batch sizes are plain integers."""
    problems: list[str] = []
    for path, key, value in walk(cfg):
        if is_duration_key(key) and not (isinstance(value, str) and DURATION_RE.match(value)):
            problems.append(f"{path} = {value!r} is not a duration with a unit (e.g. '5s')")
        if key in COUNT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{path} = {value!r} must be an integer count, not a duration")
    return problems


def removed_component_problems(cfg: Config) -> list[str]:
    """No component types that current collector releases no longer ship."""
    problems: list[str] = []
    for comp in section(cfg, "exporters"):
        if component_type(comp) in REMOVED_EXPORTER_TYPES:
            problems.append(f"exporter {comp!r} uses a removed type (use otlp_grpc or debug)")
    for comp in section(cfg, "receivers"):
        if component_type(comp) in REMOVED_RECEIVER_TYPES:
            problems.append(f"receiver {comp!r} uses a removed type")
    return problems


def otlp_receiver_problems(cfg: Config) -> list[str]:
    """The OTLP receiver listens on gRPC 0.0.0.0:4317 and HTTP 0.0.0.0:4318."""
    otlp = section(cfg, "receivers").get("otlp")
    if not isinstance(otlp, dict):
        return ["receiver 'otlp' is missing"]
    protocols = otlp.get("protocols") or {}
    problems: list[str] = []
    for proto, port in (("grpc", 4317), ("http", 4318)):
        endpoint = (protocols.get(proto) or {}).get("endpoint")
        if endpoint != f"0.0.0.0:{port}":
            problems.append(f"otlp receiver {proto} endpoint is {endpoint!r}, want 0.0.0.0:{port}")
    return problems


def jaeger_exporter_problems(cfg: Config) -> list[str]:
    """An OTLP/gRPC exporter sends to jaeger:4317 without TLS, and a traces pipeline uses it."""
    exporters = section(cfg, "exporters")
    to_jaeger = [
        name
        for name, conf in exporters.items()
        if component_type(name) in OTLP_GRPC_TYPES and (conf or {}).get("endpoint") == "jaeger:4317"
    ]
    if not to_jaeger:
        return ["no otlp_grpc exporter points at jaeger:4317"]
    problems: list[str] = []
    for name in to_jaeger:
        if ((exporters[name] or {}).get("tls") or {}).get("insecure") is not True:
            problems.append(f"{name}: tls.insecure must be true (Jaeger listens without TLS)")
        traces = [p for k, p in pipelines(cfg).items() if component_type(k) == "traces"]
        if not any(name in (p.get("exporters") or []) for p in traces):
            problems.append(f"{name}: no traces pipeline exports to it")
    return problems


def health_check_problems(cfg: Config) -> list[str]:
    """health_check is defined on 0.0.0.0:13133 and enabled in service.extensions."""
    problems: list[str] = []
    ext = section(cfg, "extensions")
    if "health_check" not in ext:
        problems.append("extension 'health_check' is not defined")
    elif (ext["health_check"] or {}).get("endpoint") != "0.0.0.0:13133":
        problems.append("health_check endpoint must be 0.0.0.0:13133")
    if "health_check" not in ((cfg.get("service") or {}).get("extensions") or []):
        problems.append("health_check is not enabled in service.extensions")
    return problems


def parse_version(tag: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", tag)
    return tuple(int(part) for part in match.groups()) if match else None


def exporter_name_problems(cfg: Config, collector_version: tuple[int, ...] | None) -> list[str]:
    """Exporter names must suit the pinned collector: `otlp_grpc` is new, `otlp` is deprecated."""
    if collector_version is None:
        return ["the collector image is not pinned to a x.y.z version"]
    problems: list[str] = []
    for name in section(cfg, "exporters"):
        kind = component_type(name)
        if kind in DEPRECATED_ALIASES.values() and collector_version < RENAME_VERSION:
            problems.append(f"exporter {name!r} needs collector >= 0.144.0")
        if kind in DEPRECATED_ALIASES and collector_version >= RENAME_VERSION:
            problems.append(
                f"exporter {name!r} is a deprecated alias of {DEPRECATED_ALIASES[kind]}"
            )
    return problems


# --- compose.yaml checks --------------------------------------------------------------------


def services(compose: Config) -> dict[str, Config]:
    found = compose.get("services") or {}
    return found if isinstance(found, dict) else {}


def port_host_ip(entry: Any) -> str | None:
    """Host address a compose `ports` entry publishes on; None when it binds every interface."""
    if isinstance(entry, dict):
        host_ip = entry.get("host_ip")
        return str(host_ip) if host_ip else None
    if not isinstance(entry, str):  # an unquoted number, or YAML 1.1 sexagesimal surprise
        return None
    parts = entry.split("/", 1)[0].rsplit(":", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def port_target(entry: Any) -> str:
    """Container port of a compose `ports` entry."""
    if isinstance(entry, dict):
        return str(entry.get("target"))
    return str(entry).split("/", 1)[0].rsplit(":", 1)[-1]


def port_binding_problems(compose: Config) -> list[str]:
    """Every published port is bound to 127.0.0.1 so nothing is exposed beyond this machine."""
    problems: list[str] = []
    for name, svc in services(compose).items():
        for entry in svc.get("ports") or []:
            if port_host_ip(entry) != LOOPBACK:
                problems.append(f"service {name!r} publishes {entry!r} beyond {LOOPBACK}")
    return problems


def config_path_from_command(command: Any) -> str | None:
    args = command.split() if isinstance(command, str) else [str(a) for a in command or []]
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
    return None


def mounts(svc: Config) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            yield str(vol.get("source")), str(vol.get("target"))
        else:
            source, _, rest = str(vol).partition(":")
            yield source, rest.split(":", 1)[0]


def collector_service_problems(compose: Config) -> list[str]:
    """The collector service runs contrib and is started with the mounted otel-collector.yaml."""
    svc = services(compose).get("otel-collector")
    if svc is None:
        return ["service 'otel-collector' is missing"]
    problems: list[str] = []
    if not str(svc.get("image", "")).startswith("otel/opentelemetry-collector-contrib:"):
        problems.append("otel-collector must use the otel/opentelemetry-collector-contrib image")
    config_path = config_path_from_command(svc.get("command"))
    if config_path is None:
        problems.append("otel-collector command has no --config")
    targets = [t for s, t in mounts(svc) if Path(s).name == COLLECTOR_FILE.name]
    if not targets:
        problems.append("otel-collector does not mount ./otel-collector.yaml")
    elif config_path is not None and config_path not in targets:
        problems.append(f"--config {config_path} is not where otel-collector.yaml is mounted")
    return problems


def jaeger_service_problems(compose: Config) -> list[str]:
    """Jaeger is a pinned 2.x image, shows its UI on 16686 and keeps its OTLP ports private."""
    svc = services(compose).get("jaeger")
    if svc is None:
        return ["service 'jaeger' is missing"]
    problems: list[str] = []
    image = str(svc.get("image", ""))
    if not re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image):
        problems.append(f"jaeger image {image!r} is not a pinned jaegertracing/jaeger:2.x.y")
    targets = {port_target(p) for p in svc.get("ports") or []}
    if "16686" not in targets:
        problems.append("jaeger UI port 16686 is not published")
    for private in ("4317", "4318"):
        if private in targets:
            problems.append(f"jaeger publishes its OTLP port {private}; only the collector sends")
    return problems


def collector_version(compose: Config) -> tuple[int, ...] | None:
    image = str(services(compose).get("otel-collector", {}).get("image", ""))
    return parse_version(image.rpartition(":")[2]) if ":" in image else None


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collector() -> Config:
    return load_yaml(COLLECTOR_FILE)


@pytest.fixture(scope="module")
def compose() -> Config:
    return load_yaml(COMPOSE_FILE)


def test_pipelines_reference_defined_components(collector: Config) -> None:
    assert pipeline_reference_problems(collector) == [], "pipeline names an undefined component"


def test_every_defined_component_is_used(collector: Config) -> None:
    assert unused_component_problems(collector) == [], "a component is defined but never used"


def test_memory_limiter_first_and_batch_last(collector: Config) -> None:
    assert processor_order_problems(collector) == [], "processor order is wrong"


def test_memory_limiter_has_check_interval_and_limit(collector: Config) -> None:
    assert memory_limiter_problems(collector) == [], "memory_limiter is misconfigured"


def test_durations_have_units(collector: Config) -> None:
    assert duration_problems(collector) == [], "a duration lacks a unit"


def test_no_removed_component_types(collector: Config) -> None:
    assert removed_component_problems(collector) == [], "a removed component type is used"


def test_otlp_receiver_binds_4317_and_4318(collector: Config) -> None:
    assert otlp_receiver_problems(collector) == [], "OTLP receiver endpoints are wrong"


def test_otlp_exporter_points_at_jaeger(collector: Config) -> None:
    assert jaeger_exporter_problems(collector) == [], "no working OTLP exporter to Jaeger"


def test_health_check_extension_enabled(collector: Config) -> None:
    assert health_check_problems(collector) == [], "health_check is not set up"


def test_exporter_names_match_pinned_collector(collector: Config, compose: Config) -> None:
    problems = exporter_name_problems(collector, collector_version(compose))
    assert problems == [], "exporter type names do not suit the pinned collector version"


def test_compose_ports_bound_to_loopback(compose: Config) -> None:
    assert port_binding_problems(compose) == [], "a compose port is published beyond loopback"


def test_compose_collector_mounts_config(compose: Config) -> None:
    assert collector_service_problems(compose) == [], "collector service does not load our config"


def test_compose_jaeger_is_2x(compose: Config) -> None:
    assert jaeger_service_problems(compose) == [], "jaeger service is misconfigured"


Mutation = Callable[[Config], None]


def _set(path: tuple[str, ...], value: Any) -> Mutation:
    def apply(cfg: Config) -> None:
        node: Any = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _delete(path: tuple[str, ...]) -> Mutation:
    def apply(cfg: Config) -> None:
        node: Any = cfg
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


def _rename_exporter(old: str, new: str) -> Mutation:
    def apply(cfg: Config) -> None:
        cfg["exporters"][new] = cfg["exporters"].pop(old)
        for pipe in cfg["service"]["pipelines"].values():
            pipe["exporters"] = [new if e == old else e for e in pipe["exporters"]]

    return apply


TRACES = ("service", "pipelines", "traces")
COLLECTOR_MUTATIONS: list[tuple[str, Mutation, Callable[[Config], list[str]]]] = [
    (
        "batch first",
        _set((*TRACES, "processors"), ["batch", "memory_limiter"]),
        processor_order_problems,
    ),
    (
        "undefined exporter",
        _set((*TRACES, "exporters"), ["otlp_grpc/jaeger", "zipkin"]),
        pipeline_reference_problems,
    ),
    ("unused exporter", _set(("exporters", "debug/extra"), {}), unused_component_problems),
    (
        "no check_interval",
        _delete(("processors", "memory_limiter", "check_interval")),
        memory_limiter_problems,
    ),
    ("unitless timeout", _set(("processors", "batch", "timeout"), 5), duration_problems),
    ("bare number string", _set(("processors", "batch", "timeout"), "200"), duration_problems),
    ("removed jaeger", _rename_exporter("otlp_grpc/jaeger", "jaeger"), removed_component_problems),
    ("removed logging", _rename_exporter("debug", "logging"), removed_component_problems),
    (
        "wrong grpc port",
        _set(("receivers", "otlp", "protocols", "grpc", "endpoint"), "0.0.0.0:55680"),
        otlp_receiver_problems,
    ),
    (
        "exporter to localhost",
        _set(("exporters", "otlp_grpc/jaeger", "endpoint"), "localhost:4317"),
        jaeger_exporter_problems,
    ),
    (
        "tls left on",
        _delete(("exporters", "otlp_grpc/jaeger", "tls")),
        jaeger_exporter_problems,
    ),
    ("health_check off", _set(("service", "extensions"), []), health_check_problems),
]

COMPOSE_MUTATIONS: list[tuple[str, Mutation, Callable[[Config], list[str]]]] = [
    (
        "port on all interfaces",
        _set(("services", "otel-collector", "ports"), ["4317:4317"]),
        port_binding_problems,
    ),
    (
        "port on a LAN address",
        _set(("services", "jaeger", "ports"), ["0.0.0.0:16686:16686"]),
        port_binding_problems,
    ),
    (
        "port as a bare number",
        _set(("services", "jaeger", "ports"), [16686]),
        port_binding_problems,
    ),
    (
        "config not mounted",
        _set(("services", "otel-collector", "volumes"), []),
        collector_service_problems,
    ),
    (
        "config mounted elsewhere",
        _set(("services", "otel-collector", "command"), ["--config=/etc/other.yaml"]),
        collector_service_problems,
    ),
    (
        "jaeger v1 image",
        _set(("services", "jaeger", "image"), "jaegertracing/all-in-one:1.60"),
        jaeger_service_problems,
    ),
    (
        "jaeger OTLP published",
        _set(("services", "jaeger", "ports"), ["127.0.0.1:4317:4317", "127.0.0.1:16686:16686"]),
        jaeger_service_problems,
    ),
]


@pytest.mark.parametrize(
    ("label", "mutate", "check"),
    COLLECTOR_MUTATIONS,
    ids=[m[0] for m in COLLECTOR_MUTATIONS],
)
def test_checkers_catch_broken_collector_config(
    collector: Config, label: str, mutate: Mutation, check: Callable[[Config], list[str]]
) -> None:
    assert check(collector) == [], f"baseline must be clean before mutating ({label})"
    broken = copy.deepcopy(collector)
    mutate(broken)
    assert check(broken), f"{check.__name__} did not notice: {label}"


@pytest.mark.parametrize(
    ("label", "mutate", "check"),
    COMPOSE_MUTATIONS,
    ids=[m[0] for m in COMPOSE_MUTATIONS],
)
def test_checkers_catch_broken_compose(
    compose: Config, label: str, mutate: Mutation, check: Callable[[Config], list[str]]
) -> None:
    assert check(compose) == [], f"baseline must be clean before mutating ({label})"
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert check(broken), f"{check.__name__} did not notice: {label}"


def test_exporter_name_check_follows_collector_version(collector: Config) -> None:
    assert exporter_name_problems(collector, (0, 143, 0)), "otlp_grpc must be refused before 0.144"
    legacy = copy.deepcopy(collector)
    _rename_exporter("otlp_grpc/jaeger", "otlp/jaeger")(legacy)
    assert exporter_name_problems(legacy, (0, 155, 0)), "deprecated `otlp` alias went unnoticed"
    assert exporter_name_problems(legacy, (0, 140, 0)) == [], "`otlp` is right before 0.144"
    assert exporter_name_problems(collector, None), "an unpinned collector image went unnoticed"


def test_sexagesimal_trap_is_real() -> None:
    """Why ports must be quoted: YAML 1.1 reads an unquoted 13133:13133 as a base-60 number."""
    parsed = yaml.safe_load("ports:\n  - 22:22\n")
    assert parsed["ports"] == [22 * 60 + 22], "PyYAML no longer applies the YAML 1.1 base-60 rule"
    assert port_binding_problems({"services": {"x": parsed}}), "a mangled port went unnoticed"
