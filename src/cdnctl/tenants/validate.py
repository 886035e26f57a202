"""The GitOps gate: every problem in a set of tenant files, each one actionable.

Two levels: `check_file` judges one file on its own (YAML safety, schema, id, SSRF,
secrets) and is pure, so its result can be cached by content; `check_fleet` judges the
files together (domains claimed twice, ids given twice).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from cdnctl.tenants.domains import find_conflicts, normalise_domain
from cdnctl.tenants.effective import effective_fragment
from cdnctl.tenants.model import TENANT_ID_PATTERN, Tenant
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.problems import REDACTED, InputError, Problem, field_path, show_value
from cdnctl.tenants.yaml_loader import LoadedYaml, YamlInputError, load_tenant_yaml

TENANT_SUFFIX = ".yaml"
_SECRET_FIELDS = frozenset({"password", "key"})


class FileResult(NamedTuple):
    """What one tenant file contributes: its id, claimed domains, compiled settings, problems.

    A NamedTuple: compiles build and read 100k+ of them.
    """

    file: str
    tenant_id: str | None = None
    domains: tuple[str, ...] = ()  # normalised, as written (for ownership checks)
    fragment: bytes | None = None  # canonical JSON of the effective tenant; None if invalid
    problems: tuple[Problem, ...] = ()
    digest: str | None = None  # the effective tenant's digest (see bundle.py)


class ValidationFailed(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in tenant files")
        self.problems = problems


def check_file(display: str, raw: bytes, policy: Policy) -> FileResult:
    """Judge one tenant file. Never raises for bad input: problems are returned."""
    stem = os.path.basename(display).removesuffix(TENANT_SUFFIX)  # (pathlib: 7% of a check)
    try:
        loaded = load_tenant_yaml(raw, max_bytes=policy.max_file_bytes)
    except YamlInputError as exc:
        return FileResult(
            display, problems=(Problem(display, "", exc.reason, exc.fix, line=exc.line),)
        )
    data = loaded.data
    tenant_id = data["id"] if isinstance(data.get("id"), str) else stem
    raw_domains = data.get("domains")
    domains = (
        tuple(normalise_domain(d) for d in raw_domains or () if isinstance(d, str))
        if isinstance(raw_domains, list)
        else ()
    )
    problems: list[Problem] = []
    _check_id(display, stem, data, loaded, problems)
    try:
        tenant = Tenant.model_validate(data, context={"policy": policy})
    except ValidationError as exc:
        problems.extend(_translate(display, exc, loaded))
    if problems:
        return FileResult(display, tenant_id, domains, None, tuple(problems))
    fragment, digest = effective_fragment(tenant)
    return FileResult(display, tenant_id, domains, fragment, (), digest)


def _check_id(display: str, stem: str, data: dict, loaded: LoadedYaml, out: list) -> None:
    tenant_id = data.get("id")
    if not isinstance(tenant_id, str):
        return  # the schema reports missing/wrong-typed ids
    if tenant_id != stem:
        out.append(
            Problem(
                display,
                "id",
                f"id does not match the file name {stem + TENANT_SUFFIX!r}",
                f"rename the file to {tenant_id + TENANT_SUFFIX!r} or set id: {stem}",
                show_value(tenant_id),
                loaded.line_of(("id",)),
            )
        )


def check_fleet(
    results: Sequence[FileResult], changed: Collection[str] = frozenset()
) -> list[Problem]:
    """Problems only visible across files: a domain or an id claimed twice.

    A conflict between a file in `changed` (what a commit or pull request adds or edits)
    and one outside it is reported on the changed file, naming the one that already owns
    the id or domain; otherwise on the file that sorts later.
    """
    problems: list[Problem] = []
    first_file: dict[str, str] = {}
    if changed:  # the unchanged files claim first (a stable sort keeps their order)
        results = sorted(results, key=lambda result: result.file in changed)
    for result in results:
        if result.tenant_id is None:
            continue
        other = first_file.setdefault(result.tenant_id, result.file)
        if other != result.file:
            problems.append(
                Problem(
                    result.file,
                    "id",
                    f"tenant id is also defined by {other}",
                    "keep one file per tenant id",
                    show_value(result.tenant_id),
                )
            )
    claims = (
        (domain, result.tenant_id or "", result.file, index)
        for result in results
        for index, domain in enumerate(result.domains)
    )
    for claim, owner, why in find_conflicts(claims):
        if claim.file not in changed and owner.file in changed:  # report it on the change
            claim, owner = owner, claim
            if why.startswith("wildcard"):
                why = f"the wildcard covers {owner.domain}"
        same = owner.tenant == claim.tenant and owner.file == claim.file
        problems.append(
            Problem(
                claim.file,
                f"domains[{claim.index}]",
                "domain listed twice in this file"
                if same
                else f"domain is already claimed by tenant {owner.tenant!r} in {owner.file} "
                f"({why})",
                "remove the duplicate"
                if same
                else "a host can belong to one tenant only: remove it here or there",
                show_value(claim.domain),
            )
        )
    return problems


# --- pydantic error -> Problem -------------------------------------------------------------


def _translate(display: str, exc: ValidationError, loaded: LoadedYaml) -> list[Problem]:
    problems: dict[tuple, Problem] = {}
    for error in exc.errors(include_url=False):
        loc = _field_loc(error["loc"], error["type"])
        reason, fix = _reason_and_fix(error, loc)
        value = error.get("input")
        is_secret = bool(loc) and loc[-1] in _SECRET_FIELDS
        shown = None
        if error["type"] != "missing":
            shown = REDACTED if is_secret else show_value(value)
        problem = Problem(display, field_path(loc), reason, fix, shown, loaded.line_of(loc) or None)
        problems.setdefault(loc, problem)  # one problem per field (unions report per branch)
    return sorted(problems.values(), key=lambda p: (p.line or 0, p.field))


def _field_loc(loc: tuple, error_type: str) -> tuple:
    """Drop pydantic's union-branch tags (`literal['all','ignore']`) from a location."""
    model: Any = Tenant
    kept: list = []
    for part in loc:
        if isinstance(part, int):
            kept.append(part)
            continue
        fields = _model_fields(model)
        if fields is None:
            break
        if part not in fields:
            if error_type == "extra_forbidden":
                kept.append(part)
            break
        kept.append(part)
        model = fields[part]
    return tuple(kept)


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    """The fields (name -> annotation) of the model inside an annotation, if any."""
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            return {name: info.annotation for name, info in current.model_fields.items()}
        origin = typing.get_origin(current)
        if origin in (typing.Union, types.UnionType, list, typing.Annotated):
            stack.extend(typing.get_args(current))
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    annotation: Any = Tenant
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = _model_fields(annotation)
        annotation = fields.get(part) if fields else None
    fields = _model_fields(annotation)
    return sorted(fields) if fields else []


def _reason_and_fix(error: dict, loc: tuple) -> tuple[str, str]:
    kind = error["type"]
    name = field_path(loc) or "the file"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InputError):
        return cause.reason, cause.fix
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "remove it"
        return f"unknown key {loc[-1]!r}", f"{hint} (allowed here: {', '.join(allowed)})"
    if kind == "missing":
        return "required field is missing", f"add {loc[-1]}: (see tenants/schema.json)"
    if kind == "string_pattern_mismatch" and loc == ("id",):
        return (
            "tenant id must be 1-63 lowercase letters, digits or '-', not starting or ending "
            "with '-'",
            f"use an id matching {TENANT_ID_PATTERN} and name the file <id>.yaml",
        )
    fixes = {
        "bool_type": "write true or false",
        "int_type": "write a whole number",
        "string_type": "write a string (quote it if YAML reads it as a number or boolean)",
        "list_type": "write a YAML list (- item)",
        "model_type": "write a mapping of keys",
        "dict_type": "write a mapping of keys",
        "too_short": "add at least one item",
        "too_long": "remove items",
        "greater_than_equal": "use a larger value",
        "less_than_equal": "use a smaller value",
        "literal_error": "use one of the listed values",
        "string_pattern_mismatch": "use only the allowed characters",
        "string_too_long": "shorten it",
        "string_too_short": "give it a value",
    }
    msg = error["msg"].removeprefix("Value error, ")
    return msg, fixes.get(kind, f"see the description of {name} in tenants/schema.json")
