import pytest

from app.tracing import current_trace_id


@pytest.fixture(autouse=True)
def own_trace_context():
    """The proxy sets the trace id without resetting it (each connection's greenlet has its
    own context); a test calling it in the main thread must not leave it to later tests."""
    token = current_trace_id.set(None)
    yield
    current_trace_id.reset(token)
