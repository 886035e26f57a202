"""Safe, strict YAML loading for tenant files.

Stricter than `yaml.safe_load`: UTF-8 only, a size limit, no anchors/aliases (no alias
bombs), no duplicate keys, no tags but `!vault` (ansible-vault strings), a mapping at the
top. It also finds the line of every mapping key, when asked, so errors can point at it.
"""

from __future__ import annotations

import operator
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from cdnctl.tenants.problems import InputError

try:  # libyaml's parser is ~10x faster; PyYAML wheels ship it
    _BaseLoader: type = yaml.CSafeLoader
    _parser_init: Any = yaml.cyaml.CParser.__init__
except AttributeError:  # pragma: no cover - only on PyYAML builds without libyaml
    _BaseLoader, _parser_init = yaml.SafeLoader, None

_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}
_RESOLVED_MAX = 4096  # keys and common values; a file's own names and URLs need no memo


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader without path resolvers (none can be added), and so with the implicit
    tag of a scalar memoised: PyYAML resolves every scalar (keys too) in Python against a
    list of regular expressions, a sixth of the time a tenant file took to check; the tag
    depends only on (value, implicit) when no path resolver is registered."""

    # libyaml's composer calls these two around every node, to follow the node's path for
    # path resolvers. Without any they do nothing: C callables that take the same arguments
    # and do nothing stand in for them (a Python call each, per node: 7 % of a check).
    descend_resolver = staticmethod(operator.is_)  # (current_node, current_index): ignored
    ascend_resolver = staticmethod(tuple)  # (): ignored

    if _parser_init is not None:
        # libyaml's parser alone: the constructor's and the resolver's state (dicts and
        # lists, made per file) is never used, as nodes are built here (`_build`) and
        # resolved without path resolvers
        __init__ = _parser_init

    @classmethod
    def add_path_resolver(cls, *args: Any, **kwargs: Any) -> None:
        raise TypeError("tenant files are loaded without path resolvers")

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is not _SCALAR_NODE:
            return _MAP if kind is _MAPPING_NODE else _SEQ
        if not implicit[0] or (value and _FIRST is not None and value[0] not in _FIRST):
            return _STR  # quoted, or no implicit resolver starts with its first character
        key = (value, implicit)
        tag = _resolved(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_RESOLVED) < _RESOLVED_MAX:
                _RESOLVED[key] = tag
        return tag


_SCALAR_NODE, _MAPPING_NODE, _SEQUENCE_NODE = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
assert not _Loader.yaml_path_resolvers, "tenant files are loaded without path resolvers"
_resolved = _RESOLVED.get  # (bound once: resolve runs for every scalar of every file)
# the first characters PyYAML's implicit resolvers are filed under: a plain scalar starting
# with another is a string (None: some resolver is filed under every character)
_FIRST = (
    frozenset(key for key in _BaseLoader.yaml_implicit_resolvers if key)
    if None not in _BaseLoader.yaml_implicit_resolvers
    else None
)


VAULT_TAG = "!vault"
VAULT_HEADER = "$ANSIBLE_VAULT;"
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_constructor = SafeConstructor()
_SCALARS = {
    _STR: lambda node: node.value,
    "tag:yaml.org,2002:int": _constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _constructor.construct_yaml_float,
    "tag:yaml.org,2002:bool": _constructor.construct_yaml_bool,
    "tag:yaml.org,2002:null": _constructor.construct_yaml_null,
    # a timestamp-looking value stays the text the user wrote
    "tag:yaml.org,2002:timestamp": lambda node: node.value,
}


class VaultString(str):
    """An ansible-vault encrypted string (`!vault |` in YAML). Never decrypted here."""


class LoadedYaml:
    """A tenant file's data, and the lines of its keys (found only when asked: a valid
    file never needs them, and recording them while building took a tenth of a check)."""

    __slots__ = ("_lines", "_root", "data")

    def __init__(self, data: dict[str, Any], root: yaml.Node | None = None) -> None:
        self.data = data
        self._root = root
        self._lines: dict[tuple[str | int, ...], int] | None = None

    @property
    def lines(self) -> dict[tuple[str | int, ...], int]:
        """Location (keys and list indexes) -> line (1-based) of every key and list item."""
        if self._lines is None:
            self._lines = {}
            if self._root is not None:
                _record_lines(self._root, (), self._lines)
        return self._lines

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """Line of the deepest recorded prefix of `loc` (1-based)."""
        lines = self.lines
        for end in range(len(loc), 0, -1):
            line = lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


class YamlInputError(InputError):
    def __init__(self, reason: str, fix: str, line: int | None = None) -> None:
        super().__init__(reason, fix)
        self.line = line


def load_tenant_yaml(raw: bytes, *, max_bytes: int) -> LoadedYaml:
    """Parse one tenant file. Raises YamlInputError with reason, fix and line."""
    if len(raw) > max_bytes:
        raise YamlInputError(
            f"file is {len(raw)} bytes, over the limit of {max_bytes}",
            "a tenant file holds one tenant's settings; split it or raise "
            "max_file_bytes in the platform policy",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlInputError(
            f"not valid UTF-8 (byte {exc.start})", "save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise _empty_file()
    try:
        root = _single_node(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        raise YamlInputError(
            f"YAML syntax error: {exc.problem}", "fix the YAML syntax at that line", line
        ) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"YAML error: {exc}", "fix the YAML syntax") from None
    except _MoreDocuments as more:
        raise YamlInputError(
            f"file holds {more.count} YAML documents", "keep exactly one tenant per file"
        ) from None
    if root is None:  # no document: blank lines and comments only
        raise _empty_file()
    if root.tag != _MAP or not isinstance(root, yaml.MappingNode):
        raise YamlInputError(
            "top level is not a mapping",
            "start the file with `id: <tenant-id>` and the other settings as keys",
            root.start_mark.line + 1,
        )
    # an alias needs an anchor (`&name`): without a `&` anywhere, no node can come twice
    return LoadedYaml(_build(root, set() if "&" in text else None), root)


def _empty_file() -> YamlInputError:
    return YamlInputError("file is empty", "write the tenant's settings, or delete the file")


class _MoreDocuments(Exception):
    def __init__(self, count: int) -> None:
        self.count = count


def _single_node(text: str) -> yaml.Node | None:
    """The root node of the one document in `text` (None for none); _MoreDocuments with
    their count for several. (libyaml's single-document compose, not a generator and a
    list of documents per file.)"""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.composer.ComposerError as exc:
        if exc.problem != "but found another document":
            raise
    finally:
        loader.dispose()
    raise _MoreDocuments(len(list(yaml.compose_all(text, Loader=_Loader))))


def _build(node: yaml.Node, seen: set[int] | None) -> Any:
    # libyaml resolves an alias to the very node object of its anchor: meeting a node twice
    # means an alias, refused before it can expand (alias bombs stay O(size of file)).
    kind = type(node)  # libyaml makes these three exact classes
    if kind is _MAPPING_NODE:
        if node.tag != _MAP:
            raise _bad_tag(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is not _SCALAR_NODE or key_node.tag != _STR:
                raise YamlInputError(
                    f"mapping key {key_node.value!r} is not a plain string"
                    if isinstance(key_node, yaml.ScalarNode)
                    else "mapping key is not a plain string",
                    "use simple names as keys",
                    key_node.start_mark.line + 1,
                )
            key = key_node.value
            if key in result:
                raise YamlInputError(
                    f"duplicate key {key!r}",
                    "keep one occurrence of the key (YAML would silently keep the last)",
                    key_node.start_mark.line + 1,
                )
            if seen is not None:
                _first_time(value_node, seen, key_node.start_mark.line + 1)  # (the alias's line)
            if type(value_node) is _SCALAR_NODE and value_node.tag == _STR:
                result[key] = value_node.value  # (most values: no call for them)
            else:
                result[key] = _build(value_node, seen)
        return result
    if kind is _SEQUENCE_NODE:
        if node.tag != _SEQ:
            raise _bad_tag(node)
        if seen is None:
            return [_build(item, None) for item in node.value]
        items = []
        for item in node.value:
            _first_time(item, seen, item.start_mark.line + 1)
            items.append(_build(item, seen))
        return items
    if node.tag == VAULT_TAG:
        return VaultString(node.value.strip())
    convert = _SCALARS.get(node.tag)
    if convert is None:
        raise _bad_tag(node)
    return convert(node)


def _first_time(node: yaml.Node, seen: set[int], line: int) -> None:
    if id(node) in seen:
        raise YamlInputError(
            "YAML anchors and aliases are not allowed",
            "write the value out in full (tenant files must be readable on their own)",
            line,
        )
    seen.add(id(node))


def _record_lines(node: yaml.Node, loc: tuple, lines: dict) -> None:
    """The line of every key and list item under `node` (a tree `_build` accepted)."""
    if type(node) is _MAPPING_NODE:
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif type(node) is _SEQUENCE_NODE:
        for index, item in enumerate(node.value):
            child = (*loc, index)
            lines[child] = item.start_mark.line + 1
            _record_lines(item, child, lines)


def _bad_tag(node: yaml.Node) -> YamlInputError:
    return YamlInputError(
        f"unsupported YAML tag {node.tag!r}",
        "remove the tag; only `!vault` (ansible-vault strings) is accepted",
        node.start_mark.line + 1,
    )


def is_vault_string(value: object) -> bool:
    return isinstance(value, VaultString) or (
        isinstance(value, str) and value.lstrip().startswith(VAULT_HEADER)
    )
