"""Issue 10, item 6: RUN's default network is private (slirp4netns), not the host's.

Only loopback traffic here: a server on the host's 127.0.0.1 must be out of reach of a default
RUN (through 127.0.0.1 and through slirp's gateway 10.0.2.2) and within reach of
--network=host; nothing goes to the internet.
"""
from __future__ import annotations

import http.server
import os
import secrets
import shutil
import threading
from pathlib import Path

import pytest

import builder
from builder.errors import SandboxError
from security.sandbox_support import needs_root, run_in_sandbox

pytestmark = [needs_root]

# (busybox's static wget crashes in its resolver even for an IP address: nc speaks HTTP here.)
PROBE = ("(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {port} 2>/dev/null | tail -n 1; echo .) > /loopback; "
         "(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 {port} 2>/dev/null | tail -n 1; echo .) > /gateway")


@pytest.fixture
def host_service():
    """An HTTP server on the host's loopback answering a token; yields (port, token)."""
    token = f"host-only-{secrets.token_hex(6)}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = token.encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], token
    finally:
        server.shutdown()
        server.server_close()


def build_files(tmp_path: Path, store, text: str, name: str, **options) -> dict[str, str]:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    dest = tmp_path / name
    builder.build(context, buildfile_text=text, root=store.root, outputs=[f"type=local,dest={dest}"], **options)
    return {file: (dest / file).read_text().strip() for file in ("loopback", "gateway")}


def test_the_hosts_loopback_is_out_of_reach_of_a_default_run(tmp_path, busybox_store, host_service):
    port, token = host_service
    text = f"FROM busybox\nRUN {PROBE.format(port=port)}\n"
    default = build_files(tmp_path, busybox_store, text, "default")
    assert default == {"loopback": ".", "gateway": "."}  # nothing came back

    host = build_files(tmp_path, busybox_store, text, "host", network="host")
    assert host["loopback"] == f"{token}\n."  # an explicit choice still shares the host's network

    flagged = build_files(tmp_path, busybox_store, f"FROM busybox\nRUN --network=host {PROBE.format(port=port)}\n",
                          "flagged")
    assert flagged["loopback"] == f"{token}\n."


def test_default_network_has_its_own_interface_route_and_dns(busybox_rootfs, tmp_path):
    status, out = run_in_sandbox([busybox_rootfs], tmp_path / "w", [
        "/bin/sh", "-c", "ls /sys/class/net; echo --; ip route; echo --; cat /etc/resolv.conf"])
    interfaces, routes, resolv = out.split("--\n")
    assert status == 0, out
    assert interfaces.split() == ["lo", "tap0"]
    assert "default via 10.0.2.2 dev tap0" in routes
    assert resolv.splitlines()[0] == "nameserver 10.0.2.3"
    assert not any(line.startswith("nameserver") for line in resolv.splitlines()[1:])


def test_none_has_only_a_working_loopback(busybox_rootfs, tmp_path):
    status, out = run_in_sandbox([busybox_rootfs], tmp_path / "w", [
        "/bin/sh", "-c", "ls /sys/class/net; ip addr show lo | grep -c 'inet 127.0.0.1'; "
                         "ip route | wc -l; cat /etc/resolv.conf | wc -c"], network="none")
    assert (status, out.split()) == (0, ["lo", "1", "0", "0"])


def test_without_slirp4netns_the_default_network_is_an_error_not_the_hosts(busybox_rootfs, tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("setpriv", "unshare", "mount", "rm", "cp"):
        found = shutil.which(name)
        if found:
            os.symlink(found, tools / name)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(SandboxError) as caught:
        run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", "ls /sys/class/net"])
    assert "slirp4netns" in caught.value.message
    assert "--network=host" in (caught.value.hint or "") and "apt-get install slirp4netns" in caught.value.hint


def test_builder_run_gets_the_private_network_too(busybox_store, host_service) -> None:
    """`builder run` defaults like a build's RUN: the host's loopback services are out of reach."""
    import argparse

    from builder.commands.run import register, run_image

    port, token = host_service
    probe = ["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {port} | tail -n 1"]
    for options, reached in (({}, False), ({"network": "host"}, True)):
        output: list[bytes] = []
        run_image(busybox_store, "busybox:latest", probe, on_output=output.append, **options)
        assert (token in b"".join(output).decode()) is reached, options
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["run", "busybox:latest"]).network == "default"
