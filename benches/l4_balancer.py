#!/usr/bin/env python3
"""A layer-4 balancer that behaves like a Kubernetes Service through kube-proxy: each new
connection goes to the next endpoint of the current set (round robin), an established
connection stays with its endpoint until either side closes it (conntrack), and nothing is
retried: an endpoint that refuses a connection closes the client's connection.

    python3 benches/l4_balancer.py PORT ENDPOINTS_FILE

ENDPOINTS_FILE holds one host:port per line; SIGHUP re-reads it (an endpoint leaving the
EndpointSlice). Used by benches/rollout.sh.
"""
import asyncio
import itertools
import signal
import sys


def read_endpoints(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    state = {"endpoints": read_endpoints(path), "refused": 0}
    turn = itertools.count()

    def reload():
        state["endpoints"] = read_endpoints(path)

    async def serve(client_reader, client_writer):
        endpoints = state["endpoints"]
        if not endpoints:
            client_writer.close()
            return
        host, _, endpoint_port = endpoints[next(turn) % len(endpoints)].rpartition(":")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(endpoint_port))
        except OSError:
            state["refused"] += 1
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except RuntimeError:
        pass
