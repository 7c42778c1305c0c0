"""gunicorn's own messages through berth's logging, for every gunicorn process (web, proxy,
proxy-tls), so they are lines of the same format as every other berth line (JSON lines in
production, readable on a terminal)."""

from __future__ import annotations

from gunicorn.glogging import Logger

from app.logs import setup_logging
from app.settings import Settings

_LISTENING = "Listening at: %s (%s)"


def berth_logger(settings: Settings) -> type[Logger]:
    """A gunicorn `logger_class` logging with `settings`' level and format."""

    class BerthLogger(Logger):
        def setup(self, cfg):
            super().setup(cfg)
            setup_logging(settings.log_level, settings.log_format)
            for handler in list(self.error_log.handlers):
                self.error_log.removeHandler(handler)
            self.error_log.propagate = True
            scheme = "https" if cfg.is_ssl else "http"
            self._addresses = ",".join(f"{scheme}://{bind}" for bind in cfg.bind)

        def info(self, msg, *args, **kwargs):
            # With reuse_port, gunicorn 27 opens the listening sockets in each worker, not in
            # the arbiter, and logs "Listening at:  (pid)" with an empty address list.
            if msg == _LISTENING and args and not args[0]:
                args = (self._addresses, *args[1:])
            super().info(msg, *args, **kwargs)

    return BerthLogger
