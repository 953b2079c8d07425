import { createHash, timingSafeEqual } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { z } from "zod";

export const listenSchema = z.strictObject({ host: z.string().min(1), port: z.number().int().min(0).max(65535) });

/** An admin listener: optionally TLS, optionally behind a bearer token (for a scraper on another host). */
export const adminListenSchema = listenSchema.extend({
    tls: z.strictObject({ certPem: z.string().min(1), keyPem: z.string().min(1) }).optional(),
    bearerToken: z.string().min(16).optional(),
});

/** With `tls`, served over TLS; with `bearerToken`, /metrics needs it, while /healthz stays open and says only ok or not. */
export type Listen = z.output<typeof adminListenSchema>;

const digest = (text: string) => createHash("sha256").update(text).digest();

/** Constant-time check of a request's bearer token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
    const presented = /^Bearer (\S+)$/.exec(header ?? "")?.[1];
    return presented !== undefined && timingSafeEqual(digest(presented), digest(token));
}

/**
 * The operators' listener: GET /metrics (Prometheus) and GET /healthz, nothing else. Bound only to
 * addresses agents cannot reach (loopback inside the container, or the uplink address).
 */
export async function startAdminServers(listens: readonly Listen[], registry: Registry, healthy: () => boolean): Promise<http.Server[]> {
    const servers: http.Server[] = [];
    for (const listen of listens) {
        const handler: http.RequestListener = (req, res) => {
            if (req.method === "GET" && req.url === "/healthz") {
                const ok = healthy();
                res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ ok }));
            } else if (req.method === "GET" && req.url === "/metrics" && listen.bearerToken !== undefined && !bearerMatches(req.headers.authorization, listen.bearerToken)) {
                res.writeHead(401, { "www-authenticate": "Bearer" }).end();
            } else if (req.method === "GET" && req.url === "/metrics") {
                registry.metrics().then(
                    (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
                    () => res.writeHead(500).end(),
                );
            } else {
                res.writeHead(404).end();
            }
        };
        const server = listen.tls ? https.createServer({ cert: listen.tls.certPem, key: listen.tls.keyPem, minVersion: "TLSv1.2" }, handler) : http.createServer(handler);
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

/** The `healthcheck` subcommand of every service image: exit 0 when the admin listener says healthy. */
export function probeHealth(listen: Listen): Promise<boolean> {
    // The process asks itself, so a TLS listener's certificate need not verify here.
    const get = listen.tls ? (options: https.RequestOptions, cb: (res: http.IncomingMessage) => void) => https.get({ ...options, rejectUnauthorized: false }, cb) : http.get;
    return new Promise((resolve) => {
        get({ host: listen.host, port: listen.port, path: "/healthz", timeout: 3000 }, (res) => {
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
