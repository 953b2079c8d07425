// KeyProxy's audit stream (runtime/audit.ts): every auth failure, drop, endpoint refusal, budget refusal and ledger
// failure is one chained line with only its declared fields; nothing a request carried (its credential, a header, a
// query) gets in; a flood is bounded per source; a served request writes nothing. Loopback only.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ledgerIo } from "../proxy-image/src/ledgerStore";
import { type AgentEntry, credentialDigest } from "../proxy-image/src/policy";
import { KEYPROXY_AUDIT_EVENTS } from "../proxy-image/src/audit";
import { type AuditLine, auditIo, readAuditLines, shortDigest, verifyDirectory } from "../runtime/audit";
import { tailCommand, verifyCommand } from "../scripts/audit.mts";
import {
    AGENTS,
    ANTHROPIC_BODY,
    type ClientRequest,
    OPENAI_BODY,
    REAL_KEYS,
    type RunningProxy,
    TOKENS,
    anthropicHeaders,
    openaiHeaders,
    send,
    startKeyProxy,
} from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { freePort } from "./support/processes";
import { tempDir } from "./support/tempDirs";

/** In every hostile request below (a header, a query, a body): none of it may reach the trail. */
const SECRET = "s3cr3tvalue0123456789";
const WRONG_TOKEN = `ocp_${"wrong".repeat(9)}xyz`;
const HOMER_TOKEN = `ocp_${"homer".repeat(9)}xyz`;
/** What the stream adds to every event (its type and declared fields are the rest). */
const CHAIN_FIELDS = ["seq", "ts", "service", "prev", "hash"];

const upstream = new MockUpstream();
let proxy: RunningProxy | undefined;
let clock = 0;
let homerPort: number;

beforeAll(async () => {
    await upstream.start();
});
afterEach(async () => {
    vi.restoreAllMocks();
    await stop();
    clock = 0;
});
afterAll(async () => {
    await upstream.stop();
});

/** bart with a budget too small for any request; homer registered by port. */
const agents = (bartBudget?: AgentEntry["budget"]): AgentEntry[] => [
    { ...AGENTS[0], ...(bartBudget && { budget: bartBudget }) },
    AGENTS[1],
    { name: "homer", credentialSha256: credentialDigest(HOMER_TOKEN), port: homerPort },
];

/** A proxy whose audit budget runs on `clock` (milliseconds the tests move). */
async function start(limits: Record<string, number> = {}, bartBudget?: AgentEntry["budget"], leaseUsd = 0.25) {
    // Chosen just before it is bound: a port found free at the file's start may be another file's by now.
    homerPort = await freePort();
    proxy = await startKeyProxy(upstream, { limits, metering: { ledgerFile: path.join(tempDir("keyproxy-ledger"), "ledger.log"), leaseUsd } }, true, undefined, undefined, () => clock);
    await proxy.server.setAgents(agents(bartBudget));
    return proxy;
}

/** Closes the running proxy (which writes whatever is queued), once. */
async function stop() {
    const running = proxy;
    proxy = undefined;
    await running?.server.close();
}

const streamFile = (p: RunningProxy) => path.join(p.config.auditDir, "key-proxy.audit.jsonl");

/** Closes the proxy, so every queued event is on disk, and reads its stream. */
async function closedStream(p: RunningProxy): Promise<{ text: string; lines: AuditLine[] }> {
    await stop();
    const text = existsSync(streamFile(p)) ? readFileSync(streamFile(p), "utf8") : "";
    return { text, lines: readAuditLines(text) };
}

const declaredFields = (line: AuditLine) => Object.fromEntries(Object.entries(line).filter(([field]) => !CHAIN_FIELDS.includes(field)));

/** One request; a dropped connection (no answer) resolves as status 0. */
const attempt = (port: number, request: ClientRequest) => send(port, request).catch(() => ({ status: 0, headers: {}, body: "" }));

/** A request from a chosen loopback source address, on its own connection. */
function sendFrom(port: number, localAddress: string, headers: Record<string, string>): Promise<number> {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, localAddress, method: "POST", path: "/anthropic/v1/messages", headers, agent: false }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode!));
        });
        req.on("error", reject);
        req.end(ANTHROPIC_BODY);
    });
}

const anthropicWithSecrets = (token: string) => ({ ...anthropicHeaders(token), "x-note": SECRET, cookie: `session=${SECRET}` });
const secretQuery = `?token=${SECRET}`;

describe("each refusal is one audit line with only its declared fields", () => {
    it.each<[string, { budget?: AgentEntry["budget"]; port?: () => number }, ClientRequest, number, Record<string, unknown>]>([
        [
            "no credential",
            {},
            { path: `/anthropic/v1/messages${secretQuery}`, headers: { "content-type": "application/json", "x-note": SECRET }, body: ANTHROPIC_BODY },
            401,
            { type: "auth_failed", reason: "missing", provider: "anthropic", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "a wrong credential",
            {},
            { path: `/anthropic/v1/messages${secretQuery}`, headers: anthropicWithSecrets(WRONG_TOKEN), body: ANTHROPIC_BODY },
            401,
            { type: "auth_failed", reason: "unknown", provider: "anthropic", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "a wrong credential in Gemini's key query parameter",
            {},
            { path: `/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=${WRONG_TOKEN}&x=${SECRET}`, headers: { "content-type": "application/json" }, body: "{}" },
            401,
            { type: "auth_failed", reason: "unknown", provider: "gemini", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "lisa's credential from bart's network, naming whose credential it was",
            {},
            { path: `/openai/v1/chat/completions${secretQuery}`, headers: openaiHeaders(TOKENS.lisa), body: OPENAI_BODY },
            401,
            { type: "auth_failed", reason: "wrong_network", agent: "lisa", provider: "openai", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "bart's credential on homer's port",
            { port: () => homerPort },
            { path: "/anthropic/v1/messages", headers: anthropicWithSecrets(TOKENS.bart), body: ANTHROPIC_BODY },
            401,
            // and agentPort: homer's (free) port, added below
            { type: "auth_failed", reason: "wrong_network", agent: "bart", provider: "anthropic", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "homer's credential on the main listener",
            {},
            { path: "/anthropic/v1/messages", headers: anthropicWithSecrets(HOMER_TOKEN), body: ANTHROPIC_BODY },
            401,
            { type: "auth_failed", reason: "wrong_port", agent: "homer", provider: "anthropic", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "a path traversal (dropped unanswered)",
            {},
            { path: `/openai/v1/../../etc/${SECRET}${secretQuery}`, headers: openaiHeaders(), body: OPENAI_BODY },
            0,
            { type: "dropped", reason: "path_traversal", method: "POST", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "a method KeyProxy does not serve (dropped unanswered)",
            {},
            { method: "PUT", path: `/openai/v1/files${secretQuery}`, headers: openaiHeaders(), body: SECRET },
            0,
            { type: "dropped", reason: "method", method: "PUT", remote: "127.0.0.1", unaudited: 0 },
        ],
        [
            "an endpoint outside the allowlist, its route without the query",
            {},
            { path: `/openai/v1/files${secretQuery}`, headers: openaiHeaders(), body: SECRET },
            403,
            { type: "endpoint_refused", agent: "bart", provider: "openai", route: "/v1/files", unaudited: 0 },
        ],
        [
            "an endpoint outside the allowlist whose route carries a credential: only its digest",
            {},
            { method: "GET", path: `/openai/v1/files/${TOKENS.lisa}`, headers: openaiHeaders() },
            403,
            { type: "endpoint_refused", agent: "bart", provider: "openai", routeSha256: shortDigest(`/v1/files/${TOKENS.lisa}`), unaudited: 0 },
        ],
        [
            "a budget refusal",
            { budget: { dailyUsd: 0.000001 } },
            { path: `/openai/v1/chat/completions${secretQuery}`, headers: { ...openaiHeaders(), "x-note": SECRET }, body: OPENAI_BODY },
            429,
            { type: "budget_refused", agent: "bart", provider: "openai", window: "day", model: "gpt-5.1", unaudited: 0 },
        ],
        [
            "a budget refusal for a model named like a credential: only its digest",
            { budget: { totalUsd: 0.000001 } },
            { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: JSON.stringify({ model: TOKENS.lisa, max_tokens: 64, messages: [{ role: "user", content: SECRET }] }) },
            429,
            { type: "budget_refused", agent: "bart", provider: "anthropic", window: "total", modelSha256: shortDigest(TOKENS.lisa), unaudited: 0 },
        ],
    ])("%s", async (_case, setup, request, status, expected) => {
        const p = await start({}, setup.budget);
        const port = setup.port?.() ?? p.port;
        if (setup.port) expected = { ...expected, agentPort: port };
        expect((await attempt(port, request)).status).toBe(status);
        const { text, lines } = await closedStream(p);
        expect(lines).toHaveLength(1);
        expect(declaredFields(lines[0])).toEqual(expected);
        expect(Object.keys(KEYPROXY_AUDIT_EVENTS)).toContain(lines[0].type);
        expect(lines[0]).toMatchObject({ seq: 1, service: "key-proxy" });
        expect(verifyDirectory(p.config.auditDir)).toEqual([{ service: "key-proxy", file: streamFile(p), verdict: { ok: true, lines: 1, last: { seq: 1, hash: lines[0].hash } } }]);
        for (const secret of [SECRET, WRONG_TOKEN, HOMER_TOKEN, TOKENS.bart, TOKENS.lisa, ...Object.values(REAL_KEYS), "token="]) expect(text).not.toContain(secret);
    });

    it.each([
        ["unparsable HTTP", `GET /openai/v1/models?token=${SECRET} HTTP/1.1\r\nHost: x\r\nBad Header: ${SECRET}\r\n\r\n`, "malformed"],
        ["a head over the header limit", `GET /openai/v1/models HTTP/1.1\r\nX-Note: ${SECRET.repeat(4000)}\r\n\r\n`, "header_size"],
    ])("writes %s as dropped, and nothing it carried", async (_case, raw, reason) => {
        const p = await start();
        await new Promise<void>((resolve) => {
            const socket = net.connect(p.port, "127.0.0.1", () => socket.write(raw));
            socket.on("error", () => undefined);
            socket.on("close", () => resolve());
            socket.resume();
        });
        const { text, lines } = await closedStream(p);
        expect(lines.map(declaredFields)).toEqual([{ type: "dropped", reason, remote: "127.0.0.1", unaudited: 0 }]);
        expect(text).not.toContain(SECRET);
    });

    it("writes ledger_unavailable when the ledger cannot be written", async () => {
        const p = await start({}, { totalUsd: 1 }, 0);
        vi.spyOn(ledgerIo, "write").mockRejectedValue(Object.assign(new Error("EROFS: simulated"), { code: "EROFS" }));
        expect((await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(503);
        const { lines } = await closedStream(p);
        expect(lines.map(declaredFields)).toEqual([{ type: "ledger_unavailable", agent: "bart", provider: "anthropic", unaudited: 0 }]);
    });

    it("writes nothing for served requests, free or metered, on the main listener or an agent's port", async () => {
        const p = await start();
        expect((await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        expect((await send(p.port, { method: "GET", path: "/openai/v1/models", headers: openaiHeaders() })).status).toBe(200);
        expect((await send(homerPort, { method: "GET", path: "/anthropic/v1/models", headers: anthropicHeaders(HOMER_TOKEN) })).status).toBe(200);
        expect((await closedStream(p)).lines).toEqual([]);
    });
});

describe("a flood", () => {
    it("writes the audit budget's burst per source, counts what it left out, and says so in the next line written", async () => {
        const p = await start({ auditedRefusalsPerSecond: 1, auditedRefusalsBurst: 5 });
        const flood = 60;
        for (let i = 0; i < flood; i++) expect(await sendFrom(p.port, "127.0.0.1", anthropicHeaders(`${WRONG_TOKEN}${i}`))).toBe(401);
        // Another source has a budget of its own; bart's refusals (an agent's) too.
        expect(await sendFrom(p.port, "127.0.0.2", anthropicHeaders(WRONG_TOKEN))).toBe(401);
        expect((await send(p.port, { path: "/openai/v1/files", headers: openaiHeaders(), body: "{}" })).status).toBe(403);
        const metrics = await p.server.metrics.registry.metrics();
        expect(metrics).toMatch(/keyproxy_audit_events_total\{type="auth_failed"\} 6/);
        expect(metrics).toMatch(/keyproxy_audit_events_total\{type="endpoint_refused"\} 1/);
        expect(metrics).toMatch(new RegExp(`keyproxy_audit_unaudited_total\\{type="auth_failed"\\} ${flood - 5}\\b`));
        // A second later the source's bucket holds one more: that line carries the count left out.
        clock += 1000;
        expect(await sendFrom(p.port, "127.0.0.1", anthropicHeaders(WRONG_TOKEN))).toBe(401);
        const { text, lines } = await closedStream(p);
        expect(lines.map((line) => [line.type, line.remote ?? line.agent, line.unaudited])).toEqual([
            ...Array.from({ length: 5 }, () => ["auth_failed", "127.0.0.1", 0]),
            ["auth_failed", "127.0.0.2", 0],
            ["endpoint_refused", "bart", 0],
            ["auth_failed", "127.0.0.1", flood - 5],
        ]);
        expect(verifyDirectory(p.config.auditDir).map((r) => r.verdict.ok)).toEqual([true]);
        expect(text).not.toContain(WRONG_TOKEN);
    });
});

describe("the stream", () => {
    it("reports itself unhealthy while a write fails, counts the events lost, and recovers", async () => {
        const p = await start();
        const health = async () => (await fetch(`http://127.0.0.1:${p.adminPort}/healthz`)).status;
        expect(await health()).toBe(200);
        vi.spyOn(auditIo, "fdatasync").mockRejectedValueOnce(Object.assign(new Error("ENOSPC: simulated"), { code: "ENOSPC" }));
        await attempt(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(WRONG_TOKEN), body: ANTHROPIC_BODY });
        await expect.poll(health, { timeout: 5000 }).toBe(503);
        expect(await p.server.metrics.registry.metrics()).toMatch(/keyproxy_audit_write_failures_total 1\b/);
        expect(p.logs.some((line) => line.includes('"event":"audit_write_failed"'))).toBe(true);
        await attempt(p.port, { path: "/openai/v1/files", headers: openaiHeaders(), body: "{}" });
        await expect.poll(health, { timeout: 5000 }).toBe(200);
        const { lines } = await closedStream(p);
        expect(lines.map((line) => [line.seq, line.type])).toEqual([[1, "endpoint_refused"]]);
    });

    it("continues its chain across a restart on the same directory", async () => {
        const first = await start();
        await attempt(first.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(WRONG_TOKEN), body: ANTHROPIC_BODY });
        await stop();
        const second = await startKeyProxy(upstream, { auditDir: first.config.auditDir });
        proxy = second;
        await attempt(second.port, { path: "/openai/v1/../x", headers: openaiHeaders(), body: "{}" });
        const { lines } = await closedStream(second);
        expect(lines.map((line) => [line.seq, line.type])).toEqual([
            [1, "auth_failed"],
            [2, "dropped"],
        ]);
        expect(verifyDirectory(first.config.auditDir).map((r) => r.verdict)).toEqual([{ ok: true, lines: 2, last: { seq: 2, hash: lines[1].hash } }]);
    });
});

describe("rotation", () => {
    it("follows auditRotation: the stream rotates, the oldest segments go, the chain verifies, no segment holds a secret", async () => {
        const p = await startKeyProxy(upstream, { limits: { auditedRefusalsBurst: 100 }, auditRotation: { maxFileBytes: 1024, keepSegments: 2 } });
        proxy = p;
        expect(p.config.auditRotation).toEqual({ maxFileBytes: 1024, keepSegments: 2 });
        for (let i = 0; i < 16; i++) {
            expect((await attempt(p.port, { path: `/anthropic/v1/messages${secretQuery}`, headers: anthropicWithSecrets(WRONG_TOKEN), body: ANTHROPIC_BODY })).status).toBe(401);
            // one line to a group, each on disk before the next is sent
            await expect.poll(() => tailCommand(p.config.auditDir, { count: 100 }).at(-1)?.seq, { interval: 5 }).toBe(i + 1);
        }
        await stop();
        const names = readdirSync(p.config.auditDir);
        expect(names.filter((name) => /^key-proxy\.audit\.\d{12}\.jsonl$/.test(name))).toHaveLength(2);
        const printed: string[] = [];
        expect(verifyCommand(p.config.auditDir, (line) => printed.push(line))).toBe(0);
        expect(printed[0]).toMatch(/chain intact, resumed from [0-9a-f]{64}/);
        for (const name of names) {
            const text = readFileSync(path.join(p.config.auditDir, name), "utf8");
            for (const secret of [SECRET, WRONG_TOKEN, ...Object.values(REAL_KEYS)]) expect(text).not.toContain(secret);
        }
    });
});
