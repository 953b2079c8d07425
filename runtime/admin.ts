import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface Listen {
    host: string;
    port: number;
}

/**
 * The operators' listener: GET /metrics (Prometheus) and GET /healthz, nothing else. Bound only to
 * addresses agents cannot reach (loopback inside the container, or the uplink address).
 */
export async function startAdminServers(listens: readonly Listen[], registry: Registry, healthy: () => boolean): Promise<http.Server[]> {
    const servers: http.Server[] = [];
    for (const listen of listens) {
        const server = http.createServer((req, res) => {
            if (req.method === "GET" && req.url === "/healthz") {
                const ok = healthy();
                res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ ok }));
            } else if (req.method === "GET" && req.url === "/metrics") {
                registry.metrics().then(
                    (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
                    () => res.writeHead(500).end(),
                );
            } else {
                res.writeHead(404).end();
            }
        });
        server.listen(listen.port, listen.host);
        await once(server, "listening");
        servers.push(server);
    }
    return servers;
}

export function portOf(server: http.Server | import("node:net").Server): number {
    return (server.address() as AddressInfo).port;
}

export async function closeServer(server: http.Server): Promise<void> {
    server.closeAllConnections();
    if (server.listening) await new Promise((resolve) => server.close(resolve));
}

/** The `healthcheck` subcommand of both images: exit 0 when the admin listener says healthy. */
export function probeHealth(listen: Listen): Promise<boolean> {
    return new Promise((resolve) => {
        http.get({ host: listen.host, port: listen.port, path: "/healthz", timeout: 3000 }, (res) => {
            res.resume();
            resolve(res.statusCode === 200);
        })
            .on("error", () => resolve(false))
            .on("timeout", function (this: http.ClientRequest) {
                this.destroy();
                resolve(false);
            });
    });
}
