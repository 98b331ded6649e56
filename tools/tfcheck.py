"""Offline checks for the Terraform tree that no maintained tool makes here (`make tf-check`).

`terraform validate` would make most of them, but it needs the provider plugins, which cannot
be downloaded on machines without network access (this one, many CI sandboxes); checkov
covers the security rules (see the hardening docs), `terraform fmt` the formatting, and
cloud-init is valid YAML by construction (each template is one ``yamlencode()`` of a
Terraform object; tests/terraform renders them with ``terraform console``). What is left,
on top of python-hcl2's parse:

- references resolve: every `var.X`, `local.X`, `module.M.O`, resource and data reference
  inside its module, and every name a `templatefile()` template reads is passed by the call;
- module inputs: calls pass only declared inputs and all required ones, and `providers` maps
  cover the child's `configuration_aliases`;
- variables are documented and typed;
- secrets are sensitive: a secret-looking variable is `sensitive` with no default, outputs
  that expose one are `sensitive`, and no `*.tfvars.example` holds one.

Usage: python tools/tfcheck.py terraform/ [--warnings-as-errors]
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

SECRET_NAME = re.compile(r"(password|passwd|secret|token|private_key|api_key)", re.IGNORECASE)
MODULE_META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}
IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
KEYWORDS = {"true", "false", "null", "for", "in", "if", "else", "endif", "endfor"}


@dataclass(frozen=True)
class Finding:
    """One problem found, located at a file and line, worded so the fix is obvious."""

    path: Path
    line: int
    severity: str  # "error" or "warning"
    message: str

    def format(self) -> str:
        """Render as `path:line: severity: message` (the format editors jump to)."""
        return f"{_display(self.path)}:{self.line}: {self.severity}: {self.message}"


def _display(path: Path) -> str:
    """Path relative to the working directory when possible, for short clickable messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# HCL source helpers
# --------------------------------------------------------------------------------------------


def line_of(text: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1


def find_line(text: str, pattern: str) -> int:
    """Line of the first match of a regex in the text, or 1 when absent."""
    match = re.search(pattern, text, re.MULTILINE)
    return line_of(text, match.start()) if match else 1


def _skip_quoted(text: str, i: int, out: list[str] | None) -> int:
    """Skip a quoted HCL string starting at text[i] == '"'; keep interpolations as code.

    Literal characters are replaced by spaces in `out` (newlines kept) so that offsets and
    line numbers of the masked text match the original.
    """
    if out is not None:
        out.append(" ")
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            if out is not None:
                out.append("  ")
            i += 2
            continue
        if ch == '"':
            if out is not None:
                out.append(" ")
            return i + 1
        if text.startswith(("$${", "%%{"), i):
            if out is not None:
                out.append("   ")
            i += 3
            continue
        if text.startswith(("${", "%{"), i):
            i = _mask_code(text, i + 2, out, stop_at_brace=True, prefix="  ")
            continue
        if out is not None:
            out.append("\n" if ch == "\n" else " ")
        i += 1
    return i


def _mask_code(
    text: str, i: int, out: list[str] | None, stop_at_brace: bool, prefix: str = ""
) -> int:
    """Copy HCL code from text[i] to `out`, masking comments and string literals.

    With stop_at_brace, stops after the `}` that closes an interpolation opened before i.
    """
    if out is not None and prefix:
        out.append(prefix)
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            if out is not None:
                out.append(" " * (end - i))
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = len(text) if end == -1 else end + 2
            if out is not None:
                out.append("".join("\n" if c == "\n" else " " for c in text[i:end]))
            i = end
            continue
        if ch == '"':
            i = _skip_quoted(text, i, out)
            continue
        heredoc = re.match(r"<<-?(" + IDENT + r")[ \t]*\r?\n", text[i:])
        if heredoc:
            i = _skip_heredoc(text, i, heredoc, out)
            continue
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            if stop_at_brace and ch == "}" and depth == 0:
                if out is not None:
                    out.append(" ")
                return i + 1
            depth -= 1
        if out is not None:
            out.append(ch)
        i += 1
    return i


def _skip_heredoc(text: str, i: int, match: re.Match[str], out: list[str] | None) -> int:
    """Skip a heredoc whose opener matched at text[i]; its body is a template."""
    marker = match.group(1)
    if out is not None:
        out.append(" " * (match.end() - 1) + "\n")
    body_start = i + match.end()
    closing = re.compile(r"^[ \t]*" + re.escape(marker) + r"[ \t]*$", re.MULTILINE)
    end_match = closing.search(text, body_start)
    body_end = end_match.start() if end_match else len(text)
    out_body: list[str] = []
    _mask_template(text[body_start:body_end], out_body)
    if out is not None:
        out.append("".join(out_body))
    if end_match is None:
        return len(text)
    if out is not None:
        out.append(" " * (end_match.end() - end_match.start()))
    return end_match.end()


def _mask_template(text: str, out: list[str]) -> None:
    """Mask the literal parts of a template, keeping `${...}` and `%{...}` code."""
    i = 0
    while i < len(text):
        if text.startswith(("$${", "%%{"), i):
            out.append("   ")
            i += 3
        elif text.startswith(("${", "%{"), i):
            i = _mask_code(text, i + 2, out, stop_at_brace=True, prefix="  ")
        else:
            out.append("\n" if text[i] == "\n" else " ")
            i += 1


def mask_non_code(text: str) -> str:
    """The HCL text with comments and literal string parts blanked out.

    Interpolations inside strings and heredocs stay, so a regex over the result sees exactly
    the expressions Terraform evaluates, at their original offsets.
    """
    out: list[str] = []
    _mask_code(text, 0, out, stop_at_brace=False)
    return "".join(out)


@functools.lru_cache(maxsize=512)
def parse_hcl(text: str) -> dict[str, Any]:
    """python-hcl2 parse of a file's text, cached by content (parsing dominates run time, and
    the checked tree rarely changes between calls in one process). Callers must not mutate."""
    return hcl2.loads(text)


def _first_line(exc: Exception) -> str:
    """First line of an exception message (lark's messages run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unquote(value: Any) -> Any:
    """Strip the quotes python-hcl2 keeps around string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(parsed: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, body) of every single-label block of a kind (variable, output, module...)."""
    found = []
    for entry in parsed.get(kind, []):
        for label, body in entry.items():
            if not label.startswith("__"):
                found.append((unquote(label), body))
    return found


def typed_blocks(parsed: dict[str, Any], kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every two-label block (resource, data)."""
    found = []
    for entry in parsed.get(kind, []):
        for rtype, named in entry.items():
            if rtype.startswith("__"):
                continue
            for name, body in named.items():
                if not name.startswith("__"):
                    found.append((unquote(rtype), unquote(name), body))
    return found


def iter_strings(value: Any):
    """Every string value nested anywhere in a parsed HCL body."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("__"):
                yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def split_top_level(text: str, seps: str = ",\n") -> list[str]:
    """Split an expression on separators that are outside brackets and strings."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _skip_quoted(text, i, None)
            continue
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch in seps and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def call_arguments(expr: str, start: int) -> tuple[list[str], int]:
    """Arguments of a function call whose `(` is at expr[start]; returns (args, end)."""
    depth, i = 0, start
    while i < len(expr):
        ch = expr[i]
        if ch == '"':
            i = _skip_quoted(expr, i, None)
            continue
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                return split_top_level(expr[start + 1 : i], ","), i
        i += 1
    return split_top_level(expr[start + 1 :], ","), len(expr)


def object_keys(obj_expr: str) -> list[str] | None:
    """Keys of an HCL object constructor `{a = x, "b" = y}`; None when not a literal object."""
    obj_expr = obj_expr.strip()
    if not (obj_expr.startswith("{") and obj_expr.endswith("}")):
        return None
    keys = []
    for item in split_top_level(obj_expr[1:-1]):
        match = re.match(r'\s*("?)(' + IDENT + r")\1\s*[=:](?![=>])", item)
        if match is None:
            return None
        keys.append(match.group(2))
    return keys


# --------------------------------------------------------------------------------------------
# Terraform's template language: parser, name analysis, renderer


@dataclass
class TemplateCall:
    """A templatefile() call: where it is, which template, which names it passes."""

    file: Path
    line: int
    template: Path | None
    keys: list[str] | None
    raw_path: str


@dataclass
class ModuleDir:
    """Everything the checks need to know about one Terraform module directory."""

    path: Path
    texts: dict[Path, str] = field(default_factory=dict)
    masked: dict[Path, str] = field(default_factory=dict)
    parsed: dict[Path, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    modules: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    resources: set[tuple[str, str]] = field(default_factory=set)
    data: set[tuple[str, str]] = field(default_factory=set)
    resource_bodies: list[tuple[str, str, str, Path, dict[str, Any]]] = field(default_factory=list)
    required_providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    provider_blocks: list[tuple[str, Path]] = field(default_factory=list)
    template_calls: list[TemplateCall] = field(default_factory=list)
    broken: bool = False  # a file failed to parse: cross-checks would only echo that error

    def decl_line(self, file: Path, kind: str, name: str) -> int:
        return find_line(self.texts[file], rf'^[ \t]*{kind}\s+"{re.escape(name)}"')


def load_module(path: Path, findings: list[Finding]) -> ModuleDir:
    """Parse every .tf file of a directory into a ModuleDir; parse errors become findings."""
    module = ModuleDir(path)
    for file in sorted(path.glob("*.tf")):
        text = file.read_text(encoding="utf-8")
        module.texts[file] = text
        module.masked[file] = mask_non_code(text)
        try:
            parsed = parse_hcl(text)
        except Exception as exc:  # lark raises several exception types; all carry a position
            line = getattr(exc, "line", 1) or 1
            findings.append(Finding(file, line, "error", f"HCL does not parse: {_first_line(exc)}"))
            module.broken = True
            continue
        module.parsed[file] = parsed
        _collect_declarations(module, file, parsed)
    return module


def _collect_declarations(module: ModuleDir, file: Path, parsed: dict[str, Any]) -> None:
    for name, body in blocks(parsed, "variable"):
        module.variables[name] = (file, body)
    for name, body in blocks(parsed, "output"):
        module.outputs[name] = (file, body)
    for name, body in blocks(parsed, "module"):
        module.modules[name] = (file, body)
    for entry in parsed.get("locals", []):
        for name in entry:
            if not name.startswith("__"):
                module.locals[name] = file
    for rtype, name, body in typed_blocks(parsed, "resource"):
        module.resources.add((rtype, name))
        module.resource_bodies.append(("resource", rtype, name, file, body))
    for rtype, name, body in typed_blocks(parsed, "data"):
        module.data.add((rtype, name))
        module.resource_bodies.append(("data", rtype, name, file, body))
    for entry in parsed.get("provider", []):
        for name, body in entry.items():
            if name.startswith("__"):
                continue
            alias = unquote(body.get("alias", "")) if isinstance(body, dict) else ""
            module.provider_blocks.append((unquote(name) + (f".{alias}" if alias else ""), file))
    for terraform_block in parsed.get("terraform", []):
        for req in terraform_block.get("required_providers", []):
            for name, spec in req.items():
                if not name.startswith("__"):
                    module.required_providers[name] = spec if isinstance(spec, dict) else {}
    seen: dict[str, int] = {}
    for value in iter_strings(parsed):
        for call in _template_calls_in(value, module, file, seen):
            module.template_calls.append(call)


def _template_calls_in(
    expr: str, module: ModuleDir, file: Path, seen: dict[str, int]
) -> list[TemplateCall]:
    """templatefile() calls in one parsed expression; `seen` counts calls per template name so
    that the nth call of a template in a file is located at its nth mention in the source."""
    calls = []
    for match in re.finditer(r"\btemplatefile\s*\(", expr):
        args, _ = call_arguments(expr, match.end() - 1)
        raw_path = args[0] if args else ""
        template = None
        literal = unquote(raw_path)
        if raw_path.startswith('"'):
            resolved = literal.replace("${path.module}", ".")
            if "${" not in resolved:
                template = (
                    Path(resolved) if Path(resolved).is_absolute() else module.path / resolved
                )
        keys = object_keys(args[1]) if len(args) > 1 else []
        name = Path(literal).name if literal else "templatefile("
        masked = module.masked[file]
        mentions = [
            line_of(masked, m.start())
            for m in re.finditer(r"\btemplatefile\s*\(", masked)
            if name in module.texts[file][m.start() : m.start() + 400]
        ] or [1]
        index = seen.get(name, 0)
        seen[name] = index + 1
        line = mentions[min(index, len(mentions) - 1)]
        calls.append(TemplateCall(file, line, template, keys, raw_path))
    return calls


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_variables(module: ModuleDir, findings: list[Finding]) -> None:
    """Description, type, no default on secrets, secret-looking names are sensitive."""
    for name, (file, body) in module.variables.items():
        line = module.decl_line(file, "variable", name)
        where = f'variable "{name}"'
        if not str(unquote(body.get("description", ""))).strip():
            findings.append(
                Finding(file, line, "error", f'{where} has no description: add description = "..."')
            )
        if "type" not in body:
            findings.append(
                Finding(
                    file,
                    line,
                    "error",
                    f"{where} has no type: add type = string (or the right type)",
                )
            )
        sensitive = body.get("sensitive") is True
        if sensitive and "default" in body:
            findings.append(
                Finding(
                    file,
                    line,
                    "error",
                    f"{where} is sensitive but has a default: secrets must have no default; pass "
                    f"them as TF_VAR_{name}",
                )
            )
        if SECRET_NAME.search(name) and not sensitive:
            findings.append(
                Finding(
                    file,
                    line,
                    "error",
                    f"{where} looks like a secret: add sensitive = true (and no default)",
                )
            )


def _references(masked: str, pattern: str):
    for match in re.finditer(pattern, masked):
        yield match, line_of(masked, match.start())


def check_references(
    module: ModuleDir, by_path: dict[Path, ModuleDir], findings: list[Finding]
) -> None:
    """Every var., local., module., resource and data reference resolves in this module."""
    used_vars: set[str] = set()
    used_locals: set[str] = set()
    prefixes = tuple(f"{name}_" for name in module.required_providers) or ("openstack_", "random_")
    for file, masked in module.masked.items():
        for match, line in _references(masked, rf"(?<![\w.\-])var\.({IDENT})"):
            used_vars.add(match.group(1))
            if match.group(1) not in module.variables:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f'var.{match.group(1)} is not declared: add a variable "{match.group(1)}" '
                        f"block to {module.path.name}/variables.tf",
                    )
                )
        for match, line in _references(masked, rf"(?<![\w.\-])local\.({IDENT})"):
            used_locals.add(match.group(1))
            if match.group(1) not in module.locals:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f"local.{match.group(1)} is not defined in any locals block of "
                        f"{module.path.name}/",
                    )
                )
        for match, line in _references(
            masked, rf"(?<![\w.\-])module\.({IDENT})(\[[^\]]*\])?(?:\.({IDENT}))?"
        ):
            call, output = match.group(1), match.group(3)
            if call not in module.modules:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f'module.{call} is referenced but there is no module "{call}" block',
                    )
                )
                continue
            child = by_path.get(_module_source(module, call) or Path("/nonexistent"))
            if output and child is not None and output not in child.outputs:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f"module.{call}.{output}: module {_display(child.path)} has no output "
                        f'"{output}"',
                    )
                )
        for match, line in _references(masked, rf"(?<![\w.\-])data\.({IDENT})\.({IDENT})"):
            if (match.group(1), match.group(2)) not in module.data:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f"data.{match.group(1)}.{match.group(2)} is referenced but not declared",
                    )
                )
        for match, line in _references(masked, rf"(?<![\w.\-])({IDENT})\.({IDENT})"):
            rtype, name = match.group(1), match.group(2)
            if rtype.startswith(prefixes) and (rtype, name) not in module.resources:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f'{rtype}.{name} is referenced but no resource "{rtype}" "{name}" is '
                        "declared",
                    )
                )
    for name, (file, _) in module.variables.items():
        if name not in used_vars:
            findings.append(
                Finding(
                    file,
                    module.decl_line(file, "variable", name),
                    "warning",
                    f'variable "{name}" is declared but never used',
                )
            )
    for name, file in module.locals.items():
        if name not in used_locals:
            findings.append(
                Finding(
                    file,
                    find_line(module.texts[file], rf"^[ \t]*{re.escape(name)}\s*="),
                    "warning",
                    f"local.{name} is defined but never used",
                )
            )


def _module_source(module: ModuleDir, call: str) -> Path | None:
    """Resolved local directory of a module call, or None for registry/git sources."""
    _, body = module.modules[call]
    source = str(unquote(body.get("source", "")))
    if source.startswith(("./", "../")):
        return (module.path / source).resolve()
    return None


def check_module_calls(
    module: ModuleDir, by_path: dict[Path, ModuleDir], findings: list[Finding]
) -> None:
    """Module calls: source exists, inputs declared, required inputs passed, aliases passed."""
    for call, (file, body) in module.modules.items():
        line = module.decl_line(file, "module", call)
        source = _module_source(module, call)
        if source is None:
            findings.append(
                Finding(
                    file,
                    line,
                    "warning",
                    f'module "{call}": non-local source is not checked offline',
                )
            )
            continue
        child = by_path.get(source)
        if child is not None and child.broken:
            continue
        if child is None:
            findings.append(
                Finding(
                    file,
                    line,
                    "error",
                    f'module "{call}": source {unquote(body.get("source"))} has no .tf files',
                )
            )
            continue
        passed = {k for k in body if k not in MODULE_META_ARGS and not k.startswith("__")}
        for arg in sorted(passed - set(child.variables)):
            arg_line = (
                find_line(module.texts[file], rf"^[ \t]*{re.escape(arg)}\s*=")
                if arg in module.texts[file]
                else line
            )
            findings.append(
                Finding(
                    file,
                    arg_line,
                    "error",
                    f'module "{call}" passes {arg}, which {_display(child.path)} does not declare '
                    "as a variable",
                )
            )
        for name, (_, var_body) in child.variables.items():
            if "default" not in var_body and name not in passed:
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f'module "{call}" does not pass required variable "{name}" of '
                        f"{_display(child.path)}",
                    )
                )
        given = {unquote(k).strip("${}") for k in (body.get("providers") or {})}
        for spec in child.required_providers.values():
            for alias in spec.get("configuration_aliases", []) or []:
                alias = alias.strip("${}")
                if alias not in given:
                    findings.append(
                        Finding(
                            file,
                            line,
                            "error",
                            f'module "{call}" must pass provider {alias} in its providers map '
                            "(the child declares it in configuration_aliases)",
                        )
                    )


def check_outputs(
    module: ModuleDir, by_path: dict[Path, ModuleDir], findings: list[Finding]
) -> None:
    """Outputs are described, and sensitive when they expose a sensitive value."""
    sensitive_vars = {n for n, (_, b) in module.variables.items() if b.get("sensitive") is True}
    for name, (file, body) in module.outputs.items():
        line = module.decl_line(file, "output", name)
        if not str(unquote(body.get("description", ""))).strip():
            findings.append(Finding(file, line, "error", f'output "{name}" has no description'))
        value = mask_non_code(str(body.get("value", "")))
        leaks = [
            f"var.{v}"
            for v in sensitive_vars
            if re.search(rf"(?<![\w.])var\.{re.escape(v)}\b", value)
        ]
        if re.search(r"(?<![\w.])random_password\.", value):
            leaks.append("random_password")
        for match in re.finditer(rf"(?<![\w.])module\.({IDENT})(?:\[[^\]]*\])?\.({IDENT})", value):
            if match.group(1) in module.modules:
                child = by_path.get(_module_source(module, match.group(1)) or Path("/nonexistent"))
                if (
                    child
                    and match.group(2) in child.outputs
                    and child.outputs[match.group(2)][1].get("sensitive") is True
                ):
                    leaks.append(f"module.{match.group(1)}.{match.group(2)}")
        if leaks and body.get("sensitive") is not True:
            findings.append(
                Finding(
                    file,
                    line,
                    "error",
                    f'output "{name}" exposes sensitive {", ".join(sorted(leaks))}: add sensitive '
                    "= true",
                )
            )


def check_tfvars_examples(module: ModuleDir, findings: list[Finding]) -> None:
    """terraform.tfvars.example names only declared, non-secret variables."""
    for example in sorted(module.path.glob("*.tfvars.example")):
        text = example.read_text(encoding="utf-8")
        try:
            values = parse_hcl(text)
        except Exception as exc:
            findings.append(
                Finding(
                    example,
                    getattr(exc, "line", 1) or 1,
                    "error",
                    f"does not parse as HCL: {_first_line(exc)}",
                )
            )
            continue
        for name in [n for n in values if not n.startswith("__")]:
            line = find_line(text, rf"^[ \t]*{re.escape(name)}\s*=")
            if name not in module.variables:
                findings.append(
                    Finding(
                        example,
                        line,
                        "error",
                        f"{name} is not a variable of {_display(module.path)}",
                    )
                )
            elif module.variables[name][1].get("sensitive") is True:
                findings.append(
                    Finding(
                        example,
                        line,
                        "error",
                        f"{name} is sensitive: export TF_VAR_{name} instead of writing it in a "
                        "tfvars file",
                    )
                )
        for name, (_, body) in module.variables.items():
            if "default" not in body and body.get("sensitive") is not True and name not in values:
                findings.append(
                    Finding(
                        example,
                        1,
                        "warning",
                        f"required variable {name} is missing from the example",
                    )
                )


def template_names(text: str) -> dict[str, int]:
    """The names a template reads, each with the line of its first use.

    The template is masked as the body of a heredoc, so only its interpolations remain (its
    literal text, comments and string contents are blanked); object keys, function names,
    attributes and the variables of ``for`` expressions are not inputs.
    """
    masked = mask_non_code(f"x = <<EOT\n{text}\nEOT\n")
    bound = set(re.findall(rf"\bfor\s+({IDENT})(?:\s*,\s*({IDENT}))?\s+in\b", masked))
    loop_vars = {name for pair in bound for name in pair if name}
    names: dict[str, int] = {}
    pattern = rf"(?<![\w.\-])({IDENT})(?![\w\-])(?![ \t]*\()(?![ \t]*=(?!=))"
    for match in re.finditer(pattern, masked):
        name = match.group(1)
        if name in KEYWORDS or name in loop_vars or match.start() < 4:  # "x = " of the wrapper
            continue
        names.setdefault(name, max(1, line_of(masked, match.start()) - 1))
    return names


def check_templates(modules: list[ModuleDir], findings: list[Finding]) -> None:
    """Every name a template reads is passed by each templatefile() call of it; names passed
    and never read are warnings; a template no call uses is a warning."""
    used: set[Path] = set()
    for module in modules:
        for call in module.template_calls:
            where = f"templatefile({call.raw_path}, ...)"
            if call.template is None:
                findings.append(
                    Finding(call.file, call.line, "warning", f"{where}: path is not a literal")
                )
                continue
            template = call.template.resolve()
            used.add(template)
            if not template.is_file():
                message = f"{where}: {_display(template)} does not exist"
                findings.append(Finding(call.file, call.line, "error", message))
                continue
            if call.keys is None:
                message = f"{where}: the values are not a literal object; not checked"
                findings.append(Finding(call.file, call.line, "warning", message))
                continue
            names = template_names(template.read_text(encoding="utf-8"))
            for name, line in sorted(names.items()):
                if name not in call.keys:
                    message = (
                        f"{template.name} reads {name}, which the templatefile() call in "
                        f"{_display(call.file)}:{call.line} does not pass"
                    )
                    findings.append(Finding(template, line, "error", message))
            for key in call.keys:
                if key not in names:
                    message = f"{where} passes {key}, which {template.name} never reads"
                    findings.append(Finding(call.file, call.line, "warning", message))
    for module in modules:
        for template in sorted(module.path.rglob("*.tftpl")):
            if template.resolve() not in used:
                message = "template is not used by any templatefile() call"
                findings.append(Finding(template, 1, "warning", message))


def find_module_dirs(root: Path) -> list[Path]:
    """Directories under root that hold .tf files (skipping .terraform caches)."""
    dirs = {p.parent for p in root.rglob("*.tf") if ".terraform" not in p.parts}
    return sorted(dirs)


def check_tree(root: Path) -> list[Finding]:
    """Run every check on a Terraform tree; returns findings sorted by file and line."""
    findings: list[Finding] = []
    modules = [load_module(path, findings) for path in find_module_dirs(root)]
    by_path = {m.path.resolve(): m for m in modules}
    for module in modules:
        if module.broken:
            continue
        check_variables(module, findings)
        check_references(module, by_path, findings)
        check_module_calls(module, by_path, findings)
        check_outputs(module, by_path, findings)
        check_tfvars_examples(module, findings)
    check_templates(modules, findings)
    return sorted(set(findings), key=lambda f: (str(f.path), f.line, f.severity, f.message))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print findings, exit 1 on errors (or warnings, if strict)."""
    parser = argparse.ArgumentParser(
        prog="python tools/tfcheck.py",
        description="Offline checks for the Terraform tree: references resolve, module inputs "
        "match, variables are documented and typed, secrets are sensitive.",
    )
    parser.add_argument(
        "root",
        nargs="?",
        default="terraform",
        type=Path,
        help="Terraform tree to check (default: terraform)",
    )
    parser.add_argument("--warnings-as-errors", action="store_true", help="fail on warnings too")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    findings = check_tree(args.root)
    for finding in findings:
        print(finding.format())
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    modules = len(find_module_dirs(args.root))
    templates = len(list(args.root.rglob("*.tftpl")))
    print(
        f"tfcheck: {modules} modules, {templates} templates: {errors} errors, {warnings} warnings"
    )
    failed = errors > 0 or (args.warnings_as_errors and warnings > 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
