"""A YAML loader that keeps node positions (``_spans``: Span, ScenarioError, Node).

YAML marks are 0-based; everything else in chaosrun is 1-based. The conversion happens
here and nowhere else.

Every scenario and inventory is loaded here, so the limits a YAML file must stay within
(``MAX_YAML_BYTES``, ``MAX_YAML_DEPTH``, ``MAX_ALIAS_NODES``; docs/scenario.md, "Limits")
are checked here too, before anything walks the document.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from typing import Any

import yaml

from ._spans import Node, ScenarioError, ScenarioErrors, Span

# The limits of one YAML file (docs/scenario.md, "Limits"). The real scenarios are a few
# KiB, a few levels deep and use no aliases; these are far above that and far below what
# hurts. An alias costs nothing to compose (PyYAML shares the aliased node), but every walk
# over the document expands it: nine levels of nine aliases (a 382-byte "billion laughs")
# are 387 million nodes, which took 53 s and 2.8 GB before these limits.
MAX_YAML_BYTES = 1024 * 1024  # of UTF-8 text
MAX_YAML_DEPTH = 64  # collections nested in one another, aliases expanded
MAX_ALIAS_NODES = 10_000  # nodes all the aliases of a document expand to, together


def _span(file: str, mark: yaml.Mark) -> Span:
    return Span(file, mark.line + 1, mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds Nodes and rejects duplicate keys."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parsing a large scenario allocates tens of thousands of nodes and spans; the
    collector's passes over them cost about as much as the parse itself, and none of
    them is garbage yet. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_yaml(text: str, file: str) -> Node:
    """Parse YAML text into a Node tree.

    Raises:
        ScenarioErrors: invalid YAML, several documents, duplicate keys (each duplicate
            points at both occurrences), or a file beyond one of the limits (its size at
            1:1, its nesting at the collection too deep, its aliases at the alias that
            expands past ``MAX_ALIAS_NODES``).
    """
    if len(text) > MAX_YAML_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        message = f"file larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB (the limit for a YAML file)"
        raise ScenarioErrors([ScenarioError(message, Span(file, 1, 1))])
    if "&" in text:  # no anchor, no alias: the nesting is checked while converting
        crossed = _limit_error(text, file)
        if crossed is not None:
            raise ScenarioErrors([crossed])
    with gc_paused():
        try:
            root = _compose(text, file)
        except yaml.MarkedYAMLError as exc:
            raise ScenarioErrors([_yaml_error(exc, file)]) from None
        except yaml.YAMLError as exc:
            raise ScenarioErrors([ScenarioError(f"invalid YAML: {exc}", Span(file, 1, 1))]) from None
        if root is None:
            return Node({}, Span(file, 1, 1), Span(file, 1, 1))
        errors: list[ScenarioError] = []
        constructor = _Loader("")
        node = _convert(root, _Source(file, text), constructor, errors)
    if errors:
        raise ScenarioErrors(errors)
    return node


# libyaml composes about ten times faster than PyYAML's pure-Python parser, with the same
# nodes and marks; its error messages are terser, so a file it rejects is parsed again by
# the pure-Python loader, whose messages are the ones users see (and docs/scenario.md shows).
_FAST_LOADER: type | None = getattr(yaml, "CSafeLoader", None)


def _compose(text: str, file: str) -> yaml.Node | None:
    if _FAST_LOADER is not None:
        try:
            node: yaml.Node | None = yaml.compose(text, Loader=_FAST_LOADER)
            return node
        except yaml.YAMLError as exc:
            if isinstance(exc, yaml.MarkedYAMLError) and exc.problem == _LIBYAML_TOO_DEEP and exc.problem_mark:
                raise ScenarioErrors([_too_deep_before(text, file, exc.problem_mark)]) from None
    try:
        return yaml.compose(text, Loader=_Loader)
    except RecursionError:
        # PyYAML's composer recurses per level: only nesting far past MAX_YAML_DEPTH gets here
        found = _limit_error(text, file, _Loader)
        raise ScenarioErrors([found or _too_deep(Span(file, 1, 1))]) from None


_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"  # libyaml's own limit, 1000 levels


def _too_deep_before(text: str, file: str, mark: yaml.Mark) -> ScenarioError:
    """The depth error for a file libyaml refused at ``mark`` for its 1000 levels.

    libyaml looks ahead for a key through the nested brackets and fails before its first
    event, and PyYAML's scanner takes seconds over the same lookahead; the text up to
    ``mark`` holds the collection too deep, and libyaml reads that in microseconds.
    """
    offset = 0
    for _ in range(mark.line):
        found = _LINE_BREAK.search(text, offset)
        offset = found.end() if found else len(text)
    return _limit_error(text[: offset + mark.column], file) or _too_deep(_span(file, mark))


def _event_span(file: str, event: yaml.Event) -> Span:
    mark = event.start_mark
    return Span(file, mark.line + 1, mark.column + 1) if mark is not None else Span(file, 1, 1)


def _too_deep(span: Span) -> ScenarioError:
    return ScenarioError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", span)


def _limit_error(text: str, file: str, loader: type | None = None) -> ScenarioError | None:
    """Where the document first crosses ``MAX_YAML_DEPTH`` or ``MAX_ALIAS_NODES``, or None.

    Read from the parser's events, the one place an alias still has its own position (the
    composed tree holds the aliased node itself). Each anchor remembers how many nodes and
    levels it spans, its own aliases expanded, so the count costs one step per event
    however much the aliases would expand. Invalid YAML stops the count quietly: composing
    the text reports it, with the loader's message.
    """
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) it expands to
    open_: list[list[Any]] = []  # per open collection: [anchor, nodes, levels]
    aliased = 0
    try:
        for event in yaml.parse(text, Loader=loader or _FAST_LOADER or _Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_) >= MAX_YAML_DEPTH:
                    return _too_deep(_event_span(file, event))
                open_.append([event.anchor, 1, 1])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, nodes, levels = open_.pop()
            elif isinstance(event, yaml.AliasEvent):
                # an unknown anchor (or one still open: `&a [*a]`) is the composer's to report
                anchor, (nodes, levels) = None, anchors.get(event.anchor or "", (1, 0))
                aliased += nodes
                if aliased > MAX_ALIAS_NODES:
                    message = f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)"
                    return ScenarioError(message, _event_span(file, event))
                if len(open_) + levels > MAX_YAML_DEPTH:
                    return _too_deep(_event_span(file, event))
            elif isinstance(event, yaml.ScalarEvent):
                anchor, nodes, levels = event.anchor, 1, 0
            else:  # stream and document events
                continue
            if anchor is not None:
                anchors[anchor] = (nodes, levels)
            if open_:
                parent = open_[-1]
                parent[1] += nodes
                parent[2] = max(parent[2], levels + 1)
    except yaml.YAMLError:
        pass
    return None


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML 1.1 line breaks, as PyYAML counts them


class _Source:
    """The file name and text being converted; its lines are split only when needed."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self._lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = _LINE_BREAK.split(self.text)
        return self._lines


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> ScenarioError:
    """One readable error for PyYAML's (problem, context) pair, at the problem's mark."""
    mark = exc.problem_mark or exc.context_mark
    span = _span(file, mark) if mark else Span(file, 1, 1)
    problem = exc.problem or "invalid YAML"
    if isinstance(exc, yaml.composer.ComposerError) and "another document" in problem:
        return ScenarioError("invalid YAML: a second document ('---'); a file holds one document", span)
    if "'\\t'" in problem:
        return ScenarioError("invalid YAML: a tab character here; indent with spaces (YAML does not allow tabs)", span)
    if exc.context:
        # PyYAML's context reads "while parsing a flow sequence"; say where that began
        ctx = exc.context_mark
        where = f" at line {ctx.line + 1}" if ctx is not None and mark is not None and ctx.line != mark.line else ""
        problem = f"{problem} ({exc.context}{where})"
    return ScenarioError(f"invalid YAML: {problem}", span)


def _block_text_start(node: yaml.ScalarNode, source: _Source) -> tuple[int, int] | None:
    """(0-based line, indentation) of the first content line of a block scalar (``|``, ``>``).

    The node's mark points at the indicator; the text starts on a later line, indented.
    """
    lines = source.lines
    for line in range(node.start_mark.line + 1, min(node.end_mark.line + 1, len(lines))):
        text = lines[line]
        if text.strip(" "):
            return line, len(text) - len(text.lstrip(" "))
    return None


_STR_TAG = "tag:yaml.org,2002:str"


def _short_tags(text: str) -> str:
    """``tag:yaml.org,2002:int`` -> ``!!int``, as the file spells it."""
    return text.replace("tag:yaml.org,2002:", "!!")


def _construct(node: yaml.Node, file: str, constructor: yaml.SafeLoader, errors: list[ScenarioError]) -> Any:
    """A scalar (or key) as Python data; a tag the safe loader refuses is an error, not a crash."""
    if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        return node.value  # most scalars: what construct_object would return, minus its bookkeeping
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        problem = _short_tags(exc.problem or "invalid value")
        errors.append(ScenarioError(f"invalid YAML: {problem}", _span(file, exc.problem_mark or node.start_mark)))
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!int xyz`
        tag = _short_tags(str(node.tag))
        errors.append(ScenarioError(f"invalid YAML: {tag} value {node.value!r}: {exc}", _span(file, node.start_mark)))
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _convert(
    node: yaml.Node,
    source: _Source,
    constructor: yaml.SafeLoader,
    errors: list[ScenarioError],
    active: frozenset[int] = frozenset(),
) -> Node:
    file = source.file
    start_mark, end_mark = node.start_mark, node.end_mark  # inlined _span: this runs per node
    span = Span(file, start_mark.line + 1, start_mark.column + 1)
    end = Span(file, end_mark.line + 1, end_mark.column + 1)
    if id(node) in active:  # an alias inside the collection it names: `&a [*a]`
        errors.append(ScenarioError("invalid YAML: recursive alias (a collection that contains itself)", span))
        return Node(None, span, end)
    if len(active) >= MAX_YAML_DEPTH and isinstance(node, yaml.CollectionNode):  # `active`: the enclosing ones
        errors.append(_too_deep(span))
        return Node(None, span, end)
    if isinstance(node, yaml.MappingNode):
        inner = active | {id(node)}
        try:
            constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            where = _span(file, exc.problem_mark or node.start_mark)
            errors.append(ScenarioError(f"invalid YAML: {exc.problem}", where))
            return Node({}, span, end)
        out: dict[str, Node] = {}
        key_spans: dict[str, Span] = {}
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            key_span = Span(file, key_mark.line + 1, key_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                errors.append(ScenarioError("invalid YAML: a key must be a plain value, not a collection", key_span))
                continue
            key = _construct(key_node, file, constructor, errors)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                errors.append(
                    ScenarioError(
                        f"duplicate key {key!r} (first defined at line {key_spans[key].line})",
                        key_span,
                    )
                )
                errors.append(
                    ScenarioError(
                        f"duplicate key {key!r} (defined again at line {key_span.line})",
                        key_spans[key],
                    )
                )
                continue
            key_spans[key] = key_span
            out[key] = _convert(value_node, source, constructor, errors, inner)
        return Node(out, span, end, key_spans)
    if isinstance(node, yaml.SequenceNode):
        inner = active | {id(node)}
        return Node([_convert(v, source, constructor, errors, inner) for v in node.value], span, end)
    assert isinstance(node, yaml.ScalarNode)
    value = _construct(node, file, constructor, errors)
    if not isinstance(value, str | int | float | bool | type(None)):
        value = node.value  # dates and other YAML types stay as written
    style = node.style or None  # libyaml says "" for plain scalars, PyYAML None
    if style in ("|", ">"):
        found = _block_text_start(node, source)
        if found is not None:
            line, indent = found
            start = Span(file, line + 1, indent + 1)
            return Node(value, span, end, style=style, text_start=start, line_indent=indent)
    return Node(value, span, end, style=style)
