"""A supervisord extension that keeps each `[fcgi-program:x]` listening socket open for as
long as supervisord runs, so a proxy's port never refuses a connection while its gunicorn
arbiter is restarted: connections wait in the socket's backlog and are answered late.

supervisord creates an fcgi-program's socket when its first process starts and passes it as
fd 0; it closes the socket when the last of the program's processes exits (supervisor 4.3,
`supervisor/socket_manager.py`: the socket is reference-counted by the processes holding
it). With one process per program, a SIGKILLed arbiter would take the socket with it and the
port would refuse connections until the new arbiter started. This holds one more reference
per fcgi-program group, taken through the group's `socket_manager` (supervisor's own
attribute, not a documented API: the version it relies on is the one pinned in
requirements.txt, and `tests/test_supervisor_sockets.py` checks the behaviour).

A reference is dropped when its group is removed (`supervisorctl update`) and when
supervisord stops or reloads, so the socket then closes with the last process, as
supervisord would close it.

It is loaded as an RPC interface (the only hook supervisord offers to run code of ours in its
own process), from scripts/supervisor/supervisord.conf:

    [rpcinterface:berth]
    supervisor.rpcinterface_factory = app.supervisor_sockets:make_holder

and answers `berth.heldSockets()` over supervisord's XML-RPC socket: the URLs it holds.
"""

from __future__ import annotations

from supervisor import events


class SocketHolder:
    """The RPC namespace `berth`: holds the fcgi-program sockets of supervisord's groups."""

    def __init__(self, supervisord):
        self._supervisord = supervisord
        # group name -> (its socket's URL, supervisor's reference to the socket)
        self._held: dict[str, tuple[str, object]] = {}
        for name in supervisord.process_groups:
            self._hold(name)
        events.subscribe(events.ProcessGroupAddedEvent, self._on_added)
        events.subscribe(events.ProcessGroupRemovedEvent, self._on_removed)
        events.subscribe(events.SupervisorStoppingEvent, self._on_stopping)

    def _hold(self, name: str) -> None:
        manager = getattr(self._supervisord.process_groups.get(name), "socket_manager", None)
        if manager is not None and name not in self._held:
            self._held[name] = (manager.config().url, manager.get_socket())

    def _on_added(self, event) -> None:
        self._hold(event.group)

    def _on_removed(self, event) -> None:
        self._held.pop(event.group, None)

    def _on_stopping(self, _event) -> None:
        self._held.clear()

    def heldSockets(self) -> list[str]:  # noqa: N802 - XML-RPC method names are camelCase
        """The URLs of the sockets held open, e.g. tcp://127.0.0.1:8080."""
        return sorted(url for url, _ref in self._held.values())


def make_holder(supervisord, **_config) -> SocketHolder:
    """supervisord's rpcinterface_factory: called once the process groups exist."""
    return SocketHolder(supervisord)
