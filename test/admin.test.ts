// The admin listener as a scraper on another host would use it: TLS, and a bearer token on /metrics.
import https from "node:https";
import type { AddressInfo } from "node:net";
import { Counter, Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearerMatches, closeServer, probeHealth, startAdminServers } from "../runtime/admin";
import { testPki } from "./support/tls";

const TOKEN = "scrape-token-0123456789abcdef";
const registry = new Registry();
new Counter({ name: "demo_total", help: "demo", registers: [registry] }).inc(3);
let servers: Awaited<ReturnType<typeof startAdminServers>>;
let port: number;

function get(path: string, headers: Record<string, string> = {}, ca = testPki().ca): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
        https
            .get({ host: "127.0.0.1", port, path, headers, ca, servername: "localhost" }, (res) => {
                let body = "";
                res.on("data", (c) => (body += c));
                res.on("end", () => resolve({ status: res.statusCode!, body }));
            })
            .on("error", reject);
    });
}

beforeAll(async () => {
    const { cert, key } = testPki();
    servers = await startAdminServers([{ host: "127.0.0.1", port: 0, tls: { certPem: cert, keyPem: key }, bearerToken: TOKEN }], registry, () => true);
    port = (servers[0].address() as AddressInfo).port;
});
afterAll(async () => {
    for (const server of servers) await closeServer(server);
});

describe("an admin listener with TLS and a bearer token", () => {
    it("serves metrics over TLS to a holder of the token", async () => {
        const res = await get("/metrics", { authorization: `Bearer ${TOKEN}` });
        expect(res.status).toBe(200);
        expect(res.body).toContain("demo_total 3");
    });

    it.each([
        ["no token", {}],
        ["a wrong token", { authorization: "Bearer scrape-token-0123456789abcdeX" }],
        ["the token without its scheme", { authorization: TOKEN }],
        ["another scheme", { authorization: `Basic ${TOKEN}` }],
    ])("refuses metrics with %s (401, nothing leaked)", async (_case, headers) => {
        const res = await get("/metrics", headers);
        expect(res.status).toBe(401);
        expect(res.body).toBe("");
    });

    it("leaves /healthz open, saying only whether it is healthy", async () => {
        expect(await get("/healthz")).toEqual({ status: 200, body: '{"ok":true}' });
        expect(await probeHealth({ host: "127.0.0.1", port, tls: { certPem: testPki().cert, keyPem: testPki().key } })).toBe(true);
    });

    it("is refused by a client that does not trust its CA", async () => {
        await expect(get("/healthz", {}, "")).rejects.toThrow();
    });

    it("compares tokens in constant time, on their digests", () => {
        expect(bearerMatches(`Bearer ${TOKEN}`, TOKEN)).toBe(true);
        expect(bearerMatches(`Bearer ${TOKEN} `, TOKEN)).toBe(false);
        expect(bearerMatches(undefined, TOKEN)).toBe(false);
    });
});
