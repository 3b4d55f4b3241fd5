"""The OpenAI-compatible gateway: `create_app(config, engine)` in `serve.app`, `openvlthinker serve` in `serve.cli`.

Importing `serve` is light; FastAPI, SQLAlchemy and the engines load in the modules that need them.
"""
