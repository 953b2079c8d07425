// KeyProxy against a failing upstream, over real sockets on loopback: every fault ends in a bounded, clear outcome
// for the agent, leaves nothing open, and is billed for what streamed (never nothing once output showed, never past
// the reservation).
import { rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, describe, it } from "vitest";
import { DEFAULT_PRICES, maxCostMicros } from "../proxy-image/src/pricing";
import { ANTHROPIC_BODY, OPENAI_BODY, type RunningProxy, anthropicHeaders, openaiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { type Handler, MockUpstream, anthropicStream, openaiStream, sse } from "./support/mockUpstream";

/**
 * Small on purpose. undici checks connect, first-byte and idle timeouts on a 0.5 s tick, so each of these fires
 * 0.5-1 s after it starts, whatever the configured value below a second.
 */
const LIMITS = { connectTimeoutMs: 100, headersTimeoutMs: 100, bodyIdleTimeoutMs: 100, maxConcurrentPerAgent: 1 };

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
});

type Provider = "anthropic" | "openai";
const ROUTES: Record<Provider, { path: string; headers: Record<string, string>; body: string; model: string }> = {
    anthropic: { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY, model: "claude-sonnet-4-5" },
    openai: { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY, model: "gpt-5.1" },
};
const streamed = (body: string) => JSON.stringify({ ...JSON.parse(body), stream: true });

/** Output well past the request's 64-token cap at 4 bytes a token: only what the proxy caps stays in the reservation. */
const longDeltas = Array.from({ length: 6 }, (_, i) => sse("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: `part ${i} `.repeat(12) } }));
const anthropicOutput = [...anthropicStream().slice(0, 3), ...longDeltas].join("");
const openaiOutput = openaiStream().slice(0, 2).join("");
const JSON_ANSWER = JSON.stringify({ id: "msg_1", type: "message", model: "claude-sonnet-4-5", content: [{ type: "text", text: "Hello ".repeat(50) }], usage: { input_tokens: 12, output_tokens: 60 } });

/** How the upstream fails its request: `showed` resolves once the agent has received the response's first body bytes. */
type Fault = (req: http.IncomingMessage, res: http.ServerResponse, showed: Promise<void>) => void | Promise<void>;

const holdOpen = (res: http.ServerResponse) => new Promise<void>((resolve) => res.on("close", resolve));
const sendHeadThen = (contentType: string, bytes: string, then: "stall" | "reset", declaredLength?: number): Fault => async (req, res, showed) => {
    res.writeHead(200, { "content-type": contentType, ...(declaredLength ? { "content-length": declaredLength } : {}) });
    res.write(bytes);
    if (then === "stall") return holdOpen(res);
    await showed;
    req.socket.destroy();
};

interface Case {
    fault: string;
    provider: Provider;
    stream: boolean;
    /** undefined: a TCP listener that accepts and never speaks TLS. */
    upstream: Fault | undefined;
    status: number;
    /** Whether the agent sees a cut connection after the head (a truncated stream) rather than a whole answer. */
    cut: boolean;
    outcome: string;
    billed: "nothing" | "what streamed" | "the reservation";
}

const CASES: Case[] = [
    { fault: "accepts TCP, never completes TLS", provider: "anthropic", stream: true, upstream: undefined, status: 504, cut: false, outcome: "timeout", billed: "nothing" },
    { fault: "reads the request, never sends a head", provider: "anthropic", stream: true, upstream: (_req, res) => holdOpen(res), status: 504, cut: false, outcome: "timeout", billed: "nothing" },
    { fault: "resets before the head", provider: "openai", stream: false, upstream: (req) => void req.socket.destroy(), status: 502, cut: false, outcome: "upstream_error", billed: "nothing" },
    { fault: "stalls mid-stream (Anthropic SSE)", provider: "anthropic", stream: true, upstream: sendHeadThen("text/event-stream", anthropicOutput, "stall"), status: 200, cut: true, outcome: "timeout", billed: "what streamed" },
    { fault: "stalls mid-stream (OpenAI chat SSE, usage not yet sent)", provider: "openai", stream: true, upstream: sendHeadThen("text/event-stream", openaiOutput, "stall"), status: 200, cut: true, outcome: "timeout", billed: "what streamed" },
    { fault: "stalls mid-body (plain JSON)", provider: "anthropic", stream: false, upstream: sendHeadThen("application/json", JSON_ANSWER.slice(0, 100), "stall", JSON_ANSWER.length), status: 200, cut: true, outcome: "timeout", billed: "the reservation" },
    { fault: "resets mid-stream (Anthropic SSE)", provider: "anthropic", stream: true, upstream: sendHeadThen("text/event-stream", anthropicOutput, "reset"), status: 200, cut: true, outcome: "upstream_error", billed: "what streamed" },
    { fault: "resets mid-body (plain JSON)", provider: "anthropic", stream: false, upstream: sendHeadThen("application/json", JSON_ANSWER.slice(0, 100), "reset", JSON_ANSWER.length), status: 200, cut: true, outcome: "upstream_error", billed: "the reservation" },
];

/** An upstream whose first request meets `fault`, and whose later ones get the mock API's answers. */
async function faultyUpstream(fault: Fault | undefined, showed: Promise<void>) {
    const upstreamClosed = Promise.withResolvers<void>();
    if (!fault) {
        const sockets = new Set<net.Socket>();
        const server = net.createServer((socket) => {
            sockets.add(socket);
            // Read (and drop) the TLS hello, so the end of the connection is seen.
            socket.resume();
            socket.on("close", () => upstreamClosed.resolve());
        });
        server.listen(0, "127.0.0.1");
        await new Promise((resolve) => server.once("listening", resolve));
        cleanups.push(() => new Promise((resolve) => {
            for (const socket of sockets) socket.destroy();
            server.close(resolve);
        }));
        return { baseUrl: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, upstreamClosed: upstreamClosed.promise, received: () => [] as string[] };
    }
    const mock = await new MockUpstream().start();
    cleanups.push(() => mock.stop());
    const handler: Handler = (req, res) => {
        mock.handler = undefined;
        req.socket.on("close", () => upstreamClosed.resolve());
        return fault(req, res, showed);
    };
    mock.handler = handler;
    return { baseUrl: mock.baseUrl, upstreamClosed: upstreamClosed.promise, received: () => mock.received.map((r) => r.body), mock };
}

/** One request; resolves once the response ended (`cut` false) or the connection was cut under it (`cut` true). */
function request(port: number, route: (typeof ROUTES)[Provider], body: string, onFirstBytes: () => void) {
    return new Promise<{ status: number; body: string; cut: boolean }>((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, method: "POST", path: route.path, headers: route.headers, agent: false }, (res) => {
            let text = "";
            res.on("data", (chunk: Buffer) => {
                text += chunk.toString("utf8");
                onFirstBytes();
            });
            res.on("end", () => resolve({ status: res.statusCode!, body: text, cut: false }));
            res.on("error", () => resolve({ status: res.statusCode!, body: text, cut: true }));
        });
        req.on("error", reject);
        req.end(body);
    });
}

const gauge = (metrics: string, name: string, labels: string) => Number(new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, "m").exec(metrics)?.[1] ?? Number.NaN);

describe.concurrent("an upstream that fails", () => {
    it.for(CASES)("$fault: $status, cut after the head: $cut, billed $billed; nothing left open", async (c, { expect }) => {
        const showed = Promise.withResolvers<void>();
        const faulty = await faultyUpstream(c.upstream, showed.promise);
        const healthy = await new MockUpstream().start();
        cleanups.push(() => healthy.stop());
        const upstreams = {
            anthropic: { baseUrl: c.provider === "anthropic" ? faulty.baseUrl : healthy.baseUrl },
            openai: { baseUrl: c.provider === "openai" ? faulty.baseUrl : healthy.baseUrl },
        };
        const p: RunningProxy = await startKeyProxy(healthy, { upstreams, limits: LIMITS });
        cleanups.push(async () => {
            await p.server.close();
            for (const dir of [p.config.registryDir, path.dirname(p.config.metering.ledgerFile)]) rmSync(dir, { recursive: true, force: true });
        });
        const route = ROUTES[c.provider];
        const body = c.stream ? streamed(route.body) : route.body;

        const started = performance.now();
        const answer = await request(p.port, route, body, () => showed.resolve());
        expect({ status: answer.status, cut: answer.cut }).toEqual({ status: c.status, cut: c.cut });
        expect(performance.now() - started).toBeLessThan(5000);
        if (c.status >= 500) expect(JSON.parse(answer.body)).toMatchObject(c.provider === "anthropic" ? { type: "error", error: { type: "api_error" } } : { error: { type: "server_error" } });
        if (c.cut) expect(answer.body.length).toBeGreaterThan(0);
        if (c.stream && c.cut) expect(answer.body).not.toMatch(/message_stop|\[DONE\]/);

        // Nothing left open: the upstream connection, the stream gauge, the reservation, the agent's one slot.
        await faulty.upstreamClosed;
        const metrics = await p.server.metrics.registry.metrics();
        expect(gauge(metrics, "keyproxy_active_streams", `agent="bart",provider="${c.provider}"`)).toBe(0);
        expect(gauge(metrics, "keyproxy_reservations_outstanding", `agent="bart"`)).toBe(0);
        const line = p.logs.map((l) => JSON.parse(l)).find((l) => l.event === "request");
        expect(line).toMatchObject({ agent: "bart", status: c.status, outcome: c.outcome });

        const billedUsd = p.server.spend.settled("bart", "total");
        const sentUpstream = faulty.received();
        const reservationUsd = sentUpstream.length === 0 ? 0 : maxCostMicros(Buffer.byteLength(sentUpstream[0]), 64, DEFAULT_PRICES[route.model]) / 1e6;
        if (c.billed === "nothing") expect(billedUsd).toBe(0);
        if (c.billed === "what streamed") {
            expect(billedUsd).toBeGreaterThan(0);
            expect(billedUsd).toBeLessThanOrEqual(reservationUsd);
        }
        if (c.billed === "the reservation") expect(billedUsd).toBeCloseTo(reservationUsd, 9);
        expect(p.logs.some((l) => l.includes("settled_above_reservation"))).toBe(false);

        const next = await send(p.port, { method: "GET", path: "/openai/v1/models", headers: openaiHeaders() });
        expect(next.status).toBe(200);
    });
});
