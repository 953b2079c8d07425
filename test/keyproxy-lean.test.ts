// KeyProxy's lean request path: the admission decision, the batched log that drops and counts instead of growing,
// heads sent with their bodies (only SSE flushes a head alone), and the per-connection credential cache.
import { EventEmitter } from "node:events";
import http from "node:http";
import type net from "node:net";
import { Histogram, Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Admission, type AdmissionRequest, admit } from "../proxy-image/src/admission";
import { runtimeConfigSchema } from "../proxy-image/src/config";
import { keyProxyMetrics, streamMetrics } from "../proxy-image/src/metrics";
import { builtInProvider } from "../providers/index";
import { type LogFields, LogBuffer, jsonLogger } from "../runtime/log";
import { AGENTS, ANTHROPIC_BODY, type RunningProxy, TOKENS, anthropicHeaders, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream, anthropicStream } from "./support/mockUpstream";

const LIMITS = runtimeConfigSchema.parse({ upstreams: {}, limits: { maxConcurrentPerAgent: 2, maxBodyBytes: 1000, maxFreeBodyBytes: 10 } }).limits;
const BART = { ok: true as const, agent: AGENTS[0] };
const base: AdmissionRequest = { provider: builtInProvider("anthropic")!, method: "POST", route: "/v1/messages", auth: BART, contentLength: "100", active: 0 };

describe("admission (phase 1)", () => {
    it.each<[string, Partial<AdmissionRequest>, Partial<Admission>]>([
        ["a metered request within every limit", {}, { ok: true, endpoint: "anthropic-messages", bodyLimit: 1000 }],
        ["a free endpoint, with its smaller body limit", { method: "GET", route: "/v1/models", contentLength: undefined }, { ok: true, endpoint: "free", bodyLimit: 10 }],
        ["no credential", { auth: { ok: false, reason: "missing" } }, { ok: false, kind: "authentication", reason: "missing" }],
        ["a credential from the wrong network", { auth: { ok: false, reason: "wrong_network", credentialOf: "bart" } }, { ok: false, kind: "authentication", reason: "wrong_network" }],
        ["an endpoint outside the allowlist", { route: "/v1/files" }, { ok: false, kind: "forbidden", reason: "endpoint_not_allowed" }],
        ["a declared body over the metered limit", { contentLength: "1001" }, { ok: false, kind: "too_large", reason: "body_size" }],
        ["a declared body over the free limit", { method: "POST", route: "/v1/messages/count_tokens", contentLength: "11" }, { ok: false, kind: "too_large", reason: "body_size" }],
        ["an agent at its concurrency limit", { active: 2 }, { ok: false, kind: "rate_limited", reason: "concurrency" }],
        ["authentication before anything else", { auth: { ok: false, reason: "unknown" }, route: "/v1/files", active: 99 }, { ok: false, kind: "authentication" }],
    ])("%s", (_case, change, expected) => {
        expect(admit({ ...base, ...change }, LIMITS)).toMatchObject(expected);
    });
});

describe("jsonLogger", () => {
    it.each<[string, string, LogFields | undefined, Record<string, unknown>]>([
        ["no fields", "listening", undefined, {}],
        ["empty fields", "listening", {}, {}],
        ["an access line's fields, in order", "request", { agent: "bart", status: 200, cost_usd: 0.000105, model: null }, { agent: "bart", status: 200, cost_usd: 0.000105, model: null }],
        ["undefined fields are left out", "request", { agent: "bart", reason: undefined }, { agent: "bart" }],
        ["quotes, backslashes and line breaks stay inside their strings", 'odd "event"\n', { route: '/v1/"x"\\\n', note: "a\nb" }, { route: '/v1/"x"\\\n', note: "a\nb" }],
    ])("%s: one JSON line, time, service and event first", (_case, event, fields, expected) => {
        const lines: string[] = [];
        jsonLogger("key-proxy", (line) => lines.push(line))(event, fields);
        expect(lines).toHaveLength(1);
        expect(lines[0].endsWith("\n")).toBe(true);
        expect(lines[0].slice(0, -1)).not.toContain("\n");
        const parsed = JSON.parse(lines[0]);
        expect(Object.keys(parsed)).toEqual(["ts", "service", "event", ...Object.keys(expected)]);
        expect(parsed).toEqual({ ts: parsed.ts, service: "key-proxy", event, ...expected });
        expect(new Date(parsed.ts).toISOString()).toBe(parsed.ts);
        expect(Math.abs(Date.parse(parsed.ts) - Date.now())).toBeLessThan(60_000);
    });
});

describe("tallied metrics", () => {
    const series = async (text: Promise<string>, name: string) => (await text).split("\n").filter((line) => line.startsWith(`${name}{`));

    it("a scrape sees every count so far, cumulative over scrapes; a series nothing touched is absent", async () => {
        const metrics = keyProxyMetrics();
        const bart = streamMetrics(metrics, "bart", "anthropic");
        streamMetrics(metrics, "lisa", "anthropic"); // identified, never counted
        bart.requests(200).inc();
        bart.requests(201).inc();
        bart.requests(502).inc();
        bart.bytesOut.inc(100);
        bart.active.inc();
        bart.active.inc();
        expect(await series(metrics.registry.metrics(), "keyproxy_requests_total")).toEqual([
            'keyproxy_requests_total{agent="bart",provider="anthropic",status="2xx"} 2',
            'keyproxy_requests_total{agent="bart",provider="anthropic",status="5xx"} 1',
        ]);
        bart.requests(204).inc();
        bart.bytesOut.inc(50);
        bart.active.dec();
        const text = metrics.registry.metrics();
        expect(await series(text, "keyproxy_requests_total")).toContain('keyproxy_requests_total{agent="bart",provider="anthropic",status="2xx"} 3');
        expect(await series(text, "keyproxy_response_bytes_total")).toEqual(['keyproxy_response_bytes_total{agent="bart",provider="anthropic"} 150']);
        expect(await series(text, "keyproxy_active_streams")).toEqual(['keyproxy_active_streams{agent="bart",provider="anthropic"} 1']);
        expect(await series(text, "keyproxy_request_bytes_total")).toEqual([]);
    });

    it("a tallied histogram's exposition is prom-client's own for the same observations, bounds and overflow included", async () => {
        const metrics = keyProxyMetrics();
        const referenceRegistry = new Registry();
        const reference = new Histogram({ name: "keyproxy_request_duration_seconds", help: "reference", labelNames: ["agent", "provider"], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600], registers: [referenceRegistry] });
        const bart = streamMetrics(metrics, "bart", "anthropic");
        streamMetrics(metrics, "lisa", "anthropic"); // identified, never observed: absent, as in prom-client
        for (const seconds of [0, 0.004, 0.005, 0.0051, 0.3, 1, 599.9, 600, 601, 7200]) {
            bart.duration.observe(seconds);
            reference.observe({ agent: "bart", provider: "anthropic" }, seconds);
        }
        const lines = (text: string) => text.split("\n").filter((line) => line.startsWith("keyproxy_request_duration_seconds_"));
        const expected = lines(await referenceRegistry.metrics());
        expect(expected).toHaveLength(16 + 3);
        expect(lines(await metrics.registry.metrics())).toEqual(expected);
    });

    it("spend is tallied in micro-dollars and read as USD", async () => {
        const metrics = keyProxyMetrics();
        for (let i = 0; i < 10; i++) metrics.spend.tally("bart", "anthropic", "claude-sonnet-4-5").inc(111);
        expect(await series(metrics.registry.metrics(), "keyproxy_spend_usd_total")).toEqual(['keyproxy_spend_usd_total{agent="bart",provider="anthropic",model="claude-sonnet-4-5"} 0.00111']);
    });
});

/** A stand-in for stdout: records writes, and reports itself full while `full` is set. */
class FakeOutput extends EventEmitter {
    writes: string[] = [];
    full = false;
    write(text: string) {
        this.writes.push(text);
        return !this.full;
    }
}

describe("LogBuffer", () => {
    const line = (n: number) => `{"n":${n}}\n`; // 9 characters
    const run = (opts: { max: number; full: boolean; lines: number }) => {
        const output = new FakeOutput();
        output.full = opts.full;
        const deferred: (() => void)[] = [];
        const buffer = new LogBuffer(output, opts.max, (flush) => deferred.push(flush));
        // One turn of the loop: the first line goes out in the next flush, the others wait behind a full output.
        buffer.sink(line(0));
        deferred.shift()!();
        for (let n = 1; n < opts.lines; n++) buffer.sink(line(n));
        for (const flush of deferred.splice(0)) flush();
        return { output, buffer };
    };

    it.each([
        ["lines in one turn go out in one write", { max: 1000, full: false, lines: 1 }, 1, 0],
        ["a blocked output holds lines up to the cap, then drops and counts the rest", { max: 45, full: true, lines: 11 }, 1, 5],
        ["nothing is dropped while the held lines fit", { max: 90, full: true, lines: 11 }, 1, 0],
    ])("%s", (_case, opts, writes, dropped) => {
        const { output, buffer } = run(opts);
        expect(output.writes).toHaveLength(writes);
        expect(buffer.dropped).toBe(dropped);
    });

    it("writes what it held, in order and in one write, once the output drains", () => {
        const { output, buffer } = run({ max: 45, full: true, lines: 11 });
        output.full = false;
        output.emit("drain");
        expect(output.writes).toEqual([line(0), [1, 2, 3, 4, 5].map(line).join("")]);
        buffer.sink(line(11));
        expect(buffer.dropped).toBe(5);
    });

    it("batches every line of a turn into one write", () => {
        const output = new FakeOutput();
        const deferred: (() => void)[] = [];
        const buffer = new LogBuffer(output, 1000, (flush) => deferred.push(flush));
        for (let n = 0; n < 5; n++) buffer.sink(line(n));
        expect(deferred).toHaveLength(1);
        deferred[0]();
        expect(output.writes).toEqual([[0, 1, 2, 3, 4].map(line).join("")]);
    });
});

describe("through the proxy", () => {
    const upstream = new MockUpstream();
    let p: RunningProxy;
    /** Every write KeyProxy makes to its client sockets, as text. */
    const writes: string[] = [];
    beforeAll(async () => {
        await upstream.start();
        p = await startKeyProxy(upstream);
        (Reflect.get(p.server, "server") as http.Server).on("connection", (socket: net.Socket) => {
            const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
            socket.write = ((...args: unknown[]) => {
                writes.push(String(args[0]));
                return write(...args);
            }) as typeof socket.write;
        });
    });
    afterEach(() => {
        upstream.handler = undefined;
        writes.length = 0;
        p.server.setAgents(AGENTS);
    });
    afterAll(async () => {
        await p.server.close();
        await upstream.stop();
    });

    it.each([
        ["a JSON answer: the head goes out with its body, in one write", "application/json", true],
        ["an SSE stream: the head goes out alone, at once", "text/event-stream", false],
    ])("%s", async (_case, contentType, headWithBody) => {
        upstream.handler = (_req, res) => {
            res.writeHead(200, { "content-type": contentType });
            if (contentType === "application/json") return void res.end(JSON.stringify({ model: "claude-sonnet-4-5", content: [], usage: { input_tokens: 1, output_tokens: 1 } }));
            for (const event of anthropicStream()) res.write(event);
            res.end();
        };
        const response = await new Promise<string>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: p.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                let body = "";
                res.on("data", (chunk) => (body += chunk));
                res.on("end", () => resolve(body));
            });
            req.on("error", reject);
            req.end(ANTHROPIC_BODY);
        });
        expect(response.length).toBeGreaterThan(0);
        expect(writes[0]).toMatch(/^HTTP\/1\.1 200/);
        expect(writes[0].includes("\r\n\r\n") && writes[0].split("\r\n\r\n")[1].length > 0).toBe(headWithBody);
    });

    it.each([
        ["the same credential again", () => TOKENS.bart, 200],
        ["another agent's credential from the wrong network", () => TOKENS.lisa, 401],
        ["an unknown credential", () => `${TOKENS.bart.slice(0, -1)}x`, 401],
        ["the same credential after its agent left the registry", () => (p.server.setAgents([AGENTS[1]]), TOKENS.bart), 401],
    ])("checks every request of a keep-alive connection: %s answers %i", async (_case, second, status) => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        const ask = (token: string) =>
            new Promise<{ status: number; socket: net.Socket }>((resolve, reject) => {
                const req = http.request({ host: "127.0.0.1", port: p.port, method: "GET", path: "/anthropic/v1/models", headers: { "x-api-key": token }, agent }, (res) => {
                    res.resume();
                    res.on("end", () => resolve({ status: res.statusCode!, socket: req.socket! }));
                });
                req.on("error", reject);
                req.end();
            });
        const first = await ask(TOKENS.bart);
        expect(first.status).toBe(200);
        const next = await ask(second());
        expect(next.socket).toBe(first.socket);
        expect(next.status).toBe(status);
        agent.destroy();
    });
});
