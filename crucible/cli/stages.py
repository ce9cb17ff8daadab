"""``crucible stages``: the registered stages and their option schemas, as text or JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.text import Text

from crucible.cli.app import CliError, JsonOption, guard
from crucible.cli.output import SafeTable, cell, console, print_json, say, short

if TYPE_CHECKING:
    from crucible.registry import Registry
    from crucible.stage import StageSpec


def type_text(spec: Any) -> str:
    """Render a describe() type spec: ``list[string]``, ``map[string, any]``, ``enum(a|b)``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, tuple | list) and spec:
        tag, *rest = spec
        if tag == "list" and len(rest) == 1:
            return f"list[{type_text(rest[0])}]"
        if tag == "map" and len(rest) == 2:
            return f"map[{type_text(rest[0])}, {type_text(rest[1])}]"
        if tag == "enum" and rest:
            return "enum(" + "|".join(short(v, 40) for v in rest[0]) + ")"
        if tag == "union" and rest:
            return " | ".join(type_text(t) for t in rest[0])
        if tag == "tuple" and rest:
            return "tuple[" + ", ".join(type_text(t) for t in rest[0]) + "]"
        if tag == "function" and rest:
            return f"function/{rest[0]}"
        if tag == "struct" and rest:
            return f"struct {getattr(rest[0], '__name__', rest[0])}"
    return repr(spec)


def _option_summary(schema: Mapping[str, Any], key: str, *, with_default: bool) -> str:
    types_ = schema.get("types") or {}
    text = f"{key} ({type_text(types_[key])}" if key in types_ else f"{key} ((unspecified)"
    defaults = schema.get("defaults") or {}
    if with_default and key in defaults:
        text += f", default {short(defaults[key], 40)}"
    return text + ")"


def _print_stage_list(specs: Sequence[StageSpec], registry: Registry) -> None:
    say("Available stages:")
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        schema = spec.describe()
        say()
        origin = registry.source(spec.name).describe()
        say(Text.assemble((spec.name.ljust(width), "bold"), f"  {origin}"))
        say(f"  Description: {schema.get('description') or '(none)'}")
        required = [_option_summary(schema, k, with_default=False) for k in schema["required"]]
        optional = [_option_summary(schema, k, with_default=True) for k in schema["optional"]]
        say(f"  Required: {', '.join(required) or '(none)'}")
        say(f"  Optional: {', '.join(optional) or '(none)'}")


def _option_table(schema: Mapping[str, Any], keys: Sequence[str], *, required: bool) -> SafeTable:
    props = (schema.get("json_schema") or {}).get("properties") or {}
    types_ = schema.get("types") or {}
    defaults = schema.get("defaults") or {}
    table = SafeTable(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("option", no_wrap=True)
    table.add_column("type")
    if not required:
        table.add_column("default")
    table.add_column("description", overflow="fold")
    for key in keys:
        kind = type_text(types_[key]) if key in types_ else "(unspecified)"
        desc = str((props.get(key) or {}).get("description", ""))
        cells = [cell(key), cell(kind)]
        if not required:
            cells.append(cell(short(defaults[key], 40) if key in defaults else "-"))
        cells.append(cell(desc))
        table.add_row(*cells)
    return table


def _print_stage_detail(spec: StageSpec, registry: Registry) -> None:
    schema = spec.describe()
    out = console()
    say(Text.assemble("Stage: ", (spec.name, "bold")))
    say(f"Origin: {registry.source(spec.name).describe()}")
    if schema.get("version"):
        say(f"Version: {schema['version']}")
    say(f"Schema version: {schema.get('__schema_version__', '-')}")
    say(f"Description: {schema.get('description') or '(none)'}")
    for title, keys, required in (
        ("Required options", schema["required"], True),
        ("Optional options", schema["optional"], False),
    ):
        say()
        if not keys:
            say(f"{title}: (none)")
            continue
        say(f"{title}:")
        out.print(_option_table(schema, keys, required=required))


def _described(spec: StageSpec, registry: Registry) -> dict[str, Any]:
    """The option schema plus where the stage comes from."""
    return {**spec.describe(), "origin": registry.source(spec.name).describe()}


def stages_command(
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Show one stage in detail.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """List the registered stages (entry-point group crucible.stages), where each comes from,
    and their options."""
    from crucible.registry import ENTRY_POINT_GROUP, default_registry

    with guard():
        registry = default_registry()
        specs = registry.specs()
        if name is not None:
            if name not in registry:
                known = ", ".join(registry.names()) or "(none)"
                raise CliError(f"unknown stage {name!r}", lines=[f"known stages: {known}"])
            spec = registry.get(name)
            if json_:
                print_json(_described(spec, registry))
            else:
                _print_stage_detail(spec, registry)
            return
        if json_:
            print_json([_described(s, registry) for s in specs])
            return
        if not specs:
            say(
                "No stages registered. Install a package that declares stages in the "
                f"{ENTRY_POINT_GROUP!r} entry-point group, or use 'module:' with --allow-imports."
            )
            return
        _print_stage_list(specs, registry)
