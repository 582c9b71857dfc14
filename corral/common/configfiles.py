"""Building blocks shared by the config files of Corral's processes (shim, gateway).

Pure data: camelCase keys, unknown keys refused, immutable models, and secrets that are given
inline or read from a mounted file and never appear in a repr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator
from pydantic.alias_generators import to_camel


class ConfigModel(BaseModel):
    """Base of the config models: camelCase keys, no unknown keys, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretSource(ConfigModel):
    """A secret given inline (`value`, for local use) or read from a file (`file`)."""

    value: SecretStr | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.value is None) == (self.file is None):
            raise ValueError("give exactly one of `value` or `file`")
        return self

    def read(self) -> str:
        """The secret's value (from the file, stripped of a trailing newline).

        Raises ``OSError`` when the file cannot be read.
        """
        if self.value is not None:
            return self.value.get_secret_value()
        assert self.file is not None
        return self.file.read_text().rstrip("\n")
