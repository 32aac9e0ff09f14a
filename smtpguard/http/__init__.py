"""The HTTP side: JSON API, webhook receivers, health and metrics (FastAPI in the relay's loop)."""
