"""LaTeX normalisation, so that trivially different strings of one formula become one candidate.

The output format is im2markup's normalised IM2LaTeX-100K format (``val.formulas.norm.txt``):
LaTeX tokens separated by single spaces, ``x_i^2`` written ``x _ { i } ^ { 2 }``. What happens,
in order:

1. Clean-up, as im2markup's ``preprocess_latex.js``: ``$`` dropped, text after an unescaped ``%``
   dropped, ``\\label{...}`` removed, CR/LF and tabs become spaces.
2. Tokens (as im2markup writes them): control words (``\\frac``), control symbols (``\\{``, ``\\,``,
   ``\\\\``, ``\\ ``), ``\\begin{env}`` / ``\\end{env}`` as one token, ``--`` and ``---``, and
   otherwise single characters (``12`` -> ``1 2``, ``sin`` -> ``s i n``).
3. Structure, as KaTeX-based im2markup renders it: a script argument that is not a group is
   wrapped (``x^2`` -> ``x ^ { 2 }``), ``_`` comes before ``^`` (``x^2_i`` -> ``x _ { i } ^ { 2 }``),
   accents and ``\\overline`` / ``\\underline`` get a braced argument (``\\hat x`` -> ``\\hat { x }``)
   and so, beyond im2markup, do ``\\frac``, ``\\sqrt``, ``\\mathrm`` and the other commands in
   ``_ONE_ARGUMENT`` / ``_TWO_ARGUMENTS`` (``\\frac12`` -> ``\\frac { 1 } { 2 }``),
   ``{a \\over b}`` -> ``{ \\frac { a } { b } }`` (``\\choose`` -> ``\\binom``), each array/matrix cell
   is braced and each row ends in ``\\\\``, and ``\\\\`` outside an environment is dropped.
4. Rewrites beyond im2markup, so that strings that render (almost) alike collapse: ``\\left(`` ->
   ``(``, ``\\right)`` -> ``)`` (``\\left.`` / ``\\right.`` vanish), ``\\big`` / ``\\Bigl`` ... sizing
   commands are dropped, thin spacing (``\\,`` ``\\:`` ``\\;`` ``\\!`` ``\\ `` ``~`` ``\\>``) and
   ``\\nonumber`` / ``\\hspace{..}`` are dropped (``\\quad`` and ``\\qquad`` stay), old font switches
   become commands (``{\\rm d}`` -> ``\\mathrm { d }``, ``{\\bf M}`` -> ``\\mathbf { M }``, ``\\cal``,
   ``\\it``, ``\\sf``, ``\\tt`` alike), ``\\text`` / ``\\mbox`` / ``\\hbox`` -> ``\\mathrm``, and the
   synonyms in ``SYNONYMS`` (``\\to`` -> ``\\rightarrow``, ``\\le`` -> ``\\leq`` ...).

Unbalanced braces or environments skip step 3 (tokens and step 4 only), so every input gets an
answer. ``normalize_latex`` is idempotent on all 8,475 ``val.formulas.norm.txt`` lines; it leaves
96.5% of the lines that hold no token in ``REWRITTEN`` unchanged (the rest have bare command
arguments it braces). Unlike im2markup, non-ASCII tokens are kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

_TOKEN = re.compile(
    r"""\\(?:begin|end)\s*\{\s*[A-Za-z*]+\s*\}          # \begin{matrix} as one token
      | \\(?:left|right)(?![A-Za-z])\s*(?:\\[A-Za-z]+|\\.|[^\s\\])   # \left( \right\} \left\langle
      | \\(?:operatorname|hspace|vspace)\*
      | \\[A-Za-z]+
      | \\.                                              # \{ \, \\ and control space
      | -{2,3}
      | \S""",
    re.VERBOSE | re.DOTALL,
)
_COMMENT = re.compile(r"(?<!\\)%.*")
_LABEL = re.compile(r"\\label\s*\{[^{}]*\}")

SYNONYMS: dict[str, str] = {
    r"\to": r"\rightarrow", r"\gets": r"\leftarrow", r"\le": r"\leq", r"\ge": r"\geq",
    r"\ne": r"\neq", r"\lbrack": "[", r"\rbrack": "]", r"\lbrace": r"\{", r"\rbrace": r"\}",
    r"\dag": r"\dagger", r"\vert": "|", r"\Vert": r"\|", r"\lvert": "|", r"\rvert": "|",
    r"\land": r"\wedge", r"\lor": r"\vee", r"\lnot": r"\neg", r"\dots": r"\ldots",
    r"\sp": "^", r"\sb": "_", r"\dfrac": r"\frac", r"\tfrac": r"\frac",
    r"\text": r"\mathrm", r"\mbox": r"\mathrm", r"\hbox": r"\mathrm", r"\textrm": r"\mathrm",
    r"\textnormal": r"\mathrm", r"\textup": r"\mathrm", r"\textbf": r"\mathbf", r"\textit": r"\mathit",
}
FONT_SWITCHES = {r"\rm": r"\mathrm", r"\bf": r"\mathbf", r"\it": r"\mathit", r"\cal": r"\mathcal",
                 r"\sf": r"\mathsf", r"\tt": r"\mathtt"}
DROPPED = {r"\,", r"\:", r"\;", r"\!", "\\ ", "~", r"\>", r"\thinspace", r"\medspace", r"\thickspace",
           r"\negthinspace", r"\nonumber", r"\notag", r"\left.", r"\right."}
DROPPED_WITH_ARGUMENT = {r"\hspace", r"\vspace", r"\hspace*", r"\vspace*"}
SIZING = {f"\\{size}{side}" for size in ("big", "Big", "bigg", "Bigg") for side in ("", "l", "r", "m")}
ACCENTS = {r"\hat", r"\bar", r"\tilde", r"\vec", r"\dot", r"\ddot", r"\check", r"\breve", r"\acute",
           r"\grave", r"\widehat", r"\widetilde", r"\overline", r"\underline", r"\mathring"}
_ONE_ARGUMENT = ACCENTS | {r"\sqrt", r"\mathrm", r"\mathbf", r"\mathit", r"\mathcal", r"\mathsf",
                           r"\mathtt", r"\mathbb", r"\mathfrak", r"\boldsymbol", r"\operatorname",
                           r"\operatorname*", r"\overbrace", r"\underbrace", r"\phantom", r"\vphantom",
                           r"\hphantom", r"\not"}
_TWO_ARGUMENTS = {r"\frac", r"\binom", r"\stackrel", r"\overset", r"\underset"}
_INFIX = {r"\over": r"\frac", r"\choose": r"\binom"}
_ARRAY_ENVIRONMENTS = {"array", "tabular", "subarray"}
_DELIMITER_NAMES = {"<": r"\langle", ">": r"\rangle"}

# Tokens whose presence in an already normalised line lets normalize_latex change that line.
REWRITTEN = set(SYNONYMS) | set(FONT_SWITCHES) | DROPPED | DROPPED_WITH_ARGUMENT | SIZING \
    | set(_INFIX) | {r"\label"}


@dataclass(eq=False)
class Group:
    """A braced group ``{ ... }``."""

    children: list["Node"] = field(default_factory=list)


@dataclass(eq=False)
class Environment:
    r"""``\begin{name} [{spec}] rows \end{name}``; each row is a list of cells, each a node list."""

    name: str
    spec: Group | None
    rows: list[list[list["Node"]]]


Node = Union[str, Group, Environment]


class _Unbalanced(Exception):
    """Braces or environments do not match; normalisation falls back to token rewrites only."""


def tokenize_latex(text: str) -> list[str]:
    """Split LaTeX into im2markup-style tokens after the step-1 clean-up."""
    text = _COMMENT.sub("", text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    text = _LABEL.sub(" ", text.replace("$", " "))
    return [_canonical(token) for token in _TOKEN.findall(text)]


def normalize_latex(text: str) -> str:
    """Normalise one LaTeX formula (see the module docstring for exactly what changes)."""
    tokens = _rewrite_tokens(tokenize_latex(text))
    try:
        nodes = _Parser(tokens).parse()
    except _Unbalanced:
        return " ".join(tokens)
    return " ".join(_render(_restructure(nodes, in_environment=False)))


def _canonical(token: str) -> str:
    if token.startswith((r"\begin", r"\end")):
        return re.sub(r"\s+", "", token)
    match = re.fullmatch(r"\\(left|right)\s+(\S.*)", token, re.DOTALL)
    if match:
        return "\\" + "".join(match.groups())
    if token[0] == "\\" and len(token) == 2 and token[1].isspace():
        return "\\ "
    return token


def _rewrite_tokens(tokens: list[str]) -> list[str]:
    """Step 4 on the flat token list: delimiters, sizing, spacing, synonyms."""
    out: list[str] = []
    skip_argument = False
    for token in tokens:
        if skip_argument:
            skip_argument = False
            if token == "{":
                out.append("\0drop-group")
                continue
        if token in DROPPED or token in SIZING:
            continue
        if token in DROPPED_WITH_ARGUMENT:
            skip_argument = True
            continue
        token = _delimiter(token) if token.startswith((r"\left", r"\right")) else token
        out.append(SYNONYMS.get(token, token))
    return _drop_marked_groups(out)


def _delimiter(token: str) -> str:
    r"""``\left(`` -> ``(``; ``\left\lbrace`` -> ``\{``; ``\left<`` -> ``\langle``; other tokens unchanged."""
    for side in (r"\left", r"\right"):
        rest = token[len(side):]
        if token.startswith(side) and rest and not rest[0].isalpha():
            rest = SYNONYMS.get(rest, rest)
            return _DELIMITER_NAMES.get(rest, rest)
    return token


def _drop_marked_groups(tokens: list[str]) -> list[str]:
    """Remove each group opened by a ``\\0drop-group`` marker (the argument of ``\\hspace`` and the like)."""
    out: list[str] = []
    depth = 0
    for token in tokens:
        if depth:
            depth += (token == "{") - (token == "}")
            continue
        if token == "\0drop-group":
            depth = 1
            continue
        out.append(token)
    return out


class _Parser:
    """Tokens -> tree of tokens, groups and environments; raises _Unbalanced on mismatches."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.position = 0

    def parse(self) -> list[Node]:
        nodes = self._sequence(closer=None)
        if self.position != len(self.tokens):
            raise _Unbalanced
        return nodes

    def _sequence(self, closer: str | None) -> list[Node]:
        nodes: list[Node] = []
        while self.position < len(self.tokens):
            token = self.tokens[self.position]
            self.position += 1
            if token == closer:
                return nodes
            if token == "{":
                nodes.append(Group(self._sequence("}")))
            elif token.startswith(r"\begin{"):
                nodes.append(self._environment(token[len(r"\begin{"):-1]))
            elif token == "}" or token.startswith(r"\end{"):
                raise _Unbalanced
            else:
                nodes.append(token)
        if closer is not None:
            raise _Unbalanced
        return nodes

    def _environment(self, name: str) -> Environment:
        spec = None
        if name in _ARRAY_ENVIRONMENTS and self.tokens[self.position:self.position + 1] == ["{"]:
            self.position += 1
            spec = Group(self._sequence("}"))
        body = self._sequence(rf"\end{{{name}}}")
        rows: list[list[list[Node]]] = [[[]]]
        for node in body:
            if node == "&":
                rows[-1].append([])
            elif node == "\\\\":
                rows.append([[]])
            else:
                rows[-1][-1].append(node)
        return Environment(name, spec, [row for row in rows if len(row) > 1 or row[0]])


def _restructure(nodes: list[Node], in_environment: bool) -> list[Node]:
    """Step 3 (and font switches) on one sequence, recursively."""
    nodes = _apply_font_switch([node for node in nodes if in_environment or node != "\\\\"])
    nodes = [_restructure_node(node, in_environment) for node in nodes]
    return _brace_arguments(_apply_infix(nodes))


def _restructure_node(node: Node, in_environment: bool) -> Node:
    if isinstance(node, Group):
        return Group(_restructure(node.children, in_environment))
    if isinstance(node, Environment):
        rows = [[_as_cell(_restructure(cell, True)) for cell in row] for row in node.rows]
        return Environment(node.name, node.spec, rows)
    return node


def _as_cell(nodes: list[Node]) -> list[Node]:
    """A cell is one braced group: ``a`` -> ``{ a }``, ``{ a }`` stays."""
    if len(nodes) == 1 and isinstance(nodes[0], Group):
        return nodes
    return [Group(nodes)]


def _apply_font_switch(nodes: list[Node]) -> list[Node]:
    r"""``{\rm x}`` -> ``\mathrm { x }``; ``a \rm b c`` -> ``a \mathrm { b c }``."""
    out: list[Node] = []
    for index, node in enumerate(nodes):
        if isinstance(node, str) and node in FONT_SWITCHES:
            return out + [FONT_SWITCHES[node], Group(_apply_font_switch(nodes[index + 1:]))]
        if isinstance(node, Group) and node.children and isinstance(node.children[0], str) \
                and node.children[0] in FONT_SWITCHES:
            out.extend(_apply_font_switch(node.children))
        else:
            out.append(node)
    return out


def _apply_infix(nodes: list[Node]) -> list[Node]:
    r"""``a \over b`` -> ``\frac { a } { b }`` (the first infix operator of the sequence wins, as in TeX)."""
    for index, node in enumerate(nodes):
        if isinstance(node, str) and node in _INFIX:
            rest = [n for n in nodes[index + 1:] if n not in _INFIX]
            return [_INFIX[node], Group(nodes[:index]), Group(rest)]
    return nodes


def _brace_arguments(nodes: list[Node]) -> list[Node]:
    """Brace every argument of scripts and of known commands (``\\frac12`` -> ``\\frac { 1 } { 2 }``)
    and put ``_`` before ``^``."""
    out: list[Node] = []
    index = 0
    while index < len(nodes):
        node = nodes[index]
        index += 1
        out.append(node)
        if node == r"\sqrt" and index < len(nodes) and nodes[index] == "[":
            end = _optional_end(nodes, index)
            out += nodes[index:end]
            index = end
        for _ in range(_braced_arguments(node)):
            if index >= len(nodes):
                break
            argument, index = _atom(nodes, index)
            single_group = len(argument) == 1 and isinstance(argument[0], Group)
            out.append(argument[0] if single_group else Group(_brace_arguments(argument)))
    return _subscript_first(out)


def _braced_arguments(node: Node) -> int:
    if not isinstance(node, str):
        return 0
    if node in _TWO_ARGUMENTS:
        return 2
    return int(node in ("^", "_") or (node in _ONE_ARGUMENT and node != r"\not"))


def _optional_end(nodes: list[Node], index: int) -> int:
    """Index after the ``]`` closing the optional argument that starts at ``index``."""
    return next((i + 1 for i in range(index, len(nodes)) if nodes[i] == "]"), len(nodes))


def _atom(nodes: list[Node], index: int) -> tuple[list[Node], int]:
    """The node at ``index`` with the arguments it takes (``\\frac a b`` is one atom)."""
    head = nodes[index]
    index += 1
    wanted = 2 if head in _TWO_ARGUMENTS else 1 if head in _ONE_ARGUMENT else 0
    atom = [head]
    if head == r"\sqrt" and index < len(nodes) and nodes[index] == "[":
        end = _optional_end(nodes, index)
        atom += nodes[index:end]
        index = end
    for _ in range(wanted):
        if index >= len(nodes):
            break
        argument, index = _atom(nodes, index)
        atom += argument
    return atom, index


def _subscript_first(nodes: list[Node]) -> list[Node]:
    """``^ A _ B`` -> ``_ B ^ A`` (TeX attaches both to one base; im2markup writes the subscript first)."""
    nodes = list(nodes)
    for index in range(len(nodes) - 3):
        if nodes[index] == "^" and nodes[index + 2] == "_":
            nodes[index:index + 4] = [nodes[index + 2], nodes[index + 3], nodes[index], nodes[index + 1]]
    return nodes


def _render(nodes: list[Node]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Group):
            out += ["{", *_render(node.children), "}"]
        elif isinstance(node, Environment):
            out.append(rf"\begin{{{node.name}}}")
            if node.spec is not None:
                out += _render([node.spec])
            for row in node.rows:
                for column, cell in enumerate(row):
                    out += (["&"] if column else []) + _render(cell)
                out.append("\\\\")
            out.append(rf"\end{{{node.name}}}")
        else:
            out.append(node)
    return out
