"""The management API: a Falcon WSGI app built by `create_api` (see app/api/app.py).

`create_api` is imported on first use, not with the package: gunicorn imports the web
process's config (app/api/gunicorn_conf.py) in its arbiter, before the gevent worker
monkey-patches, and the app's imports (redis among them) drew gevent's MonkeyPatchWarning.
"""

__all__ = ["create_api"]


def __getattr__(name: str):
    if name == "create_api":
        from app.api.app import create_api

        return create_api
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
