"""The fleet's topology (stack config `cdn:fleet`): validated here and nowhere else.

Pulumi's program (`pulumi/`) and the local lab (`cdnctl.lab`) both read it, so a lab is the
same topology a `pulumi up` of the local stack declares. `load_fleet_config` turns the raw
object from `Pulumi.<stack>.yaml` into a `FleetConfig` or raises `FleetConfigError` listing
every problem (path, value, why, how to fix) before anything is declared. pulumi/README.md
documents every key.
"""

from __future__ import annotations

import ipaddress
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cdnctl.fleet.inventory import ROLE_GROUPS as ROLES

CONFIG_KEY = "cdn:fleet"
DEFAULT_DOCKER_IMAGE = "localhost/cdnctl-systemd:bookworm"
DEFAULT_ADMIN_API_PORT = 9145
REGION_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*$")
# Ports the fleet itself listens on; the admin API must not take one of them.
RESERVED_PORTS = {22: "SSH", 53: "DNS", 80: "HTTP", 443: "HTTPS", 9100: "node exporter"}


class FleetConfigError(ValueError):
    """The stack config is invalid; the message lists every problem and its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid stack config {CONFIG_KEY!r}:\n{listing}")


def _problem(message: str) -> PydanticCustomError:
    # No context: the message is final text (pydantic would otherwise substitute {...}).
    return PydanticCustomError("cdn_fleet", message)


def _cidr(value: str) -> str:
    try:
        if "/" not in value:  # ip_network would silently read a bare address as a /32
            raise ValueError("no /prefix")
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise _problem(
            f"{value!r} is not a network in CIDR notation ({exc}); write address/prefix with "
            "the host bits zero, e.g. 192.0.2.0/24, 198.51.100.7/32 or 2001:db8::/32"
        ) from None


def _region_name(value: str) -> str:
    if not REGION_NAME.match(value):
        raise _problem(
            f"{value!r} is not a valid region name; it must match {REGION_NAME.pattern} "
            "(a lowercase letter, then up to 15 lowercase letters or digits, e.g. 'eu' or "
            "'us2') because it becomes part of host names and of the Ansible group "
            "region_<name>"
        )
    return value


def _count(value: int) -> int:
    if value < 0:
        raise _problem(
            f"count is {value}; counts cannot be negative - use 0 for no hosts of this role"
        )
    return value


def _domain(value: str) -> str:
    if not DOMAIN_NAME.match(value):
        raise _problem(
            f"{value!r} is not a lowercase DNS name; use the platform's domain, e.g. cdn.test"
        )
    return value


def _admin_cidr(value: str) -> str:
    if ipaddress.ip_network(value).prefixlen == 0:
        raise _problem(
            f"{value!r} would open SSH, the admin API and metrics to the whole internet; list "
            "the networks operators and the control node connect from instead"
        )
    return value


def _admin_api_port(value: int) -> int:
    if not 1 <= value <= 65535 or value in RESERVED_PORTS:
        taken = ", ".join(f"{port} ({what})" for port, what in sorted(RESERVED_PORTS.items()))
        raise _problem(
            f"api_port {value} is not usable; pick a TCP port in 1..65535 other than {taken} "
            f"(the default is {DEFAULT_ADMIN_API_PORT})"
        )
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
RegionName = Annotated[str, AfterValidator(_region_name)]
Count = Annotated[int, AfterValidator(_count)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleSpec(_Strict):
    """How many hosts of one role a region runs, and how big they are."""

    count: Count = 0
    image: str | None = Field(default=None, min_length=1, description="docker: container image")
    instance_type: str | None = Field(default=None, min_length=1, description="aws: EC2 type")


class RegionRoles(_Strict):
    edge: RoleSpec = RoleSpec()
    shield: RoleSpec = RoleSpec()
    dns: RoleSpec = RoleSpec()
    prometheus: RoleSpec = RoleSpec()
    grafana: RoleSpec = RoleSpec()

    def spec(self, role: str) -> RoleSpec:
        return getattr(self, role)


class AwsRegionSettings(_Strict):
    """Where an AWS-hosted region lives."""

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="e.g. eu-west-1")
    ami: str = Field(pattern=r"^ami-[0-9a-f]{8,17}$", description="Debian 12 AMI of that region")
    vpc_cidr: Cidr
    subnet_cidr: Cidr | None = None
    availability_zone: str | None = None

    @model_validator(mode="after")
    def _subnet_inside_vpc(self) -> AwsRegionSettings:
        vpc = ipaddress.ip_network(self.vpc_cidr)
        if vpc.version != 4:
            raise _problem(
                f"vpc_cidr {self.vpc_cidr!r} must be an IPv4 network (AWS assigns IPv6 blocks "
                "itself)"
            )
        if self.subnet_cidr is not None:
            subnet = ipaddress.ip_network(self.subnet_cidr)
            if subnet.version != 4 or not subnet.subnet_of(vpc):
                raise _problem(
                    f"subnet_cidr {self.subnet_cidr!r} is not inside vpc_cidr "
                    f"{self.vpc_cidr!r}; pick a block of the VPC or leave subnet_cidr out to use "
                    "the VPC's first /24"
                )
        return self

    @property
    def public_subnet_cidr(self) -> str:
        if self.subnet_cidr is not None:
            return self.subnet_cidr
        vpc = ipaddress.ip_network(self.vpc_cidr)
        return str(next(vpc.subnets(new_prefix=24)) if vpc.prefixlen < 24 else vpc)


class RegionConfig(_Strict):
    name: RegionName
    client_networks: list[Cidr] = Field(
        default_factory=list, description="client CIDRs GeoDNS sends to this region"
    )
    roles: RegionRoles
    aws: AwsRegionSettings | None = None

    @model_validator(mode="after")
    def _dns_serves_edges(self) -> RegionConfig:
        if self.roles.edge.count > 0 and self.roles.dns.count == 0:
            raise _problem(
                f"roles.dns.count is 0 but roles.edge.count is {self.roles.edge.count}: without "
                f"a DNS host GeoDNS cannot send clients to the edges of region {self.name!r}; "
                "set roles.dns.count to at least 1 (2 for redundancy)"
            )
        return self


class DockerNetworkSettings(_Strict):
    name: str = Field(default="cdn-fleet", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    subnet: Cidr = "10.90.0.0/24"


class DockerSettings(_Strict):
    """Local fleet: one systemd container per host on podman's Docker-compatible API."""

    image: str = Field(default=DEFAULT_DOCKER_IMAGE, min_length=1)
    network: DockerNetworkSettings = DockerNetworkSettings()


class AwsSettings(_Strict):
    instance_type: str = Field(default="t3.small", min_length=1)


class ProviderConfig(_Strict):
    kind: Literal["docker", "aws"]
    docker: DockerSettings | None = None
    aws: AwsSettings | None = None

    @model_validator(mode="after")
    def _settings_match_kind(self) -> ProviderConfig:
        other = "aws" if self.kind == "docker" else "docker"
        if getattr(self, other) is not None:
            raise _problem(
                f"provider.{other} is set but provider.kind is {self.kind!r}; remove "
                f"provider.{other} or change provider.kind"
            )
        return self

    @property
    def docker_settings(self) -> DockerSettings:
        return self.docker or DockerSettings()

    @property
    def aws_settings(self) -> AwsSettings:
        return self.aws or AwsSettings()


class AdminAccess(_Strict):
    cidrs: list[Annotated[Cidr, AfterValidator(_admin_cidr)]] = Field(min_length=1)
    api_port: Annotated[int, AfterValidator(_admin_api_port)] = DEFAULT_ADMIN_API_PORT
    ssh_user: str = Field(default="admin", pattern=r"^[a-z_][a-z0-9_-]*$")
    ssh_public_key: str | None = Field(default=None, pattern=r"^(ssh|ecdsa)-[a-z0-9-]+ \S+")


# Fixed host addresses on the docker provider's network: `pulumi up` of a local stack and
# the lab (cdnctl.lab) give every host the same address, derived from its place in the
# topology, so the inventory exists before the containers do. In the subnet: offsets 2-15
# for lab-only hosts (origins, ACME server), then one block per region in config order,
# and a fixed range per role inside a block (start, size).
FIRST_REGION_OFFSET = 16
REGION_BLOCK = 32
ROLE_SLOTS = {
    "edge": (0, 16),
    "shield": (16, 8),
    "dns": (24, 4),
    "prometheus": (28, 2),
    "grafana": (30, 2),
}


@dataclass(frozen=True)
class HostSpec:
    """One host the fleet runs, as the config asks for it."""

    name: str  # `<region>-<role>-<number>`: inventory host name, container or instance name
    role: str
    region: str
    number: int  # 1-based within the role and region
    size: str  # docker: image; aws: instance type


class FleetConfig(_Strict):
    domain: Annotated[str, AfterValidator(_domain)]
    admin: AdminAccess
    provider: ProviderConfig
    regions: list[RegionConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        seen: dict[str, int] = {}
        for index, region in enumerate(self.regions):
            if region.name in seen:
                raise _problem(
                    f"regions[{index}].name {region.name!r} is already used by "
                    f"regions[{seen[region.name]}]; region names must be unique - rename one"
                )
            seen[region.name] = index
        if self.provider.kind == "aws":
            self._check_aws()
        else:
            self._check_docker()
        return self

    def _check_aws(self) -> None:
        if self.admin.ssh_public_key is None:
            raise _problem(
                "admin.ssh_public_key is missing; provider.kind 'aws' needs the public key "
                "Ansible logs in with (e.g. the contents of ~/.ssh/id_ed25519.pub)"
            )
        for index, region in enumerate(self.regions):
            if region.aws is None:
                raise _problem(
                    f"regions[{index}] ({region.name!r}) has no 'aws' settings; provider.kind "
                    "'aws' needs region, ami and vpc_cidr for every region"
                )
            self._forbid_role_field(index, region, "image", "aws")

    def _check_docker(self) -> None:
        subnet = ipaddress.ip_network(self.provider.docker_settings.network.subnet)
        blocks = (subnet.num_addresses - FIRST_REGION_OFFSET - 1) // REGION_BLOCK
        if len(self.regions) > blocks:
            raise _problem(
                f"provider.docker.network.subnet {subnet} has addresses for {blocks} region(s) "
                f"({REGION_BLOCK} each after the first {FIRST_REGION_OFFSET}), not "
                f"{len(self.regions)}; use a larger subnet, e.g. a /22"
            )
        for index, region in enumerate(self.regions):
            for role, (_, size) in ROLE_SLOTS.items():
                if region.roles.spec(role).count > size:
                    raise _problem(
                        f"regions[{index}] ({region.name!r}).roles.{role}.count is "
                        f"{region.roles.spec(role).count}; a local (docker) region has "
                        f"addresses for {size} {role} host(s) at most"
                    )
        for index, region in enumerate(self.regions):
            if region.aws is not None:
                raise _problem(
                    f"regions[{index}] ({region.name!r}) has 'aws' settings but provider.kind is "
                    "'docker'; remove them or change provider.kind"
                )
            self._forbid_role_field(index, region, "instance_type", "docker")

    @staticmethod
    def _forbid_role_field(index: int, region: RegionConfig, field: str, kind: str) -> None:
        for role in ROLES:
            if getattr(region.roles.spec(role), field) is not None:
                size = "image" if kind == "docker" else "instance_type"
                raise _problem(
                    f"regions[{index}] ({region.name!r}).roles.{role}.{field} does not apply to "
                    f"provider.kind {kind!r}; size {kind} hosts with {size}"
                )

    def inventory_vars(self) -> dict[str, Any]:
        """Platform settings every play needs (the inventory's `all` group variables)."""
        return {
            "cdn_domain": self.domain,
            "cdn_admin_api_port": self.admin.api_port,
            "cdn_admin_cidrs": list(self.admin.cidrs),
            "cdn_regions": {
                region.name: {"client_networks": list(region.client_networks)}
                for region in self.regions
            },
        }

    def subnet_address(self, offset: int) -> str:
        """The address `offset` into the docker network's subnet."""
        subnet = ipaddress.ip_network(self.provider.docker_settings.network.subnet)
        return str(subnet.network_address + offset)

    def host_address(self, spec: HostSpec) -> str:
        """A docker host's fixed address (see ROLE_SLOTS)."""
        region = [r.name for r in self.regions].index(spec.region)
        start, _ = ROLE_SLOTS[spec.role]
        offset = FIRST_REGION_OFFSET + REGION_BLOCK * region + start + spec.number - 1
        return self.subnet_address(offset)

    def host_specs(self, region: RegionConfig) -> list[HostSpec]:
        """The hosts of `region`, role by role, numbered from 1 (`<region>-<role>-<n>`)."""
        specs = []
        for role in ROLES:
            spec = region.roles.spec(role)
            if self.provider.kind == "docker":
                size = spec.image or self.provider.docker_settings.image
            else:
                size = spec.instance_type or self.provider.aws_settings.instance_type
            specs.extend(
                HostSpec(
                    name=f"{region.name}-{role}-{number}",
                    role=role,
                    region=region.name,
                    number=number,
                    size=size,
                )
                for number in range(1, spec.count + 1)
            )
        return specs


def load_fleet_config(raw: Any) -> FleetConfig:
    """Validate the raw `cdn:fleet` object; raise FleetConfigError naming every problem."""
    if not isinstance(raw, dict):
        raise FleetConfigError(
            [
                f"{CONFIG_KEY}: expected a mapping with domain, admin, provider and regions, got "
                f"{type(raw).__name__}"
            ]
        )
    try:
        return FleetConfig.model_validate(raw)
    except ValidationError as exc:
        raise FleetConfigError([_describe(error, raw) for error in exc.errors()]) from None


def _describe(error: Any, raw: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_model_at(loc[:-1]).model_fields))
        return (
            f"{_path(loc, raw)}: unknown key {loc[-1]!r}; fix its spelling or remove it "
            f"(allowed here: {allowed})"
        )
    if error["type"] == "missing":
        return f"{_path(loc, raw)}: required key is missing; add it (see pulumi/README.md)"
    if error["type"] == "cdn_fleet":
        return f"{_path(loc, raw)}: {error['msg']}"
    return f"{_path(loc, raw)}: {error['msg']} (got {error['input']!r})"


def _path(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """`cdn:fleet.regions[1] ('us').roles` for loc ('regions', 1, 'roles')."""
    path = CONFIG_KEY
    node: Any = raw
    for part in loc:
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None
        if isinstance(part, int):
            path += f"[{part}]"
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                path += f" ({node['name']!r})"
        else:
            path += f".{part}"
    return path


def _has(node: dict[str, Any] | list[Any], part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model class validating the object at `loc` (to list the keys it allows)."""
    model: type[BaseModel] = FleetConfig
    annotation: Any = model
    for part in loc:
        if isinstance(part, str):
            annotation = model.model_fields[part].annotation
        model = _inner_model(annotation)
    return model


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / Annotated[...] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType, Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None
