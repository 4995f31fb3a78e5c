"""`envbuilder inspect PATH_OR_GIT_URL`: what a project declares (Python, torch family, extras, indexes, notes)."""

from __future__ import annotations

import click

from envbuilder.cli.output import emit_json, settings_of

_PYTHONS = ("3.13", "3.12", "3.11", "3.10", "3.9")


@click.command("inspect")
@click.argument("path_or_url", metavar="PATH_OR_GIT_URL", default=".")
@click.option("--ref", metavar="REF", help="Branch, tag or commit to read (git URLs, or a local git folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the project spec as JSON.")
@click.option("--target-os", type=click.Choice(["linux", "windows", "macos"]), help="Evaluate markers for this OS.")
@click.option("--target-arch", type=click.Choice(["x86_64", "aarch64", "arm64"]), help="Evaluate markers for this CPU.")
@click.option("--python", "python", metavar="X.Y", help="Evaluate markers for this Python version.")
@click.option("--extra", "extras", multiple=True, metavar="NAME", help="Include this extra when evaluating (repeatable).")
@click.pass_context
def inspect(ctx: click.Context, path_or_url: str, ref: str | None, as_json: bool, target_os: str | None,
            target_arch: str | None, python: str | None, extras: tuple[str, ...]) -> None:
    """Read a project's Python, torch and index constraints without running any of its code."""
    from envbuilder.project.gitsource import inspect_source
    from envbuilder.project.markers import target_environment
    from envbuilder.project.spec import torch_family

    spec = inspect_source(path_or_url, ref, settings_of(ctx))
    evaluated = None
    if target_os or target_arch or python or extras:
        os_name = target_os or "linux"
        arch = target_arch or ("arm64" if os_name == "macos" else "x86_64")
        py = python or _python_for(spec.requires_python)
        env = target_environment(os_name, arch, py)
        evaluated = {
            "os": os_name, "arch": arch, "python": py, "extras": list(extras), "environment": env,
            "requirements": [str(r) for r in spec.requirements_for(env, tuple(extras))],
            "constraints": [str(r) for r in spec.constraints_for(env)],
            "indexes": [i.model_dump(mode="json") for i in spec.indexes_for(env)],
        }
    if as_json:
        payload = spec.model_dump(mode="json")
        payload["torch_family"] = torch_family(spec)
        if evaluated is not None:
            payload["target"] = evaluated
        emit_json(payload)
        return
    from envbuilder.redact import redact_text

    for line in _describe(spec, torch_family(spec), evaluated):
        click.echo(redact_text(line))  # a declared index may carry user:token@ (docs/security.md)


def _python_for(requires_python: str | None) -> str:
    """The newest common Python the project allows, for showing markers when --python is not given."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(requires_python or "")
    return next((v for v in _PYTHONS if spec.contains(f"{v}.0", prereleases=True)), _PYTHONS[1])


def _describe(spec, family: dict, evaluated: dict | None) -> list[str]:
    src = spec.source
    where = f"{src.git_url} @ {src.ref or 'default branch'} ({(src.commit or '')[:12]})" if src.git_url else src.path
    fields = (
        ("project", spec.name or "(unnamed)"), ("source", where),
        ("formats", ", ".join(spec.formats) or "none recognised"), ("files", ", ".join(spec.files) or "-"),
        ("requires-python", spec.requires_python or "not declared"), ("import roots", ", ".join(spec.import_roots)),
        ("system packages", ", ".join(spec.system_packages)),
        ("locked by", spec.locked_by and f"{spec.locked_by} (its pins replace the declared ranges)"),
        ("build needs", spec.build_requires_torch and f"torch ({spec.build_requires_torch})"),
    )
    lines = [f"{label + ':':<17}{value}" for label, value in fields if value]  # the optional ones only when set
    lines += _family_lines(family)
    constraints = f" (+{len(spec.constraints)} constraints)" if spec.constraints else ""
    lines.append(f"requirements:    {len(spec.requirements)}{constraints}")
    if spec.optional:
        lines.append("extras:")
        lines += [f"  {extra}: {' | '.join(texts) or '(nothing)'}" for extra, texts in spec.optional.items()]
    if spec.indexes:
        lines.append("indexes:")
        lines += [_index_line(index) for index in spec.indexes]
    if evaluated is not None:
        lines += _evaluated_lines(evaluated)
    if spec.notes:
        lines.append("notes:")
        lines += [f"  - {note}" for note in spec.notes]
    return lines


def _family_lines(family: dict) -> list[str]:
    lines = ["torch family:"] + ([] if family else ["  (none declared)"])
    for name, entry in family.items():
        reqs = entry["requirements"] or ["(only through extras)" if entry["extras"] else "(constraints only)"]
        lines.append(f"  {name}: {reqs[0]}")
        lines += [f"  {' ' * len(name)}  {text}" for text in reqs[1:]]
        lines += [f"    extra {extra}: {text}" for extra, texts in entry["extras"].items() for text in texts]
        lines += [f"    constraint: {text}" for text in entry["constraints"]]
        if entry["indexes"]:
            lines.append(f"    from index: {', '.join(entry['indexes'])}")
    return lines


def _index_line(index) -> str:
    label = f"{index.name} " if index.name else ""
    scope = f" for {', '.join(index.packages)}" if index.packages else ""
    scope += " only" if index.explicit and index.packages else (" (explicit)" if index.explicit else "")
    when = f" when {index.marker}" if index.marker else ""
    return f"  {label}{index.url} [{index.kind}]{scope}{when}  ({index.origin})"


def _evaluated_lines(evaluated: dict) -> list[str]:
    tag = f"{evaluated['os']}/{evaluated['arch']}, Python {evaluated['python']}"
    if evaluated["extras"]:
        tag += f", extras {', '.join(evaluated['extras'])}"
    return [f"for {tag}:", *(f"  {text}" for text in evaluated["requirements"] or ["(no requirements)"]),
            *(f"  constraint {text}" for text in evaluated["constraints"]),
            *(f"  index {index['name'] or index['url']}" for index in evaluated["indexes"])]
