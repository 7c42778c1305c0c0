"""The web process's gunicorn worker: gunicorn's gevent worker, answering request heads it
cannot parse (414, 431, 400) with the API's JSON error instead of an HTML page."""

from gunicorn.workers.ggevent import GeventWorker

from app.gunicorn_errors import ParseErrorAnswers


class WebWorker(ParseErrorAnswers, GeventWorker):
    pass

# gunicorn imports this module in the arbiter, before the worker monkey-patches: it must not
# import the app (app.api imports Redis and Dramatiq, which look at gevent's patches).
