"""Entry for `dramatiq workers.main`: builds the worker from the environment."""

from app.logs import setup_logging
from app.settings import load_or_exit
from workers.app import create_worker
from workers.stopping import coalesce_repeated_sigterm

settings = load_or_exit()
setup_logging(settings.log_level, settings.log_format)
deps = create_worker(settings)
coalesce_repeated_sigterm()
