import pytest
import yaml

from cdnctl.tenants.yaml_loader import VaultString, YamlInputError, load_tenant_yaml


def load(text: str | bytes, max_bytes: int = 65536):
    raw = text.encode() if isinstance(text, str) else text
    return load_tenant_yaml(raw, max_bytes=max_bytes)


def test_records_lines_of_keys():
    loaded = load("id: a\norigin:\n  url: x\ndomains:\n  - a.test\n")
    assert loaded.data == {"id": "a", "origin": {"url": "x"}, "domains": ["a.test"]}
    assert loaded.line_of(("origin", "url")) == 3
    assert loaded.line_of(("domains", 0)) == 5
    assert loaded.line_of(("origin", "url", "deeper")) == 3


def test_vault_tag_becomes_vault_string():
    loaded = load("password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n")
    assert isinstance(loaded.data["password"], VaultString)
    assert loaded.data["password"].startswith("$ANSIBLE_VAULT;1.1;AES256")


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [
        ("a: &x [1]\nb: *x\n", "anchors and aliases", 2),
        ("a: &x 1\nb: *x\n", "anchors and aliases", 2),
        ("a: 1\nb: *x\n", "YAML syntax error", 2),  # an alias with no anchor (no `&`)
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a'", 3),
        ("- 1\n- 2\n", "not a mapping", 1),
        ("just text\n", "not a mapping", 1),
        ("", "empty", None),
        ("# only a comment\n\n", "empty", None),
        ("a: !!python/object:os.system x\n", "unsupported YAML tag", 1),
        ("a: !!binary aGVsbG8=\n", "unsupported YAML tag", 1),
        ("a: [1, 2\n", "YAML syntax error", 2),
        ("a: 1\n---\nb: 2\n", "2 YAML documents", None),
        ("1: a\n", "not a plain string", 1),
        ("? [a]\n: 1\n", "not a plain string", 1),
    ],
)
def test_unsafe_or_broken_yaml_is_refused(text, reason, line):
    with pytest.raises(YamlInputError) as caught:
        load(text)
    assert reason in caught.value.reason
    assert caught.value.line == line
    assert caught.value.fix


def test_alias_bomb_is_refused_quickly():
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        layers.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    with pytest.raises(YamlInputError, match="anchors and aliases"):
        load("\n".join(layers) + "\n")


def test_size_limit():
    with pytest.raises(YamlInputError, match="over the limit of 1024"):
        load("a: " + "x" * 2000 + "\n", max_bytes=1024)


def test_non_utf8_is_refused():
    with pytest.raises(YamlInputError, match="not valid UTF-8"):
        load(b"a: \xff\xfe\n")


def test_utf8_bom_is_tolerated():
    assert load("\ufeffa: 1\n").data == {"a": 1}


def test_timestamps_stay_text():
    assert load("a: 2024-01-01\n").data == {"a": "2024-01-01"}


SCALARS = [
    "yes", "No", "on", "OFF", "y", "n", "true", "False", "null", "Null", "~", "", "0", "-1",
    "+3", "0x1f", "0o17", "017", "1_000", "1.5", ".5", "-.inf", ".NaN", "1e3", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "12:30:00", "<<", "=", "text", "https://a.test/x",
    "cdn.t1.test", "3s", "1h", "Tenant 7", "t0000001", "!x", "&x", "-", ".", "True love",
]  # fmt: skip


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_read_as_pyyaml_reads_them(scalar):
    """The memoised and first-character shortcuts of the loader's resolver give PyYAML's own
    values, plain, quoted and as keys."""
    for text in (f"a: {scalar}\n", f"a: '{scalar}'\n", f'a: "{scalar}"\n', f"a: [{scalar}]\n"):
        try:
            expected = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not isinstance(expected, dict) or not _plain(expected):
            continue
        assert load(text).data == expected, text


def _plain(value) -> bool:
    """Only values the loader accepts as they are (it keeps timestamps as text, refuses
    non-string keys)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float | bool) or value is None
