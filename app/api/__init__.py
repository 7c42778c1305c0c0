"""The management API: a Falcon WSGI app built by `create_api` (see app/api/app.py)."""

from app.api.app import create_api

__all__ = ["create_api"]
