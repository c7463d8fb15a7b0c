"""sdg: synthetic-data-generation experiments against OpenAI-compatible LLM endpoints."""

__version__ = "0.1.0"
