// KeyProxy over real sockets on loopback, against a mock HTTPS upstream.
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { credentialDigest } from "../proxy-image/src/policy";
import { removeEntry, watchEntries, writeEntry } from "../runtime/registry";
import { agentEntrySchema, ownPorts } from "../proxy-image/src/config";
import { jsonLogger } from "../runtime/log";
import { AGENTS, ANTHROPIC_BODY, OPENAI_BODY, REAL_KEYS, type RunningProxy, TOKENS, anthropicHeaders, closeAndCheckNoSecretLeaked, openaiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream, anthropicStream } from "./support/mockUpstream";
import { fakeKey } from "./support/fakeKeys";

const upstream = new MockUpstream();
/** Speaks HTTP/2 as well, as the providers' APIs do: KeyProxy's streams to it share one connection. */
const upstreamH2 = new MockUpstream({ http2: true });
const proxies: RunningProxy[] = [];
/** Everything an agent or an operator could see: response heads and bodies, log lines, metrics. */
const observed: string[] = [];

async function proxy(overrides: Record<string, unknown> = {}, trustTestCa = true) {
    const running = await startKeyProxy(upstream, overrides, trustTestCa);
    proxies.push(running);
    return running;
}

async function call(port: number, request: Parameters<typeof send>[1]) {
    const response = await send(port, request);
    observed.push(JSON.stringify(response.headers), response.body);
    return response;
}

/** Sends a raw request and resolves with every byte the proxy answered before closing. */
function raw(port: number, text: string): Promise<string> {
    return new Promise((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(text));
        const chunks: Buffer[] = [];
        socket.on("data", (c) => chunks.push(c));
        socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
        socket.on("error", () => undefined);
    });
}

let main: RunningProxy;
let mainH2: RunningProxy;
beforeAll(async () => {
    await Promise.all([upstream.start(), upstreamH2.start()]);
    main = await proxy();
    mainH2 = await startKeyProxy(upstreamH2);
    proxies.push(mainH2);
});
afterEach(() => {
    upstream.handler = undefined;
    upstreamH2.handler = undefined;
});
afterAll(async () => {
    // Invariant 6: no real key and no agent token ever reaches a response, a log line or a metric.
    await upstreamH2.stop();
    const everything = await closeAndCheckNoSecretLeaked(proxies, upstream, observed, [...Object.values(REAL_KEYS), ...Object.values(TOKENS)]);
    expect(everything.length).toBeGreaterThan(1000);
    expect(everything).not.toMatch(/sk-(ant|proj)-[A-Za-z0-9]{8}/);
});

describe("forwarding", () => {
    it("sends Anthropic requests upstream with the real key injected and the agent's stripped", async () => {
        upstream.received.length = 0;
        const res = await call(main.port, {
            path: "/anthropic/v1/messages",
            headers: { ...anthropicHeaders(), "x-forwarded-for": "10.9.9.9", connection: "x-hop", "x-hop": "1", cookie: "c=1" },
            body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [] }),
        });
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body).content[0].text).toBe("Hello");
        const seen = upstream.received[0];
        expect(seen.path).toBe("/v1/messages");
        expect(seen.servername).toBe("localhost");
        expect(seen.headers["x-api-key"]).toBe(REAL_KEYS.anthropic);
        expect(seen.headers.authorization).toBeUndefined();
        expect(seen.headers.host).toBe(`localhost:${upstream.port}`);
        expect(seen.headers["anthropic-version"]).toBe("2023-06-01");
        for (const stripped of ["x-forwarded-for", "x-hop", "cookie"]) expect(seen.headers[stripped]).toBeUndefined();
        expect(JSON.stringify(seen.headers)).not.toContain(TOKENS.bart);
        expect(JSON.stringify(seen.headers)).not.toContain("127.0.0.1");
    });

    it("sends OpenAI requests with the real bearer key, query intact", async () => {
        upstream.received.length = 0;
        const res = await call(main.port, { method: "GET", path: "/openai/v1/models?limit=2", headers: openaiHeaders() });
        expect(res.status).toBe(200);
        expect(res.headers["set-cookie"]).toBeUndefined();
        expect(upstream.received[0]).toMatchObject({ method: "GET", path: "/v1/models?limit=2" });
        expect(upstream.received[0].headers.authorization).toBe(`Bearer ${REAL_KEYS.openai}`);
    });

    it("reuses pooled keep-alive connections to the upstream", async () => {
        const p = await proxy();
        const before = upstream.tlsConnections;
        for (let i = 0; i < 5; i++) expect((await call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        expect(upstream.tlsConnections - before).toBe(1);
    });

    it("uses the configured base URL's path, never the Host header", async () => {
        const mirrored = await proxy({ upstreams: { anthropic: { baseUrl: `${upstream.baseUrl}/mirror` }, openai: { baseUrl: upstream.baseUrl } } });
        upstream.received.length = 0;
        await call(mirrored.port, { path: "/anthropic/v1/messages", headers: { ...anthropicHeaders(), host: "evil.example" }, body: ANTHROPIC_BODY });
        expect(upstream.received[0].path).toBe("/mirror/v1/messages");
        expect(upstream.received[0].headers.host).toBe(`localhost:${upstream.port}`);
    });

    it("verifies upstream TLS: without the test CA the upstream is refused (502)", async () => {
        const untrusting = await proxy({}, false);
        const res = await call(untrusting.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        expect(res.status).toBe(502);
        expect(JSON.parse(res.body)).toEqual({ type: "error", error: { type: "api_error", message: "upstream unavailable" } });
    });
});

describe("refusals", () => {
    it.each([
        "PUT /anthropic/v1/messages HTTP/1.1",
        "TRACE /anthropic/v1/messages HTTP/1.1",
        "CONNECT api.anthropic.com:443 HTTP/1.1",
        "POST http://api.anthropic.com/v1/messages HTTP/1.1",
        "POST /anthropic/../openai/v1/chat/completions HTTP/1.1",
        "POST /anthropic/%2e%2e/openai/v1 HTTP/1.1",
        "POST /anthropic/v1%2fmessages HTTP/1.1",
        "POST /mistral/v1/models HTTP/1.1",
        "GET /metrics HTTP/1.1",
        "GET /healthz HTTP/1.1",
    ])("%s: connection closed with no response", async (line) => {
        const answer = await raw(main.port, `${line}\r\nHost: key-proxy\r\nx-api-key: ${TOKENS.bart}\r\nContent-Length: 0\r\n\r\n`);
        expect(answer).toBe("");
    });

    it("logs each drop with its reason", () => {
        const drops = main.logs.map((l) => JSON.parse(l)).filter((l) => l.event === "dropped");
        expect(drops.map((d) => d.reason)).toEqual(expect.arrayContaining(["method", "target_form", "path_traversal", "path_encoding", "unknown_route"]));
    });

    it.each<[string, Record<string, string>, string]>([
        ["no credential (Anthropic)", { "content-type": "application/json" }, "anthropic"],
        ["an unknown credential (Anthropic)", anthropicHeaders("ocp_notanagentnotanagentnotanagent"), "anthropic"],
        ["the credential in the wrong header (OpenAI)", anthropicHeaders(), "openai"],
        ["an unknown credential (OpenAI)", openaiHeaders("ocp_notanagentnotanagent"), "openai"],
        ["lisa's credential from outside lisa's network", anthropicHeaders(TOKENS.lisa), "anthropic"],
    ])("401 for %s, in the provider's shape, echoing nothing", async (_case, headers, provider) => {
        upstream.received.length = 0;
        const path = provider === "anthropic" ? "/anthropic/v1/messages" : "/openai/v1/chat/completions";
        const res = await call(main.port, { path, headers, body: provider === "anthropic" ? ANTHROPIC_BODY : OPENAI_BODY });
        expect(res.status).toBe(401);
        const body = JSON.parse(res.body);
        if (provider === "anthropic") expect(body).toEqual({ type: "error", error: { type: "authentication_error", message: "invalid credential" } });
        else expect(body.error).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key" });
        expect(res.body).not.toContain("ocp_");
        expect(upstream.received).toHaveLength(0);
    });

    it("refuses lisa's credential as wrong_network in the log", () => {
        const refusals = main.logs.map((l) => JSON.parse(l)).filter((l) => l.event === "request" && l.status === 401);
        expect(refusals.map((r) => r.reason)).toEqual(expect.arrayContaining(["missing", "unknown", "wrong_network"]));
    });
});

describe("registry", () => {
    it("accepts a newly registered agent and refuses it once unregistered, without a restart", async () => {
        const p = await proxy();
        const token = "ocp_homerhomerhomerhomerhomerhomerhomerhomer";
        const stop = watchEntries(p.config.registryDir, agentEntrySchema(ownPorts(p.config)), jsonLogger("test", () => undefined), (entries) => p.server.setAgents(entries), 50);
        const ask = () => call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(token), body: ANTHROPIC_BODY }).then((r) => r.status);
        expect(await ask()).toBe(401);
        writeEntry(p.config.registryDir, "homer", { name: "homer", credentialSha256: credentialDigest(token), subnet: "127.0.0.0/8" });
        await expect.poll(ask, { timeout: 3000, interval: 50 }).toBe(200);
        removeEntry(p.config.registryDir, "homer");
        await expect.poll(ask, { timeout: 3000, interval: 50 }).toBe(401);
        stop();
    });

    it("rejects names that could escape the directory", () => {
        expect(() => writeEntry("/tmp", "../etc", {})).toThrow(/not an agent name/);
        expect(() => removeEntry("/tmp", "a/b")).toThrow(/not an agent name/);
    });
});

describe.each([
    ["HTTP/1.1", "1.1", () => ({ upstream, proxy: main })],
    ["HTTP/2", "2.0", () => ({ upstream: upstreamH2, proxy: mainH2 })],
])("streaming from an upstream speaking %s", (_protocol, httpVersion, subject) => {
    afterEach(() => expect(subject().upstream.received.at(-1)?.httpVersion).toBe(httpVersion));

    it("delivers each upstream chunk to the client before the upstream writes the next", async () => {
        const events = anthropicStream();
        const received: { index: number; delayMs: number }[] = [];
        const waiters = events.map(() => Promise.withResolvers<void>());
        subject().upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const [index, event] of events.entries()) {
                res.write(event.replace("\n\n", `\nid: ${index}:${performance.timeOrigin + performance.now()}\n\n`));
                // The next chunk is written only once the client has this one: a buffering proxy never gets here.
                await Promise.race([waiters[index].promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`chunk ${index} never reached the client`)), 5000))]);
            }
            res.end();
        };
        await new Promise<void>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: subject().proxy.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                let buffer = "";
                res.on("data", (chunk) => {
                    const now = performance.timeOrigin + performance.now();
                    buffer += chunk.toString();
                    for (const match of buffer.matchAll(/id: (\d+):([\d.]+)/g)) {
                        const index = Number(match[1]);
                        if (received.some((r) => r.index === index)) continue;
                        received.push({ index, delayMs: now - Number(match[2]) });
                        waiters[index].resolve();
                    }
                });
                res.on("end", resolve);
                res.on("error", reject);
            });
            req.end(ANTHROPIC_BODY);
        });
        expect(received.map((r) => r.index)).toEqual(events.map((_, i) => i));
        console.log(`chunk delays through the proxy (ms): ${received.map((r) => r.delayMs.toFixed(2)).join(", ")}`);
    });

    it("cancels the upstream request when the client goes away", async () => {
        const upstreamClosed = Promise.withResolvers<number>();
        const firstChunk = Promise.withResolvers<void>();
        subject().upstream.handler = (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            res.write(anthropicStream()[0]);
            const timer = setInterval(() => res.write(": keep-alive\n\n"), 200);
            res.on("close", () => {
                clearInterval(timer);
                upstreamClosed.resolve(performance.now());
            });
        };
        const req = http.request({ host: "127.0.0.1", port: subject().proxy.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
            res.once("data", () => firstChunk.resolve());
        });
        req.on("error", () => undefined);
        req.end(ANTHROPIC_BODY);
        await firstChunk.promise;
        const abortedAt = performance.now();
        req.destroy();
        const closedAt = await Promise.race([upstreamClosed.promise, new Promise<number>((_, reject) => setTimeout(() => reject(new Error("upstream still open 3 s after the client left")), 3000))]);
        expect(closedAt).toBeGreaterThanOrEqual(abortedAt);
        await expect.poll(() => subject().proxy.logs.some((l) => l.includes('"outcome":"client_abort"'))).toBe(true);
    });

    it("honours backpressure: a slow reader holds the upstream back instead of filling memory", async () => {
        const chunk = "x".repeat(64 * 1024);
        let written = 0;
        const upstreamDone = Promise.withResolvers<void>();
        subject().upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "application/octet-stream" });
            for (let i = 0; i < 400; i++) {
                written++;
                if (!res.write(chunk)) await once(res, "drain");
            }
            res.end();
            upstreamDone.resolve();
        };
        let readBytes = 0;
        const paused = Promise.withResolvers<http.IncomingMessage>();
        const req = http.request({ host: "127.0.0.1", port: subject().proxy.port, method: "GET", path: "/anthropic/v1/models", headers: anthropicHeaders(), agent: false }, (res) => {
            res.once("data", (c: Buffer) => {
                readBytes += c.length;
                res.pause();
                paused.resolve(res);
            });
        });
        req.end();
        const res = await paused.promise;
        await new Promise((r) => setTimeout(r, 300));
        // 400 x 64 KiB = 25 MiB; with a paused reader only socket buffers' worth may be in flight.
        expect(written).toBeLessThan(200);
        res.on("data", (c: Buffer) => (readBytes += c.length));
        res.resume();
        await upstreamDone.promise;
        await once(res, "end");
        expect(readBytes).toBe(400 * chunk.length);
    });
});

describe("timeouts and limits", () => {
    // undici checks first-byte and idle timeouts on a 0.5 s tick: one fires up to about 0.5 s off its configured time
    // (one under a second takes 0.5-1 s). The cases below keep their delays far from both ends, so load cannot flip them.
    const delayedHeaders = (ms: number) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
        setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end("{}"), ms);
    };

    it("waits for a slow first byte within the configured time, and answers 504 past it", async () => {
        const patient = await proxy({ limits: { headersTimeoutMs: 3000 } });
        upstream.handler = delayedHeaders(300);
        expect((await call(patient.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status).toBe(200);
        const strict = await proxy({ limits: { headersTimeoutMs: 100 } });
        // Past it: an upstream that never answers, so no timing of the machine can turn the 504 into a 200.
        upstream.handler = (_req, res) => new Promise<void>((resolve) => res.on("close", resolve));
        const res = await call(strict.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY });
        expect(res.status).toBe(504);
        expect(JSON.parse(res.body).error).toMatchObject({ type: "server_error", code: "timeout" });
    });

    it("survives idle gaps shorter than the idle timeout, over a stream longer than it", async () => {
        const idleTimeoutMs = 600;
        const p = await proxy({ limits: { bodyIdleTimeoutMs: idleTimeoutMs } });
        const events = anthropicStream();
        const deltas = Array.from({ length: 30 }, () => events[2]);
        let started = 0;
        upstream.handler = async (_req, res) => {
            started = performance.now();
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of [...events.slice(0, 2), ...deltas, ...events.slice(2)]) {
                res.write(event);
                await new Promise((r) => setTimeout(r, 40));
            }
            res.end();
        };
        const res = await call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        // Longer than the latest a whole-response timeout of the same value could fire: the timeout is per gap.
        expect(performance.now() - started).toBeGreaterThan(idleTimeoutMs + 500);
        expect(res.body).toContain("message_stop");
    });

    it("defaults allow a time to first byte and idle gaps of ten minutes", async () => {
        expect(main.config.limits.headersTimeoutMs).toBeGreaterThanOrEqual(600_000);
        expect(main.config.limits.bodyIdleTimeoutMs).toBeGreaterThanOrEqual(600_000);
    });

    it("answers 413 for a declared body over the limit, and for a chunked one that grows past it", async () => {
        const p = await proxy({ limits: { maxBodyBytes: 1000 } });
        const declared = await call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: "x".repeat(2000) });
        expect(declared.status).toBe(413);
        expect(JSON.parse(declared.body).error.type).toBe("request_too_large");
        const chunked = await new Promise<number>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: p.port, method: "POST", path: "/openai/v1/chat/completions", headers: openaiHeaders(), agent: false }, (res) => {
                res.resume();
                resolve(res.statusCode!);
            });
            req.on("error", reject);
            for (let i = 0; i < 10; i++) req.write("y".repeat(300));
            req.end();
        });
        expect(chunked).toBe(413);
    });

    it("answers 431 for headers over the limit", async () => {
        const p = await proxy({ limits: { maxHeaderBytes: 4096 } });
        const answer = await raw(p.port, `POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nx-big: ${"a".repeat(8000)}\r\n\r\n`);
        expect(answer).toMatch(/^HTTP\/1\.1 431/);
    });

    it("answers 429 past the concurrent streams allowed per agent", async () => {
        const p = await proxy({ limits: { maxConcurrentPerAgent: 2 } });
        const release = Promise.withResolvers<void>();
        upstream.handler = async (_req, res) => {
            await release.promise;
            res.writeHead(200).end("{}");
        };
        const held = [0, 1].map(() => call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY }));
        await expect.poll(() => upstream.received.length >= 2).toBe(true);
        const third = await call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        expect(third.status).toBe(429);
        expect(JSON.parse(third.body).error.type).toBe("rate_limit_error");
        release.resolve();
        expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200]);
    });
});

describe("upstream errors", () => {
    it("pass through with their status, scrubbed of anything key-shaped", async () => {
        upstream.handler = (_req, res) => {
            res.writeHead(401, { "content-type": "application/json" });
            res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${fakeKey("openai", "REAL****************BBBB")}. Full: ${REAL_KEYS.openai}`, type: "invalid_request_error" } }));
        };
        const res = await call(main.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY });
        expect(res.status).toBe(401);
        const message = JSON.parse(res.body).error.message;
        expect(message).toBe("Incorrect API key provided: [redacted]. Full: [redacted]");
        expect(Number(res.headers["content-length"])).toBe(Buffer.byteLength(res.body));
    });
});

/** The status line of every response in raw HTTP/1.1 bytes, in order. */
const statuses = (answer: string) => [...answer.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => Number(m[1]));

describe("pipelined requests", () => {
    const valid = [
        `GET /anthropic/v1/models HTTP/1.1\r\nHost: key-proxy\r\nx-api-key: ${TOKENS.bart}\r\n\r\n`,
        `POST /anthropic/v1/messages HTTP/1.1\r\nHost: key-proxy\r\nx-api-key: ${TOKENS.bart}\r\ncontent-type: application/json\r\nContent-Length: ${Buffer.byteLength(ANTHROPIC_BODY)}\r\n\r\n${ANTHROPIC_BODY}`,
    ].join("");
    const after = `GET /anthropic/v1/models HTTP/1.1\r\nHost: key-proxy\r\nx-api-key: ${TOKENS.bart}\r\n\r\n`;

    it.each<[string, string, number[]]>([
        ["a forbidden method", "TRACE /anthropic/v1/messages HTTP/1.1\r\nHost: key-proxy\r\n\r\n", [200, 200]],
        ["a path traversal", "POST /anthropic/../openai/v1/chat/completions HTTP/1.1\r\nHost: key-proxy\r\nContent-Length: 0\r\n\r\n", [200, 200]],
        ["an unknown route", "GET /metrics HTTP/1.1\r\nHost: key-proxy\r\n\r\n", [200, 200]],
        ["a CONNECT", "CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n", [200, 200]],
        ["an upgrade", "GET /anthropic/v1/models HTTP/1.1\r\nHost: key-proxy\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", [200, 200]],
        ["malformed bytes", "\u0001\u0002 not http\r\n\r\n", [200, 200]],
        ["headers over the limit", `GET /anthropic/v1/models HTTP/1.1\r\nHost: key-proxy\r\nx-big: ${"a".repeat(70 * 1024)}\r\n\r\n`, [200, 200, 431]],
    ])("answers the valid requests before %s, then closes without answering anything after it", async (_case, hostile, expected) => {
        const answer = await raw(main.port, valid + hostile + after);
        observed.push(answer);
        expect(statuses(answer)).toEqual(expected);
        expect(answer).toContain('"text":"Hello"');
    });
});

describe("Expect: 100-continue", () => {
    const head = (path: string, headers: string) => `POST ${path} HTTP/1.1\r\nHost: key-proxy\r\nExpect: 100-continue\r\ncontent-type: application/json\r\n${headers}\r\n`;

    it.each<[string, string, number]>([
        ["a body over the limit", head("/anthropic/v1/messages", `x-api-key: ${TOKENS.bart}\r\nContent-Length: ${65 * 1024 * 1024}\r\n`), 413],
        ["a free endpoint's body over its limit", head("/anthropic/v1/messages/count_tokens", `x-api-key: ${TOKENS.bart}\r\nContent-Length: ${2 * 1024 * 1024}\r\n`), 413],
        ["no credential", head("/anthropic/v1/messages", "Content-Length: 10\r\n"), 401],
        ["an endpoint that is not allowed", head("/openai/v1/images/generations", `Authorization: Bearer ${TOKENS.bart}\r\nContent-Length: 10\r\n`), 403],
    ])("refuses %s without 100 Continue first", async (_case, request, status) => {
        upstream.received.length = 0;
        const answer = await raw(main.port, request);
        observed.push(answer);
        expect(statuses(answer)).toEqual([status]);
        expect(upstream.received).toHaveLength(0);
    });

    it("sends 100 Continue to a request that passes every check, then forwards its body", async () => {
        const { status, continued } = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
            let continued = false;
            const req = http.request({ host: "127.0.0.1", port: main.port, method: "POST", path: "/anthropic/v1/messages", headers: { ...anthropicHeaders(), expect: "100-continue", "content-length": Buffer.byteLength(ANTHROPIC_BODY) }, agent: false }, (res) => {
                res.resume();
                res.on("end", () => resolve({ status: res.statusCode!, continued }));
            });
            req.on("continue", () => {
                continued = true;
                req.end(ANTHROPIC_BODY);
            });
            req.on("error", reject);
            req.flushHeaders();
        });
        expect({ status, continued }).toEqual({ status: 200, continued: true });
    });
});

describe("free endpoints' bodies", () => {
    const overLimit = 1024 * 1024 + 1;

    it.each<[string, string, boolean]>([
        ["declared (Content-Length) over the limit", "/anthropic/v1/messages/count_tokens", false],
        ["chunked, growing past the limit", "/anthropic/v1/messages/count_tokens", true],
        ["declared, on a model listing", "/openai/v1/models", false],
    ])("%s: 413, and not one byte reaches the upstream", async (_case, path, chunked) => {
        upstream.received.length = 0;
        const status = await new Promise<number>((resolve, reject) => {
            const headers: Record<string, string | number> = path.startsWith("/openai") ? openaiHeaders() : anthropicHeaders();
            if (!chunked) headers["content-length"] = overLimit;
            const req = http.request({ host: "127.0.0.1", port: main.port, method: path.startsWith("/openai") ? "GET" : "POST", path, headers, agent: false }, (res) => {
                res.resume();
                resolve(res.statusCode!);
            });
            req.on("error", reject);
            const piece = "x".repeat(64 * 1024);
            for (let sent = 0; sent < overLimit; sent += piece.length) req.write(piece);
            req.end();
        });
        expect(status).toBe(413);
        expect(upstream.received).toHaveLength(0);
    });

    it("forwards a free endpoint's body within the limit, chunked or not", async () => {
        upstream.received.length = 0;
        const body = JSON.stringify({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: "x".repeat(100_000) }] });
        upstream.handler = (_req, res) => void res.writeHead(200, { "content-type": "application/json" }).end('{"input_tokens":9}');
        expect((await call(main.port, { path: "/anthropic/v1/messages/count_tokens", headers: anthropicHeaders(), body })).status).toBe(200);
        expect(upstream.received[0]).toMatchObject({ path: "/v1/messages/count_tokens", body });
        expect(upstream.received[0].headers["content-length"]).toBe(String(Buffer.byteLength(body)));
    });
});

describe("an upstream echoing secrets in a successful answer", () => {
    const secrets = [
        ["the real Anthropic key", REAL_KEYS.anthropic],
        ["the real OpenAI key", REAL_KEYS.openai],
        ["a registered agent's credential", TOKENS.lisa],
    ] as const;

    it.each(secrets)("%s in a response header is scrubbed", async (_name, secret) => {
        upstream.handler = (_req, res) => void res.writeHead(200, { "content-type": "application/json", "x-echo": `key=${secret}`, "x-list": [secret, "ok"] }).end("{}");
        const res = await call(main.port, { method: "GET", path: "/openai/v1/models", headers: openaiHeaders() });
        expect(res.status).toBe(200);
        expect(res.headers["x-echo"]).toBe("key=[redacted]");
        expect(JSON.stringify(res.headers)).not.toContain(secret);
    });

    it.each(secrets)("%s in a 2xx JSON body is masked, Content-Length still true", async (_name, secret) => {
        const body = JSON.stringify({ id: "c1", model: "gpt-5.1", choices: [{ message: { content: `here: ${secret}` } }], usage: { prompt_tokens: 1, completion_tokens: 1 } });
        upstream.handler = (_req, res) => void res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
        const res = await call(main.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY });
        expect(res.status).toBe(200);
        expect(res.body).not.toContain(secret);
        expect(JSON.parse(res.body).choices[0].message.content).toMatch(/^here: \[redacted\]\**$/);
        expect(Number(res.headers["content-length"])).toBe(Buffer.byteLength(res.body));
    });

    it.each(secrets)("%s split across stream chunks is masked, and the bytes before it are not held back", async (_name, secret) => {
        const half = Math.floor(secret.length / 2);
        const clientHasFirstPart = Promise.withResolvers<void>();
        upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            res.write(anthropicStream()[0]);
            res.write(`event: content_block_delta\ndata: {"text":"before ${secret.slice(0, half)}`);
            // The rest is written only once the client has what came before the secret: a buffering proxy never gets here.
            await Promise.race([clientHasFirstPart.promise, new Promise((_, reject) => setTimeout(() => reject(new Error("the bytes before the secret never reached the client")), 5000))]);
            res.write(`${secret.slice(half)} after"}\n\n`);
            res.end(anthropicStream()[6]);
        };
        const body = await new Promise<string>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: main.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                let text = "";
                res.on("data", (chunk: Buffer) => {
                    text += chunk.toString("latin1");
                    if (text.includes("before ")) clientHasFirstPart.resolve();
                });
                res.on("end", () => resolve(text));
                res.on("error", reject);
            });
            req.on("error", reject);
            req.end(ANTHROPIC_BODY);
        });
        observed.push(body);
        expect(body).not.toContain(secret);
        expect(body).toContain(`"text":"before ${"[redacted]".padEnd(secret.length, "*")} after"`);
        expect(body).toContain("message_stop");
    });
});

describe("operations", () => {
    it("serves metrics and health on the admin listener only", async () => {
        const metrics = await (await fetch(`http://127.0.0.1:${main.adminPort}/metrics`)).text();
        expect(metrics).toMatch(/keyproxy_requests_total\{agent="bart",provider="anthropic",status="2xx"\} \d+/);
        expect(metrics).toMatch(/keyproxy_refusals_total\{agent="unknown",provider="anthropic",reason="missing"\} \d+/);
        expect(metrics).toContain("keyproxy_request_duration_seconds_bucket");
        expect(metrics).toContain("keyproxy_active_streams");
        expect(metrics).toMatch(/keyproxy_registered_agents 2/);
        expect((await fetch(`http://127.0.0.1:${main.adminPort}/healthz`)).status).toBe(200);
    });

    it("writes one JSON access line per request, with agent, provider, route, status, duration and bytes", () => {
        const line = main.logs.map((l) => JSON.parse(l)).find((l) => l.event === "request" && l.status === 200 && l.route === "/v1/messages");
        expect(line).toMatchObject({ service: "key-proxy", agent: "bart", provider: "anthropic", method: "POST", route: "/v1/messages", status: 200 });
        expect(line.duration_ms).toBeGreaterThanOrEqual(0);
        expect(line.bytes_out).toBeGreaterThan(0);
    });

    it("on drain stops accepting and lets in-flight streams finish", async () => {
        const p = await proxy();
        const release = Promise.withResolvers<void>();
        upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            res.write(anthropicStream()[0]);
            await release.promise;
            res.end(anthropicStream()[6]);
        };
        upstream.received.length = 0;
        const inFlight = call(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        await expect.poll(() => upstream.received.length).toBe(1);
        const drained = p.server.drain(5000);
        await expect(send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).rejects.toThrow(/ECONNREFUSED/);
        release.resolve();
        const res = await inFlight;
        expect(res.status).toBe(200);
        expect(res.body).toContain("message_stop");
        await drained;
        expect(p.logs.map((l) => JSON.parse(l)).find((l) => l.event === "drained")).toMatchObject({ cut_streams: 0 });
    });
});

it("has the agents the harness registered", () => expect(AGENTS.map((a) => a.name)).toEqual(["bart", "lisa"]));
