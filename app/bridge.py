"""Linux bridges for a private container engine (root only), made without iproute2, which
docker.io does not depend on: a dockerd given `--bridge NAME` takes the bridge's address as
its default network's gateway, so each private engine gets a bridge and subnet of its own and
never shares docker0 with another daemon.

    python -m app.bridge create NAME PREFIX   # prints the address it gave NAME, PREFIX.N.1/24
    python -m app.bridge delete NAME

`scripts/run.sh` makes one for the engine it starts (prefix 10.214), the test harness one per
test engine (10.213): the two kinds never compete for a subnet, and within a kind a subnet
already on an interface of this machine is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import sys

# Linux network-device ioctls (linux/sockios.h).
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _SIOCGIFADDR = 0x8913, 0x8914, 0x8915
_SIOCSIFADDR, _SIOCSIFNETMASK = 0x8916, 0x891C
_SIOCBRADDBR, _SIOCBRDELBR = 0x89A0, 0x89A1
_IFF_UP = 0x1


def _ifreq_addr(name: str, address: str) -> bytes:
    """struct ifreq holding a sockaddr_in (40 bytes on Linux)."""
    return struct.pack("16sH2s4s16x", name.encode(), socket.AF_INET, b"",
                       socket.inet_aton(address))


def ipv4_addresses() -> set[str]:
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(sock, _SIOCGIFADDR, struct.pack("16s24x", name.encode()))
            except OSError:  # no IPv4 address on this device
                continue
            found.add(socket.inet_ntoa(raw[20:24]))
    return found


def _set_up(sock: socket.socket, name: str, up: bool) -> None:
    raw = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", name.encode(), 0))
    flags = struct.unpack("16sh22x", raw)[1]
    flags = flags | _IFF_UP if up else flags & ~_IFF_UP
    fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", name.encode(), flags))


def create_bridge(name: str, prefix: str) -> str:
    """Create bridge `name` (at most 15 characters) with the first free `prefix`.N.1/24 and
    bring it up; returns that address with its mask length."""
    used = {address.rsplit(".", 1)[0] for address in ipv4_addresses()}
    subnet = next((n for n in range(1, 255) if f"{prefix}.{n}" not in used), None)
    if subnet is None:
        raise RuntimeError(f"no free {prefix}.x.0/24 subnet for a bridge")
    gateway = f"{prefix}.{subnet}.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCBRADDBR, name.encode())
        fcntl.ioctl(sock, _SIOCSIFADDR, _ifreq_addr(name, gateway))
        fcntl.ioctl(sock, _SIOCSIFNETMASK, _ifreq_addr(name, "255.255.255.0"))
        _set_up(sock, name, True)
    return f"{gateway}/24"


def delete_bridge(name: str) -> None:
    """Take bridge `name` down and delete it; nothing when it does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with contextlib.suppress(OSError):
            _set_up(sock, name, False)
        with contextlib.suppress(OSError):
            fcntl.ioctl(sock, _SIOCBRDELBR, name.encode())


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "create":
        try:
            print(create_bridge(argv[1], argv[2]))
        except (OSError, RuntimeError) as ex:
            print(f"bridge {argv[1]}: {ex}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "delete":
        delete_bridge(argv[1])
        return 0
    print("usage: python -m app.bridge create NAME PREFIX | delete NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
