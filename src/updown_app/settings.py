"""Typed settings: environment variables (``UPDOWN_*``, nested with ``__``) over a TOML config file.

Precedence, highest first: explicit keyword arguments, environment, the TOML file named by ``--config`` or
``UPDOWN_CONFIG``, then defaults. Secrets are ``SecretStr`` so they never print in reprs or logs.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


class LocalStorageSettings(BaseModel):
    path: Path | None = Field(default=None, description="Directory for objects; default <data_dir>/objects.")


class StorageSettings(BaseModel):
    backend: Literal["local"] = "local"
    local: LocalStorageSettings = LocalStorageSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPDOWN_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # Where the embedded defaults (SQLite, objects, generated TLS material and keys) live.
    data_dir: Path = Path("updown-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default SQLite in data_dir."
    )
    auto_migrate: bool = Field(default=True, description="Run Alembic migrations at start-up.")
    storage: StorageSettings = StorageSettings()

    # Hostnames decide public vs private downloads (compared without port, case-insensitively).
    public_host: str = "localhost"
    private_host: str = "private.localhost"

    # Signed requests.
    hmac_keys: dict[str, SecretStr] = Field(default_factory=dict)
    hmac_keys_file: Path | None = Field(
        default=None, description="JSON object {key_id: secret}; merged with hmac_keys."
    )
    max_clock_skew: int = Field(default=300, ge=1, description="Seconds a signed timestamp may be off.")

    # Limits.
    max_upload_size: int = Field(default=10 * GiB, ge=1)
    chunk_size: int = Field(default=1 * MiB, ge=4096, description="Bytes per read/write on transfers.")

    # Listening. Single node: HTTPS on ``port`` with TLS served by the app, plain HTTP on ``http_port`` answering
    # 308. Behind a proxy (tls = false): plain HTTP on ``port``, trusting X-Forwarded-Proto from trusted_proxies.
    bind: str = "127.0.0.1"
    port: int = 8443
    http_port: int | None = Field(default=8080, description="Plain-HTTP redirect listener (tls on); None: off.")
    workers: int = Field(default=1, ge=1, description="Worker processes (behind a proxy).")
    tls: bool = Field(default=True, description="False when a proxy terminates TLS in front of the app.")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    https_redirect_port: int | None = Field(
        default=None, description="Port in redirect targets; default port when tls is on, else 443."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses/CIDRs whose X-Forwarded-Proto/For are trusted."
    )

    # Operations.
    log_level: str = "info"
    access_log: bool = True

    _config_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = cls._config_file or (Path(os.environ["UPDOWN_CONFIG"]) if "UPDOWN_CONFIG" in os.environ else None)
        if config is not None:
            if not config.is_file():
                raise ValueError(f"config file not found: {config}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        cls._config_file = config_file
        try:
            return cls(**overrides)
        finally:
            cls._config_file = None

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("public_host", "private_host")
    @classmethod
    def _lower_host(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.public_host == self.private_host:
            raise ValueError("public_host and private_host must differ")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    # Derived values -------------------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'updown.db'}"

    @property
    def objects_path(self) -> Path:
        return self.storage.local.path or self.data_dir / "objects"

    @property
    def redirect_port(self) -> int:
        if self.https_redirect_port is not None:
            return self.https_redirect_port
        return self.port if self.tls else 443

    def signing_keys(self) -> dict[str, bytes]:
        """All active HMAC keys, by key id (config and key file merged)."""
        keys = {kid: secret.get_secret_value().encode() for kid, secret in self.hmac_keys.items()}
        if self.hmac_keys_file is not None and self.hmac_keys_file.exists():
            loaded = json.loads(self.hmac_keys_file.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("hmac_keys_file must hold a JSON object {key_id: secret}")
            keys.update({str(k): str(v).encode() for k, v in loaded.items()})
        return keys
