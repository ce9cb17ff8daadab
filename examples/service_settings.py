"""The service's settings: its file roots, its token, its names, its limits, its stages.

Read from ``CRUCIBLE_SERVICE_*`` environment variables by the deployed app (pydantic-settings);
tests build ``ServiceSettings(...)`` directly (``ServiceSettings.defaults()`` ignores the
environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from crucible import Registry
from crucible.experiment.limits import DocumentLimits
from crucible.files import FileAccess
from crucible.stage import as_stage_spec
from examples.service_stages import STAGES as DEMO_STAGES

__all__ = ["DEFAULT_STAGES", "ENV_PREFIX", "SAFE_BUILTIN_STAGES", "ServiceSettings"]

ENV_PREFIX: Final = "CRUCIBLE_SERVICE_"
HERE: Final = Path(__file__).resolve().parent

#: Built-in stages a request may use: none imports code (``module:`` and import-path options
#: are refused) and the two that touch files stay inside the service's folders.
SAFE_BUILTIN_STAGES: Final = (
    "load_examples",
    "validate",
    "data_checks",
    "guardrails",
    "bench",
    "report",
)
DEFAULT_STAGES: Final = tuple(as_stage_spec(s).name for s in DEMO_STAGES) + SAFE_BUILTIN_STAGES


class ServiceSettings(BaseSettings):
    """What the service allows; each field is also ``CRUCIBLE_SERVICE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=HERE / "data", description="The only folder runs may read files from."
    )
    reports_dir: Path = Field(
        default=Path("reports"),
        description="The only folder runs may write into (relative: to the working directory); "
        "a relative `out_dir` starts here.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="When set, every endpoint but /health needs `Authorization: Bearer <token>`.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="The Host names requests may use: `name` (any port), `name:port` or `*` "
        "(comma-separated in the environment). Empty: 127.0.0.1, localhost and [::1] on the "
        "service's own port. Others get 421.",
    )
    public_url: str | None = Field(
        default=None,
        description="The service's address as clients see it (`https://crucible.example.com`), "
        "for the run links on spans; default: the address it listens on.",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="Larger bodies get 413.")
    stages: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_STAGES,
        description="The stages requests may use (comma-separated in the environment).",
    )
    max_stages: int = Field(
        default=100, ge=1, description="Stages in one request's pipeline; more get 422."
    )
    max_depth: int = Field(default=64, ge=1, description="Nesting allowed in a request body.")
    max_values: int = Field(default=1_000_000, ge=1, description="Values in a request body.")
    max_string_chars: int = Field(default=1024 * 1024, ge=1, description="Length of one string.")

    @field_validator("stages", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not host.strip() or any(c in host for c in "/ \t@?#"):
                raise ValueError(f"{host!r} is not a host name (name, name:port or *)")
        return value

    @field_validator("public_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"must be http(s)://host[:port][/path], got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("token", mode="after")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # CRUCIBLE_SERVICE_TOKEN= (empty) means no token, not an empty one
        return value

    @classmethod
    def defaults(cls, **values: Any) -> ServiceSettings:
        """Settings from ``values`` and the defaults only, whatever the environment holds."""
        return _ExplicitSettings(**values)

    def document_limits(self) -> DocumentLimits:
        """The loader limits applied to request bodies (depth, values, string length)."""
        return DocumentLimits(
            max_depth=self.max_depth,
            max_nodes=self.max_values,
            max_scalar_chars=self.max_string_chars,
        )

    def file_access(self, experiment_dir: Path | None = None) -> FileAccess:
        """Reads inside ``data_dir`` only, writes inside ``reports_dir`` only.

        Relative read paths start at the experiment file's folder (named experiments) or at
        ``data_dir`` (inline ones); relative write paths at ``reports_dir``.
        """
        data = self.data_dir.expanduser().resolve()
        reports = self.reports_dir.expanduser().resolve()
        return FileAccess(
            read_roots=(data,),
            write_roots=(reports,),
            read_base=experiment_dir.resolve() if experiment_dir is not None else data,
            write_base=reports,
            show_paths=False,  # a refusal names the path as the client gave it, not ours
            overwrite=False,  # another client's report is never replaced, not even in a race
        )

    def offered(self, source: Registry) -> tuple[Registry, list[str]]:
        """A registry of the allow-listed stages found in ``source``, and the names not found."""
        found = [name for name in self.stages if name in source]
        missing = [name for name in self.stages if name not in source]
        return Registry([source.get(name) for name in found]), missing


class _ExplicitSettings(ServiceSettings):
    """ServiceSettings that read only the values passed in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
