"""sdg's LLM client library: usable on its own, it knows nothing of Hydra, Ray or MLflow."""

from sdg.client.base import AsyncLLMClient, Completion, LLMClient, Messages
from sdg.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    LLMClientError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from sdg.client.generation import GenerationConfig
from sdg.client.openai_client import AsyncOpenAIClient, ClientSettings, OpenAIClient
from sdg.client.retry import RetryPolicy
from sdg.client.stats import ClientStats

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncLLMClient",
    "AsyncOpenAIClient",
    "AuthenticationError",
    "BadRequestError",
    "ClientSettings",
    "ClientStats",
    "Completion",
    "GenerationConfig",
    "LLMClient",
    "LLMClientError",
    "MalformedResponseError",
    "Messages",
    "NotFoundError",
    "OpenAIClient",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
]
