"""Safe, strict YAML loading for tenant files.

Stricter than `yaml.safe_load`: UTF-8 only, a size limit, no anchors/aliases (no alias
bombs), no duplicate keys, no tags but `!vault` (ansible-vault strings), a mapping at the
top. It also records the line of every mapping key so errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from cdnctl.tenants.problems import InputError

try:  # libyaml's parser is ~10x faster; PyYAML wheels ship it
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - only on PyYAML builds without libyaml
    _BaseLoader = yaml.SafeLoader

_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}
_RESOLVED_MAX = 4096  # keys and common values; a file's own names and URLs need no memo


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader with the implicit tag of a scalar memoised: PyYAML resolves every
    scalar (keys too) in Python against a list of regular expressions, a sixth of the
    time a tenant file took to check. The tag depends only on (value, implicit) when no
    path resolver is registered (none is)."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
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


@dataclass
class LoadedYaml:
    data: dict[str, Any]
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """Line of the deepest recorded prefix of `loc` (1-based)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
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
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise YamlInputError("file is empty", "write the tenant's settings, or delete the file")
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        raise YamlInputError(
            f"YAML syntax error: {exc.problem}", "fix the YAML syntax at that line", line
        ) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"YAML error: {exc}", "fix the YAML syntax") from None
    if len(documents) != 1:
        raise YamlInputError(
            f"file holds {len(documents)} YAML documents", "keep exactly one tenant per file"
        )
    root = documents[0]
    if root is None or root.tag != _MAP or not isinstance(root, yaml.MappingNode):
        raise YamlInputError(
            "top level is not a mapping",
            "start the file with `id: <tenant-id>` and the other settings as keys",
            root.start_mark.line + 1 if root is not None else None,
        )
    loaded = LoadedYaml(data={})
    # an alias needs an anchor (`&name`): without a `&` anywhere, no node can come twice
    loaded.data = _build(root, (), loaded.lines, set() if "&" in text else None)
    return loaded


def _build(node: yaml.Node, loc: tuple, lines: dict, seen: set[int] | None) -> Any:
    # libyaml resolves an alias to the very node object of its anchor: meeting a node twice
    # means an alias, refused before it can expand (alias bombs stay O(size of file)).
    if seen is not None:
        if id(node) in seen:
            raise YamlInputError(
                "YAML anchors and aliases are not allowed",
                "write the value out in full (tenant files must be readable on their own)",
                lines.get(loc, node.start_mark.line + 1),  # the alias's place, not the anchor's
            )
        seen.add(id(node))
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
            child = (*loc, key)
            lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, lines, seen)
        return result
    if kind is _SEQUENCE_NODE:
        if node.tag != _SEQ:
            raise _bad_tag(node)
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, lines, seen))
        return items
    if node.tag == VAULT_TAG:
        return VaultString(node.value.strip())
    convert = _SCALARS.get(node.tag)
    if convert is None:
        raise _bad_tag(node)
    return convert(node)


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
