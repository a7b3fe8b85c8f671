"""The [providers] table: every host's keys and the table base all config tables share.

It lives in the providers package, importing nothing from the rest of the bot, so a host module
reads its own settings without reaching back into `bot.runtime.config` (which imports the hosts to check
`providers.order`): the settings flow one way, from here out to the config loader.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticKnownError

HostName = Literal["runflow", "fal", "eachlabs", "openai"]
KNOWN_HOSTS: tuple[HostName, ...] = ("runflow", "fal", "eachlabs", "openai")


def holds_secret(annotation: Any) -> bool:
    """Whether a value of this type is, or is a table holding, a secret."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(holds_secret(field.annotation) for field in annotation.model_fields.values())
    return any(holds_secret(arg) for arg in get_args(annotation))


class Section(BaseModel):
    """A config table: unknown keys are errors, so a typo never silently does nothing.

    Inputs are kept out of the text of validation errors, so no secret reaches a log that way.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_secret_is_missing(cls, value: Any, info: ValidationInfo) -> Any:
        # A blank secret is config.example.toml's placeholder never filled in: it counts as unset,
        # so the owner hears about it now rather than from a failed login or a host's 401.
        field = cls.model_fields[info.field_name or ""]
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not (isinstance(text, str) and not text.strip() and holds_secret(field.annotation)):
            return value
        if field.is_required():
            raise PydanticKnownError("missing")
        return None


def url_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError("must be a URL starting with http(s):// or ws(s)://")
    return value.rstrip("/")


class HostSettings(Section):
    """Keys every edit host has; subclasses set each host's own defaults."""

    api_key: SecretStr | None = None
    base_url: str
    callback_secret: SecretStr | None = None
    model: str
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    request_timeout: Annotated[float, Field(gt=0)] = 60.0
    # Owner-side USD per output image by quality, used where the host does not report cost.
    usd_per_image: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.009, "medium": 0.034, "high": 0.133}
    )

    _urls = field_validator("base_url")(url_or_none)


class RunflowSettings(HostSettings):
    base_url: str = "https://api.runflow.io"
    model: str = "openai/gpt-image-2/edit"


class FalSettings(HostSettings):
    base_url: str = "https://queue.fal.run"
    model: str = "openai/gpt-image-2/edit"


class EachlabsSettings(HostSettings):
    base_url: str = "https://api.eachlabs.ai"
    model: str = "gpt-image-v2-edit"


class TokenPrices(Section):
    """USD per million tokens (so micro-USD per token), what a token-priced host bills.

    The defaults are gpt-image-2's published prices: text in $5, image in $8, text out $10,
    image out $30. Cached input ($1.25 text, $2 image) is left out because the Images API's
    `usage` does not say which tokens were cached, so every input token is priced uncached.
    """

    text_in: Annotated[float, Field(ge=0)] = 5.0
    image_in: Annotated[float, Field(ge=0)] = 8.0
    text_out: Annotated[float, Field(ge=0)] = 10.0
    image_out: Annotated[float, Field(ge=0)] = 30.0


class OpenAISettings(HostSettings):
    base_url: str = "https://api.openai.com"
    model: str = "gpt-image-2"
    # What the edit cost, from the reply's token counts, for the owner's spend and money cap.
    token_prices: TokenPrices = Field(default_factory=TokenPrices)
    # One synchronous request carries the whole edit, and high quality can take minutes.
    request_timeout: Annotated[float, Field(gt=0)] = 300.0


class ProvidersSettings(Section):
    order: list[HostName] = Field(default_factory=lambda: [KNOWN_HOSTS[0]], min_length=1)
    runflow: RunflowSettings = Field(default_factory=RunflowSettings)
    fal: FalSettings = Field(default_factory=FalSettings)
    eachlabs: EachlabsSettings = Field(default_factory=EachlabsSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    poll_interval: Annotated[float, Field(gt=0)] = 2.0
    poll_interval_max: Annotated[float, Field(gt=0)] = 10.0
    deadline: Annotated[float, Field(gt=0)] = 600.0
