"""A thin, typed wrapper over the Docker SDK: the part of a container engine berth uses.

Engine errors become berth errors here and nowhere else:

    engine unreachable, timed out       -> EngineUnavailable, an Unavailable naming the address
    no such container / image           -> NotFound
    name already in use                 -> Conflict
    request refused as invalid (400)    -> ValidationError
    any other engine failure            -> EngineError (e.g. the runtime could not start it)

The SDK client is created on first use, not at construction, so building an Engine opens no
connection and a process starts even while the engine is down.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
import requests

from app.errors import BerthError, Conflict, NotFound, Unavailable, ValidationError


class EngineError(BerthError):
    """The engine answered but failed the operation."""

    title = "Container engine error"


class EngineUnavailable(Unavailable):
    """The engine did not answer (as opposed to Redis, the other thing that can be down)."""


@dataclass(frozen=True)
class ContainerSpec:
    """What to run: one container of a service, its port published on `bind`:`host_port`."""

    name: str
    image: str
    internal_port: int
    host_port: int
    labels: Mapping[str, str]
    bind: str = "127.0.0.1"
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int = 0
    cpus: float = 0.0


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    labels: Mapping[str, str]
    exit_code: int = 0
    oom_killed: bool = False
    started_at: str = ""
    finished_at: str = ""
    error: str = ""  # the engine's message when it could not start the container

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_inspect(cls, attrs: dict) -> Container:
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        return cls(id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"),
                   image=config.get("Image", ""), state=state.get("Status", ""),
                   labels=config.get("Labels") or {}, exit_code=state.get("ExitCode", 0),
                   oom_killed=bool(state.get("OOMKilled")),
                   started_at=state.get("StartedAt", ""),
                   finished_at=state.get("FinishedAt", ""), error=state.get("Error", ""))

    def public(self) -> dict:
        return {"id": self.id[:12], "name": self.name, "image": self.image, "state": self.state,
                "exit_code": self.exit_code, "oom_killed": self.oom_killed,
                "started_at": self.started_at, "finished_at": self.finished_at}


@dataclass(frozen=True)
class EngineEvent:
    action: str  # create, start, die, kill, oom, stop, destroy...
    container_id: str
    labels: Mapping[str, str]
    exit_code: int | None = None


class EventStream:
    """Blocking iterator of container events; `close()` (from any thread) ends it."""

    def __init__(self, stream, translate):
        self._stream = stream
        self._translate = translate

    def __iter__(self) -> Iterator[EngineEvent]:
        with self._translate("following the event stream"):
            for raw in self._stream:
                if raw.get("Type") != "container":
                    continue
                actor = raw.get("Actor") or {}
                attributes = dict(actor.get("Attributes") or {})
                code = attributes.pop("exitCode", None)
                yield EngineEvent(action=raw.get("Action") or raw.get("status", ""),
                                  container_id=actor.get("ID") or raw.get("id", ""),
                                  labels=attributes,
                                  exit_code=int(code) if code is not None else None)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a socket another thread reads from
            self._stream.close()


class Engine:
    def __init__(self, base_url: str, *, timeout: float = 30.0, pull: str = "missing"):
        self.base_url = base_url
        self.timeout = timeout
        self.pull = pull
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    # -- connection and error translation -----------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock, self._translate("connecting"):
                if self._client is None:
                    self._client = docker.DockerClient(base_url=self.base_url, version="auto",
                                                       timeout=self.timeout)
        return self._client

    @contextlib.contextmanager
    def _translate(self, doing: str):
        try:
            yield
        except docker.errors.NotFound as ex:
            raise NotFound(f"{doing}: {_explain(ex)}") from ex
        except docker.errors.APIError as ex:
            if ex.status_code == 409:
                raise Conflict(f"{doing}: {_explain(ex)}") from ex
            if ex.status_code == 400:
                raise ValidationError(f"{doing}: {_explain(ex)}") from ex
            raise EngineError(f"{doing}: {_explain(ex)}") from ex
        except (docker.errors.DockerException, requests.RequestException, OSError) as ex:
            raise EngineUnavailable(f"the container engine at {self.base_url} is unreachable "
                              f"({doing}): {ex}") from ex

    def ping(self) -> None:
        """Unavailable unless the engine answers."""
        with self._translate("ping"):
            self.client.ping()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- containers -----------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container; Conflict when the name is taken."""
        port = f"{spec.internal_port}/tcp"
        host_config = self.client.api.create_host_config(
            port_bindings={port: (spec.bind, spec.host_port)},
            mem_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            # berth restarts containers itself, after its own health check and route update.
            restart_policy={"Name": "no"},
            log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        )
        kwargs = dict(image=spec.image, name=spec.name, command=list(spec.command) or None,
                      environment=dict(spec.env), labels=dict(spec.labels),
                      ports=[spec.internal_port],
                      host_config=host_config, detach=True)
        with self._translate(f"creating container {spec.name}"):
            try:
                created = self.client.api.create_container(**kwargs)
            except docker.errors.ImageNotFound:
                self._pull(spec.image)
                created = self.client.api.create_container(**kwargs)
        return self.inspect(created["Id"])

    def _pull(self, image: str) -> None:
        if self.pull == "never":
            raise NotFound(f"image {image} is not on the engine and pulling is disabled "
                           "(BERTH_IMAGE_PULL=never)")
        with self._translate(f"pulling {image}"):
            self.client.images.pull(image)

    def start(self, container_id: str) -> None:
        with self._translate(f"starting container {container_id[:12]}"):
            self.client.api.start(container_id)

    def run(self, spec: ContainerSpec) -> Container:
        container = self.create(spec)
        self.start(container.id)
        return self.inspect(container.id)

    def inspect(self, container_id: str) -> Container:
        with self._translate(f"inspecting container {container_id[:12]}"):
            return Container.from_inspect(self.client.api.inspect_container(container_id))

    def find(self, container_id: str) -> Container | None:
        try:
            return self.inspect(container_id)
        except NotFound:
            return None

    def stop(self, container_id: str, timeout_s: int = 10) -> None:
        with (self._translate(f"stopping container {container_id[:12]}"),
              contextlib.suppress(docker.errors.NotFound)):
            self.client.api.stop(container_id, timeout=timeout_s)

    def restart(self, container_id: str, timeout_s: int = 10) -> None:
        with self._translate(f"restarting container {container_id[:12]}"):
            self.client.api.restart(container_id, timeout=timeout_s)

    def remove(self, container_id: str) -> None:
        """Force-remove (kills a running one); a container already gone is not an error."""
        with self._translate(f"removing container {container_id[:12]}"):
            try:
                self.client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as ex:
                if ex.status_code != 409 or "already in progress" not in _explain(ex):
                    raise

    def list(self, labels: Mapping[str, str | None]) -> list[Container]:
        """Every container (running or not) carrying all `labels` (None: any value)."""
        selector = [key if value is None else f"{key}={value}" for key, value in labels.items()]
        with self._translate("listing containers"):
            summaries = self.client.api.containers(all=True, filters={"label": selector})
        found = [self.find(summary["Id"]) for summary in summaries]
        return sorted((c for c in found if c is not None), key=lambda c: c.name)

    def logs(self, container_id: str, *, tail: int | None = 100, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        """stdout and stderr interleaved, as the engine stores them; with `follow`, a
        blocking iterator that ends when the container stops (or when closed)."""
        with self._translate(f"reading the logs of {container_id[:12]}"):
            output = self.client.api.logs(container_id, stream=follow, follow=follow,
                                          tail="all" if tail is None else tail,
                                          timestamps=timestamps)
        if not follow:
            return iter([output] if output else [])
        return output

    def events(self, labels: Mapping[str, str | None],
               actions: tuple[str, ...] = ("die", "destroy", "oom")) -> EventStream:
        selector = [key if value is None else f"{key}={value}" for key, value in labels.items()]
        with self._translate("subscribing to events"):
            stream = self.client.events(decode=True, filters={
                "type": "container", "label": selector, "event": list(actions)})
        return EventStream(stream, self._translate)


def _explain(ex: docker.errors.APIError) -> str:
    return str(ex.explanation or ex)
