// EgressGateway's real resolver (c-ares) against a real DNS server the test runs on 127.0.0.1: answers, a name
// that never answers, and many hanging lookups that must not hold up a normal one (dns.lookup's four libuv threads
// would). Dials still land on a loopback echo server, so nothing leaves this machine.
import { once } from "node:events";
import { readdirSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { egressConfigSchema } from "../egress-image/src/config";
import { dnsResolver } from "../egress-image/src/resolver";
import { EgressGateway, dialAddress } from "../egress-image/src/server";
import { jsonLogger } from "../runtime/log";
import { type DnsServer, TYPE_A, TYPE_AAAA, type Zone, startDnsServer } from "./support/dnsServer";
import { tempDir } from "./support/tempDirs";

const PUBLIC_V4 = ["93.184.216.34", "93.184.216.35"];
const PUBLIC_V6 = ["2606:2800:220:1:248:1893:25c8:1946"];
const ZONE: Zone = {
    "dual.test": { a: [PUBLIC_V4[0]], aaaa: PUBLIC_V6 },
    "v4.test": { a: PUBLIC_V4 },
    "v6.test": { aaaa: PUBLIC_V6 },
    "split.test": { a: [PUBLIC_V4[0]], aaaa: ["fd00::1"] },
};
/** Never answered. */
const HANGING = "hang.test";

let server: DnsServer;
let serverAddress: string;
let asked: DnsServer["asked"];

beforeAll(async () => {
    server = await startDnsServer(ZONE, new Set([HANGING]));
    ({ address: serverAddress, asked } = server);
});
afterAll(() => server.close());

const openDescriptors = () => readdirSync("/proc/self/fd").length;
const never = () => new AbortController().signal;

describe("the resolver (c-ares)", () => {
    it.each([
        ["A and AAAA, asked together, answered as one set", "dual.test", [PUBLIC_V4[0], ...PUBLIC_V6]],
        ["A only (AAAA has no data)", "v4.test", PUBLIC_V4],
        ["AAAA only (A has no data)", "v6.test", PUBLIC_V6],
        ["every answer of both families, for the gateway to vet", "split.test", [PUBLIC_V4[0], "fd00::1"]],
    ])("%s", async (_case, name, expected) => {
        const resolve = dnsResolver({ timeoutMs: 5_000, servers: [serverAddress] });
        expect((await resolve(name, never())).sort()).toEqual([...expected].sort());
        expect(asked.filter((q) => q.name === name).map((q) => q.type)).toEqual(expect.arrayContaining([TYPE_A, TYPE_AAAA]));
    });

    it("fails a name that does not exist", async () => {
        const resolve = dnsResolver({ timeoutMs: 5_000, servers: [serverAddress] });
        await expect(resolve("missing.test", never())).rejects.toMatchObject({ code: "ENOTFOUND" });
    });

    it("gives up on a name that never answers by itself, within its bound", async () => {
        const resolve = dnsResolver({ timeoutMs: 2_000, servers: [serverAddress] });
        const started = performance.now();
        await expect(resolve(HANGING, never())).rejects.toMatchObject({ code: "ETIMEOUT" });
        expect(performance.now() - started).toBeLessThan(2_000);
    });

    it("cancels a lookup at once when it is abandoned", async () => {
        const resolve = dnsResolver({ timeoutMs: 60_000, servers: [serverAddress] });
        const abandon = new AbortController();
        const before = asked.length;
        const lookup = resolve(HANGING, abandon.signal);
        await expect.poll(() => asked.slice(before).filter((q) => q.name === HANGING).length).toBe(2);
        abandon.abort();
        await expect(lookup).rejects.toMatchObject({ code: "ECANCELLED" });
    });

    it("answers a normal lookup while 64 lookups hang, and leaves no socket behind once they are abandoned", async () => {
        const resolve = dnsResolver({ timeoutMs: 60_000, servers: [serverAddress] });
        const descriptors = openDescriptors();
        const abandon = new AbortController();
        let hangingSettled = 0;
        const before = asked.length;
        const hanging = Array.from({ length: 64 }, () => resolve(HANGING, abandon.signal).finally(() => hangingSettled++));
        for (const lookup of hanging) lookup.catch(() => undefined);
        // The hanging queries are out (at least one per libuv thread, as getaddrinfo would have sent).
        await expect.poll(() => asked.slice(before).filter((q) => q.name === HANGING).length).toBeGreaterThanOrEqual(4);
        expect((await resolve("dual.test", never())).sort()).toEqual([PUBLIC_V4[0], ...PUBLIC_V6].sort());
        // Answered while every hanging lookup was still waiting: nothing was queued behind them.
        expect(hangingSettled).toBe(0);
        abandon.abort();
        const outcomes = await Promise.allSettled(hanging);
        expect(outcomes.every((o) => o.status === "rejected" && (o.reason as NodeJS.ErrnoException).code === "ECANCELLED")).toBe(true);
        await expect.poll(() => openDescriptors()).toBeLessThanOrEqual(descriptors);
    });
});

describe("EgressGateway with the real resolver", () => {
    const dials: string[] = [];
    let echo: net.Server;
    let gateway: EgressGateway;
    let port: number;

    beforeAll(async () => {
        echo = net.createServer((socket) => socket.pipe(socket)).listen(0, "127.0.0.2");
        await once(echo, "listening");
        const echoPort = (echo.address() as net.AddressInfo).port;
        const config = egressConfigSchema.parse({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            auditDir: tempDir("egress-audit"),
            resolvers: [serverAddress],
            limits: { resolveTimeoutMs: 800 },
        });
        gateway = new EgressGateway(config, jsonLogger("egress-gateway", () => undefined), {
            resolve: dnsResolver({ timeoutMs: config.limits.resolveTimeoutMs, servers: config.resolvers }),
            // The vetted address is recorded; the bytes go to the loopback echo server.
            dial: (address, _port, timeoutMs) => {
                dials.push(address);
                return dialAddress("127.0.0.2", echoPort, timeoutMs);
            },
            ownAddresses: () => [],
        });
        gateway.setAgents([{ name: "bart", subnet: "127.0.0.0/25", mode: "enforce", allow: [{ host: "*.test", ports: [443] }] }]);
        ({ port } = await gateway.listen());
    });
    afterAll(async () => {
        await gateway.close();
        echo.close();
    });

    /** Sends a CONNECT and resolves with everything answered until the gateway or the echo closes, or `text` echoes. */
    const tunnel = (name: string, payload = "ping") =>
        new Promise<string>((resolve) => {
            const socket = net.connect(port, "127.0.0.1", () => socket.write(`CONNECT ${name}:443 HTTP/1.1\r\nHost: ${name}:443\r\n\r\n`));
            let out = "";
            socket.on("data", (chunk) => {
                out += chunk.toString();
                if (out === "HTTP/1.1 200 Connection Established\r\n\r\n") socket.write(payload);
                if (out.endsWith(payload)) socket.destroy();
            });
            socket.on("close", () => resolve(out));
            socket.on("error", () => undefined);
        });

    it("dials the IPv4 answer of a name with both families, and relays bytes", async () => {
        dials.length = 0;
        expect(await tunnel("dual.test")).toBe("HTTP/1.1 200 Connection Established\r\n\r\nping");
        expect(dials).toEqual([PUBLIC_V4[0]]);
    });

    it.each([
        ["a private AAAA behind a public A", "split.test", "403", "resolved_non_public:uniqueLocal"],
        ["a name that does not exist", "missing.test", "403", "resolver_failure"],
        ["a name that never answers", HANGING, "504", "resolver_timeout"],
    ])("refuses %s", async (_case, name, status, reason) => {
        dials.length = 0;
        const answer = await tunnel(name);
        expect(answer).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
        expect(answer).toContain(`egress denied: ${reason}\n`);
        expect(dials).toEqual([]);
    });
});
