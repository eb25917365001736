"""The HTTP API and web page of polyvox (`polyvox serve`)."""

from polyvox.config import ServeConfig
from polyvox.serve.app import create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
