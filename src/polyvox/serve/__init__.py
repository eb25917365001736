"""The HTTP API and web page of polyvox (`polyvox serve`). `SearchEngine` (serve.engine) needs no web
libraries; `create_app` and `serve` import FastAPI when first used."""

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name == "ServeConfig":
        from polyvox.config import ServeConfig

        return ServeConfig
    if name in ("create_app", "serve"):
        from polyvox.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'polyvox.serve' has no attribute {name!r}")
