"""Offline static checks for the Terraform tree (`make tf-check`).

Why this exists: `terraform validate` needs the provider plugins, and providers cannot be
downloaded on machines without network access (this one, many CI sandboxes). These checks need
only python-hcl2 and PyYAML and catch the mistakes that otherwise surface minutes into an
`apply` on Chameleon:

- every `.tf` file parses (python-hcl2) and every `terraform.tfvars.example` too;
- every `var.X`, `local.X`, `module.M.O`, resource and data reference resolves inside its
  module; module calls pass only declared inputs and all required ones; `providers` maps
  cover the child's `configuration_aliases`; resources in alias-only modules name a provider;
- every variable has a description and a type; a sensitive variable has no default; a
  variable whose name says secret (password, token, secret, private_key) is sensitive;
  outputs that expose sensitive values are marked sensitive; providers are version-pinned;
- every `templatefile()` call passes exactly the names its template uses (a missing one is an
  error, an unused one a warning), and each template renders, with the sample values in
  `samples.yaml` beside it, into valid `#cloud-config` YAML (embedded YAML files included).

Templates are rendered by a small interpreter of Terraform's template language (`${...}`,
`%{ if }`, `%{ for }`, strip markers `~`) with a subset of functions; anything outside the
subset is reported, never guessed. With `--terraform-validate`, `terraform init -backend=false`
and `terraform validate` also run in each root module when a terraform binary is on PATH.

Usage: python -m taigimed.tfcheck terraform/ [--warnings-as-errors] [--terraform-validate]
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import yaml

SECRET_NAME = re.compile(r"(password|passwd|secret|token|private_key|api_key)", re.IGNORECASE)
MODULE_META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}
IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"


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
# --------------------------------------------------------------------------------------------


class TemplateError(Exception):
    """A template problem at a 1-based line of the template file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class Lit:
    text: str


@dataclass
class Interp:
    expr: Any
    line: int


@dataclass
class ForNode:
    key_var: str | None
    val_var: str
    coll: Any
    body: list[Any]
    line: int


@dataclass
class IfNode:
    cond: Any
    then: list[Any]
    other: list[Any]
    line: int


@dataclass
class _Tag:
    kind: str  # "interp" or "directive"
    code: str
    line: int
    trim_before: bool
    trim_after: bool


def _template_tokens(text: str) -> list[Any]:
    """Literal runs, newlines and tags, with strip markers applied as Terraform does.

    As in HCL's scanner, each newline is its own literal token, so `~}` trims the whitespace up
    to and including the next line break, and `{~` the whitespace back to the previous one.
    """
    raw: list[Any] = []
    i, buf = 0, []
    line = 1

    def flush() -> None:
        if buf:
            raw.append(Lit("".join(buf)))
            buf.clear()

    while i < len(text):
        if text.startswith(("$${", "%%{"), i):
            buf.append(text[i + 1 : i + 3])
            i += 3
            continue
        if text.startswith(("${", "%{"), i):
            flush()
            kind = "interp" if text[i] == "$" else "directive"
            end = _mask_code(text, i + 2, None, stop_at_brace=True)
            if end > len(text) or text[end - 1] != "}":
                raise TemplateError(line, f"unclosed {text[i : i + 2]} sequence")
            code = text[i + 2 : end - 1]
            trim_before = code.startswith("~")
            trim_after = code.endswith("~")
            code = code[1 if trim_before else 0 : len(code) - (1 if trim_after else 0)]
            raw.append(_Tag(kind, code.strip(), line, trim_before, trim_after))
            line += text.count("\n", i, end)
            i = end
            continue
        if text[i] == "\n":
            flush()
            raw.append(Lit("\n"))
            line += 1
        else:
            buf.append(text[i])
        i += 1
    flush()
    for index, token in enumerate(raw):
        if not isinstance(token, _Tag):
            continue
        if token.trim_before and index > 0 and isinstance(raw[index - 1], Lit):
            raw[index - 1].text = raw[index - 1].text.rstrip()
        if token.trim_after and index + 1 < len(raw) and isinstance(raw[index + 1], Lit):
            raw[index + 1].text = raw[index + 1].text.lstrip()
    return raw


def parse_template(text: str) -> list[Any]:
    """Parse template text into Lit / Interp / ForNode / IfNode nodes."""
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = [(None, root)]
    for token in _template_tokens(text):
        current = stack[-1][1]
        if isinstance(token, Lit):
            if current and isinstance(current[-1], Lit):
                current[-1].text += token.text
            else:
                current.append(token)
            continue
        if token.kind == "interp":
            current.append(Interp(parse_expression(token.code, token.line), token.line))
            continue
        words = token.code.split(None, 1)
        keyword = words[0] if words else ""
        rest = words[1] if len(words) > 1 else ""
        if keyword == "if":
            node = IfNode(parse_expression(rest, token.line), [], [], token.line)
            current.append(node)
            stack.append((node, node.then))
        elif keyword == "else":
            owner = stack[-1][0]
            if not isinstance(owner, IfNode) or stack[-1][1] is owner.other:
                raise TemplateError(token.line, "%{ else } without a matching %{ if }")
            stack[-1] = (owner, owner.other)
        elif keyword == "endif":
            if not isinstance(stack[-1][0], IfNode):
                raise TemplateError(token.line, "%{ endif } without a matching %{ if }")
            stack.pop()
        elif keyword == "for":
            match = re.fullmatch(
                r"(" + IDENT + r")\s*(?:,\s*(" + IDENT + r"))?\s+in\s+(.+)", rest, re.DOTALL
            )
            if match is None:
                raise TemplateError(token.line, f"malformed for directive: %{{ {token.code} }}")
            first, second, coll = match.groups()
            key_var, val_var = (first, second) if second else (None, first)
            node = ForNode(key_var, val_var, parse_expression(coll, token.line), [], token.line)
            current.append(node)
            stack.append((node, node.body))
        elif keyword == "endfor":
            if not isinstance(stack[-1][0], ForNode):
                raise TemplateError(token.line, "%{ endfor } without a matching %{ for }")
            stack.pop()
        else:
            raise TemplateError(token.line, f"unknown template directive %{{ {keyword} }}")
    if len(stack) > 1:
        owner = stack[-1][0]
        closer = "endif" if isinstance(owner, IfNode) else "endfor"
        raise TemplateError(
            owner.line, f"directive opened here is never closed with %{{ {closer} }}"
        )
    return root


# Expressions inside templates: a Pratt parser over a small subset of HCL expressions.

_EXPR_TOKEN = re.compile(
    r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<name>'
    + IDENT
    + r")|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]]))"
)


def _lex_expression(code: str, line: int) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    code = code.strip()
    while pos < len(code):
        match = _EXPR_TOKEN.match(code, pos)
        if match is None or match.end() == pos:
            raise TemplateError(line, f"unsupported expression syntax near {code[pos:]!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


_BINARY = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, ">": 4, "<=": 4, ">=": 4}
_BINARY.update({"+": 5, "-": 5, "*": 6, "/": 6, "%": 6})


class _ExprParser:
    """Parses `a.b[0]`, `f(x, y)`, `!x`, `a == b && c`, `c ? x : y`, literals."""

    def __init__(self, code: str, line: int) -> None:
        self.tokens = _lex_expression(code, line)
        self.pos = 0
        self.line = line
        self.code = code

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            want = f"{value!r}" if value else "more input"
            raise TemplateError(self.line, f"expected {want} in expression {self.code!r}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        node = self.conditional()
        if self.peek() is not None:
            raise TemplateError(self.line, f"unexpected {self.peek()[1]!r} in {self.code!r}")
        return node

    def conditional(self) -> Any:
        cond = self.binary(1)
        if self.peek() == ("op", "?"):
            self.take("?")
            yes = self.conditional()
            self.take(":")
            return ("cond", cond, yes, self.conditional())
        return cond

    def binary(self, min_prec: int) -> Any:
        left = self.unary()
        while (tok := self.peek()) and tok[0] == "op" and _BINARY.get(tok[1], 0) >= min_prec:
            op = self.take()[1]
            left = ("bin", op, left, self.binary(_BINARY[op] + 1))
        return left

    def unary(self) -> Any:
        if self.peek() in (("op", "!"), ("op", "-")):
            op = self.take()[1]
            return ("unary", op, self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "str":
            if "${" in value or "%{" in value:
                raise TemplateError(self.line, "nested string templates are not supported here")
            return ("lit", json.loads(value))
        if kind == "name":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            if self.peek() == ("op", "("):
                self.take("(")
                args = []
                while self.peek() != ("op", ")"):
                    args.append(self.conditional())
                    if self.peek() == ("op", ","):
                        self.take(",")
                self.take(")")
                return ("call", value, args)
            return ("name", value)
        if value == "(":
            inner = self.conditional()
            self.take(")")
            return inner
        if value == "[":
            items = []
            while self.peek() != ("op", "]"):
                items.append(self.conditional())
                if self.peek() == ("op", ","):
                    self.take(",")
            self.take("]")
            return ("list", items)
        raise TemplateError(self.line, f"unexpected {value!r} in expression {self.code!r}")

    def postfix(self, node: Any) -> Any:
        while True:
            if self.peek() == ("op", "."):
                self.take(".")
                kind, value = self.take()
                node = ("index", node, ("lit", int(value) if kind == "num" else value))
            elif self.peek() == ("op", "["):
                self.take("[")
                node = ("index", node, self.conditional())
                self.take("]")
            else:
                return node


def parse_expression(code: str, line: int) -> Any:
    """Parse one template expression into a small tuple AST."""
    if not code.strip():
        raise TemplateError(line, "empty expression")
    return _ExprParser(code, line).parse()


def _expr_names(node: Any, bound: set[str], line: int, found: dict[str, int]) -> None:
    kind = node[0]
    if kind == "name" and node[1] not in bound:
        found.setdefault(node[1], line)
    elif kind == "call":
        for arg in node[2]:
            _expr_names(arg, bound, line, found)
    elif kind in ("bin",):
        _expr_names(node[2], bound, line, found)
        _expr_names(node[3], bound, line, found)
    elif kind == "unary":
        _expr_names(node[2], bound, line, found)
    elif kind == "cond":
        for part in node[1:]:
            _expr_names(part, bound, line, found)
    elif kind == "index":
        _expr_names(node[1], bound, line, found)
        _expr_names(node[2], bound, line, found)
    elif kind == "list":
        for item in node[1]:
            _expr_names(item, bound, line, found)


def template_names(nodes: list[Any], bound: frozenset[str] = frozenset()) -> dict[str, int]:
    """Names a template reads from its variables, each with the first line that reads it."""
    found: dict[str, int] = {}
    for node in nodes:
        if isinstance(node, Interp):
            _expr_names(node.expr, set(bound), node.line, found)
        elif isinstance(node, IfNode):
            _expr_names(node.cond, set(bound), node.line, found)
            for name, line in {
                **template_names(node.then, bound),
                **template_names(node.other, bound),
            }.items():
                found.setdefault(name, line)
        elif isinstance(node, ForNode):
            _expr_names(node.coll, set(bound), node.line, found)
            inner = bound | {node.val_var} | ({node.key_var} if node.key_var else set())
            for name, line in template_names(node.body, frozenset(inner)).items():
                found.setdefault(name, line)
    return found


def _tf_indent(spaces: int, text: str) -> str:
    """Terraform's indent(): every line but the first gets the prefix."""
    lines = text.split("\n")
    return "\n".join([lines[0]] + [(" " * spaces + ln) if ln else ln for ln in lines[1:]])


TEMPLATE_FUNCTIONS = {
    "length": len,
    "join": lambda sep, items: sep.join(_to_string(i, 0) for i in items),
    "upper": str.upper,
    "lower": str.lower,
    "trimspace": str.strip,
    "jsonencode": lambda v: json.dumps(v, separators=(",", ":")),
    "indent": _tf_indent,
    "base64encode": lambda s: base64.b64encode(s.encode()).decode(),
    "replace": lambda s, old, new: s.replace(old, new),
    "contains": lambda items, v: v in items,
    "concat": lambda *lists: [x for lst in lists for x in lst],
    "tostring": lambda v: _to_string(v, 0),
}


def _to_string(value: Any, line: int) -> str:
    """Convert a value for interpolation exactly where Terraform can, and refuse otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if value is None:
        raise TemplateError(line, "interpolated value is null (Terraform fails on this)")
    raise TemplateError(line, f"cannot interpolate a {type(value).__name__} into a string")


def evaluate(node: Any, scope: dict[str, Any], line: int) -> Any:
    """Evaluate an expression AST against template variables."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        if node[1] not in scope:
            raise TemplateError(line, f"template uses {node[1]!r}, which no value provides")
        return scope[node[1]]
    if kind == "list":
        return [evaluate(item, scope, line) for item in node[1]]
    if kind == "index":
        base, key = evaluate(node[1], scope, line), evaluate(node[2], scope, line)
        try:
            return base[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise TemplateError(line, f"cannot index {base!r} with {key!r}") from exc
    if kind == "call":
        func = TEMPLATE_FUNCTIONS.get(node[1])
        if func is None:
            known = ", ".join(sorted(TEMPLATE_FUNCTIONS))
            raise TemplateError(line, f"function {node[1]}() is not supported offline ({known})")
        args = [evaluate(arg, scope, line) for arg in node[2]]
        try:
            return func(*args)
        except TypeError as exc:
            raise TemplateError(line, f"{node[1]}() failed: {exc}") from exc
    if kind == "unary":
        value = evaluate(node[2], scope, line)
        return (not value) if node[1] == "!" else -value
    if kind == "cond":
        cond = evaluate(node[1], scope, line)
        if not isinstance(cond, bool):
            raise TemplateError(line, f"condition is {cond!r}, not a bool")
        return evaluate(node[2] if cond else node[3], scope, line)
    if kind == "bin":
        op, left = node[1], evaluate(node[2], scope, line)
        if op == "&&":
            return left and evaluate(node[3], scope, line)
        if op == "||":
            return left or evaluate(node[3], scope, line)
        right = evaluate(node[3], scope, line)
        ops = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "/": lambda a, b: a / b,
            "%": lambda a, b: a % b,
        }
        return ops[op](left, right)
    raise TemplateError(line, f"cannot evaluate {node!r}")


def render_template(nodes: list[Any], scope: dict[str, Any]) -> str:
    """Render parsed template nodes with the given variables, as templatefile() would."""
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Lit):
            out.append(node.text)
        elif isinstance(node, Interp):
            out.append(_to_string(evaluate(node.expr, scope, node.line), node.line))
        elif isinstance(node, IfNode):
            cond = evaluate(node.cond, scope, node.line)
            if not isinstance(cond, bool):
                raise TemplateError(node.line, f"%{{ if }} condition is {cond!r}, not a bool")
            out.append(render_template(node.then if cond else node.other, scope))
        elif isinstance(node, ForNode):
            coll = evaluate(node.coll, scope, node.line)
            pairs = coll.items() if isinstance(coll, dict) else enumerate(coll or [])
            for key, value in pairs:
                inner = {**scope, node.val_var: value}
                if node.key_var:
                    inner[node.key_var] = key
                out.append(render_template(node.body, inner))
    return "".join(out)


def validate_cloud_config(rendered: str) -> list[str]:
    """Problems with rendered cloud-init user data (empty list when it is valid)."""
    if not rendered.startswith("#cloud-config\n"):
        return ["rendered user data must start with a '#cloud-config' line"]
    try:
        doc = yaml.safe_load(rendered)
    except yaml.YAMLError as exc:
        return [f"rendered cloud-config is not valid YAML: {exc}".replace("\n", " ")]
    if not isinstance(doc, dict):
        return ["rendered cloud-config must be a YAML mapping"]
    problems = []
    for index, item in enumerate(doc.get("write_files", []) or []):
        if not isinstance(item, dict) or "path" not in item or "content" not in item:
            problems.append(f"write_files[{index}] needs both 'path' and 'content'")
            continue
        if str(item["path"]).endswith((".yaml", ".yml")):
            try:
                list(yaml.safe_load_all(item["content"]))
            except yaml.YAMLError as exc:
                problems.append(
                    f"write_files {item['path']} is not valid YAML: {exc}".replace("\n", " ")
                )
    runcmd = doc.get("runcmd", [])
    if not isinstance(runcmd, list) or not all(isinstance(c, (str, list)) for c in runcmd):
        problems.append("runcmd must be a list of strings or argument lists")
    return problems


# --------------------------------------------------------------------------------------------
# Module model
# --------------------------------------------------------------------------------------------


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


def check_providers(module: ModuleDir, is_root: bool, findings: list[Finding]) -> None:
    """Providers pinned; alias-only modules name a provider on every resource."""
    used = {rtype.split("_", 1)[0] for _, rtype, _, _, _ in module.resource_bodies}
    first_file = next(iter(module.texts), None)
    for provider in sorted(used):
        spec = module.required_providers.get(provider)
        if spec is None or "version" not in spec:
            target = first_file if first_file else module.path
            findings.append(
                Finding(
                    target,
                    1,
                    "error",
                    f'provider "{provider}" is used in {module.path.name}/ but not pinned: add it '
                    "with a version to required_providers in versions.tf",
                )
            )
    for provider, spec in module.required_providers.items():
        if not spec.get("configuration_aliases"):
            continue
        for kind, rtype, name, file, body in module.resource_bodies:
            if rtype.startswith(provider + "_") and "provider" not in body:
                line = find_line(module.texts[file], rf'^[ \t]*{kind}\s+"{rtype}"\s+"{name}"')
                findings.append(
                    Finding(
                        file,
                        line,
                        "error",
                        f"{kind} {rtype}.{name} must set provider = {provider}.<alias>: this "
                        f"module only receives aliased {provider} configurations",
                    )
                )
    if not is_root:
        for name, file in module.provider_blocks:
            findings.append(
                Finding(
                    file,
                    find_line(module.texts[file], r'^[ \t]*provider\s+"'),
                    "warning",
                    f'provider "{name}" configured inside a reusable module: configure providers '
                    "in the root and pass them in",
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


def load_samples(template: Path, findings: list[Finding]) -> dict[str, dict[str, Any]] | None:
    """Sample value sets for a template from samples.yaml in its directory."""
    samples_file = template.parent / "samples.yaml"
    if not samples_file.exists():
        return None
    try:
        samples = yaml.safe_load(samples_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        findings.append(
            Finding(
                samples_file,
                mark.line + 1 if mark else 1,
                "error",
                f"samples.yaml is not valid YAML: {exc}",
            )
        )
        return None
    sets = samples.get(template.name)
    return sets if isinstance(sets, dict) else None


def check_templates(modules: list[ModuleDir], findings: list[Finding]) -> None:
    """templatefile() call sites against their templates; render templates with samples."""
    calls_by_template: dict[Path, list[TemplateCall]] = {}
    for module in modules:
        for call in module.template_calls:
            if call.template is None:
                findings.append(
                    Finding(
                        call.file,
                        call.line,
                        "warning",
                        f"templatefile({call.raw_path}, ...): path is not a literal under "
                        "path.module; not checked",
                    )
                )
                continue
            calls_by_template.setdefault(call.template.resolve(), []).append(call)
    for module in modules:
        for template in sorted(module.path.rglob("*.tftpl")):
            if template.resolve() not in calls_by_template:
                findings.append(
                    Finding(
                        template, 1, "warning", "template is not used by any templatefile() call"
                    )
                )
    for template, calls in sorted(calls_by_template.items()):
        if not template.exists():
            for call in calls:
                findings.append(
                    Finding(
                        call.file,
                        call.line,
                        "error",
                        f"templatefile(): {_display(template)} does not exist",
                    )
                )
            continue
        try:
            nodes = parse_template(template.read_text(encoding="utf-8"))
        except TemplateError as exc:
            findings.append(Finding(template, exc.line, "error", exc.message))
            continue
        used = template_names(nodes)
        for call in calls:
            if call.keys is None:
                findings.append(
                    Finding(
                        call.file,
                        call.line,
                        "warning",
                        f"templatefile({template.name}): variables are not a literal object; "
                        "names not checked",
                    )
                )
                continue
            for name, line in sorted(used.items()):
                if name not in call.keys:
                    findings.append(
                        Finding(
                            template,
                            line,
                            "error",
                            f"template uses {name!r} but the templatefile() call at "
                            f"{_display(call.file)}:{call.line} does not pass it",
                        )
                    )
            for key in call.keys:
                if key not in used:
                    findings.append(
                        Finding(
                            call.file,
                            call.line,
                            "warning",
                            f"templatefile({template.name}) passes {key!r}, which the template "
                            "never uses",
                        )
                    )
        _render_samples(template, nodes, calls, findings)


def _render_samples(
    template: Path, nodes: list[Any], calls: list[TemplateCall], findings: list[Finding]
) -> None:
    samples = load_samples(template, findings)
    samples_file = template.parent / "samples.yaml"
    if not samples:
        findings.append(
            Finding(
                template,
                1,
                "error",
                f"no sample values for {template.name} in {_display(samples_file)}: add a set so "
                "it can be rendered offline",
            )
        )
        return
    passed = {key for call in calls if call.keys for key in call.keys}
    for set_name, values in samples.items():
        line = find_line(
            samples_file.read_text(encoding="utf-8"), rf"^[ \t]+{re.escape(str(set_name))}:"
        )
        if not isinstance(values, dict):
            findings.append(
                Finding(
                    samples_file,
                    line,
                    "error",
                    f"sample set {set_name!r} must be a mapping of template variables",
                )
            )
            continue
        for extra in sorted(set(values) - passed):
            findings.append(
                Finding(
                    samples_file,
                    line,
                    "warning",
                    f"sample set {set_name!r} has {extra!r}, which no templatefile() call passes",
                )
            )
        try:
            rendered = render_template(nodes, values)
        except TemplateError as exc:
            findings.append(
                Finding(
                    template,
                    exc.line,
                    "error",
                    f"rendering with sample set {set_name!r}: {exc.message}",
                )
            )
            continue
        for problem in validate_cloud_config(rendered):
            findings.append(
                Finding(template, 1, "error", f"rendered with sample set {set_name!r}: {problem}")
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


def check_readmes(module: ModuleDir, findings: list[Finding]) -> None:
    """Reusable modules carry a README (what it makes, inputs, an example)."""
    if not (module.path / "README.md").exists():
        findings.append(Finding(module.path, 1, "warning", "module has no README.md"))


def run_terraform_validate(
    root_dirs: list[ModuleDir], required: bool, findings: list[Finding]
) -> None:
    """`terraform init -backend=false` + `terraform validate` where providers can be fetched."""
    terraform = shutil.which("terraform")
    severity = "error" if required else "warning"
    if terraform is None:
        findings.append(
            Finding(
                Path("."), 1, severity, "terraform validate skipped: no terraform binary on PATH"
            )
        )
        return
    for module in root_dirs:
        init = subprocess.run(
            [
                terraform,
                f"-chdir={module.path}",
                "init",
                "-backend=false",
                "-input=false",
                "-no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if init.returncode != 0:
            lines = [ln.strip(" │╷╵") for ln in (init.stderr or init.stdout).splitlines()]
            reason = next(
                (ln for ln in lines if ln.startswith("Error:")), lines[-1] if lines else ""
            )
            findings.append(
                Finding(
                    module.path,
                    1,
                    severity,
                    "terraform validate skipped: init failed (providers unavailable offline?): "
                    + reason,
                )
            )
            continue
        result = subprocess.run(
            [terraform, f"-chdir={module.path}", "validate", "-no-color"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            findings.append(
                Finding(
                    module.path,
                    1,
                    "error",
                    "terraform validate failed: " + " ".join(result.stderr.split())[:800],
                )
            )


def find_module_dirs(root: Path) -> list[Path]:
    """Directories under root that hold .tf files (skipping .terraform caches)."""
    dirs = {p.parent for p in root.rglob("*.tf") if ".terraform" not in p.parts}
    return sorted(dirs)


def check_tree(
    root: Path, terraform_validate: bool = False, require_validate: bool = False
) -> list[Finding]:
    """Run every check on a Terraform tree; returns findings sorted by file and line."""
    findings: list[Finding] = []
    modules = [load_module(path, findings) for path in find_module_dirs(root)]
    by_path = {m.path.resolve(): m for m in modules}
    children = {src for m in modules for call in m.modules if (src := _module_source(m, call))}
    for module in modules:
        is_root = module.path.resolve() not in children
        if module.broken:
            continue
        check_variables(module, findings)
        check_references(module, by_path, findings)
        check_module_calls(module, by_path, findings)
        check_providers(module, is_root, findings)
        check_outputs(module, by_path, findings)
        check_tfvars_examples(module, findings)
        if not is_root:
            check_readmes(module, findings)
    check_templates(modules, findings)
    if terraform_validate:
        roots = [m for m in modules if m.path.resolve() not in children]
        run_terraform_validate(roots, require_validate, findings)
    return sorted(set(findings), key=lambda f: (str(f.path), f.line, f.severity, f.message))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print findings, exit 1 on errors (or warnings, if strict)."""
    parser = argparse.ArgumentParser(
        prog="python -m taigimed.tfcheck",
        description="Offline static checks for the Terraform tree: HCL parses, references "
        "resolve, variables are documented, secrets have no defaults, cloud-init templates "
        "render into valid cloud-config with sample values.",
    )
    parser.add_argument(
        "root",
        nargs="?",
        default="terraform",
        type=Path,
        help="Terraform tree to check (default: terraform)",
    )
    parser.add_argument("--warnings-as-errors", action="store_true", help="fail on warnings too")
    parser.add_argument(
        "--terraform-validate",
        action="store_true",
        help="also run terraform init -backend=false and validate in each root module (needs "
        "provider downloads)",
    )
    parser.add_argument(
        "--require-validate",
        action="store_true",
        help="with --terraform-validate: fail when validate cannot run",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only findings and the summary line"
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    findings = check_tree(args.root, args.terraform_validate, args.require_validate)
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
