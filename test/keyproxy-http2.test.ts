// KeyProxy's upstream connections over HTTP/2 (`upstreamHttp2`, on by default): what it offers in ALPN, streams
// sharing a connection, exact metering across them, and one stream's reset leaving the others alone. The streaming
// behaviours (lockstep, cancel, backpressure) run over both protocols in keyproxy.test.ts.
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { afterAll, describe, expect, it } from "vitest";
import { ANTHROPIC_BODY, type RunningProxy, anthropicHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream, anthropicStream } from "./support/mockUpstream";
import { testPki } from "./support/tls";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
});

async function proxyTo(upstream: Pick<MockUpstream, "baseUrl">, overrides: Record<string, unknown> = {}): Promise<RunningProxy> {
    const proxy = await startKeyProxy(upstream, overrides);
    cleanups.push(() => proxy.server.close());
    return proxy;
}

async function h2Upstream(): Promise<MockUpstream> {
    const upstream = await new MockUpstream({ http2: true }).start();
    cleanups.push(() => upstream.stop());
    return upstream;
}

const STREAMED = JSON.stringify({ ...JSON.parse(ANTHROPIC_BODY), stream: true });

describe("ALPN", () => {
    /** A TLS listener that records the protocols each client offers, picks the client's first (as some load balancers do), and hangs up. */
    async function alpnRecorder() {
        const offers: string[][] = [];
        const { cert, key } = testPki();
        const server = tls.createServer({ cert, key, ALPNCallback: ({ protocols }) => (offers.push(protocols), protocols[0]) }, (socket) => socket.destroy());
        server.listen(0, "127.0.0.1");
        await once(server, "listening");
        cleanups.push(() => new Promise((resolve) => server.close(resolve)));
        return { baseUrl: `https://localhost:${(server.address() as AddressInfo).port}`, offers };
    }

    it.each<[string, Record<string, unknown>, string[]]>([
        ["by default, HTTP/2 first", {}, ["h2", "http/1.1"]],
        ["with upstreamHttp2 false, HTTP/1.1 only", { upstreamHttp2: false }, ["http/1.1"]],
    ])("offers %s", async (_name, overrides, offered) => {
        const recorder = await alpnRecorder();
        const proxy = await proxyTo(recorder, overrides);
        const response = await send(proxy.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        // The recorder hangs up after the handshake: the agent gets a 502, and the offer is what this test is about.
        expect(response.status).toBe(502);
        expect(recorder.offers.length).toBeGreaterThan(0);
        for (const offer of recorder.offers) expect(offer).toEqual(offered);
    });
});

describe("streams to an upstream that speaks HTTP/2", () => {
    const CONCURRENT = 30;

    /** CONCURRENT metered SSE streams at once, each held open by the upstream until all have started. */
    async function concurrentStreams(upstream: MockUpstream, proxy: RunningProxy) {
        let started = 0;
        const allStarted = Promise.withResolvers<void>();
        upstream.handler = async (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            const [first, ...rest] = anthropicStream();
            res.write(first);
            if (++started === CONCURRENT) allStarted.resolve();
            await allStarted.promise;
            for (const event of rest) res.write(event);
            res.end();
        };
        const responses = await Promise.all(Array.from({ length: CONCURRENT }, () => send(proxy.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: STREAMED })));
        upstream.handler = undefined;
        return responses;
    }

    it.each<[string, Record<string, unknown>, string, (connections: number) => boolean]>([
        ["share one TLS connection (upstreamHttp2 on)", {}, "2.0", (connections) => connections === 1],
        ["each hold their own with upstreamHttp2 false", { upstreamHttp2: false }, "1.1", (connections) => connections >= CONCURRENT],
    ])("%s, and each is metered exactly", async (_name, overrides, httpVersion, connectionsFit) => {
        const upstream = await h2Upstream();
        const proxy = await proxyTo(upstream, overrides);
        // One stream alone first: what one costs.
        expect((await send(proxy.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: STREAMED })).status).toBe(200);
        const one = proxy.server.spend.settled("bart", "total");
        expect(one).toBeGreaterThan(0);

        const responses = await concurrentStreams(upstream, proxy);
        for (const response of responses) {
            expect(response.status).toBe(200);
            expect(response.body).toBe(anthropicStream().join(""));
        }
        expect(connectionsFit(upstream.tlsConnections)).toBe(true);
        expect(new Set(upstream.received.map((r) => r.httpVersion))).toEqual(new Set([httpVersion]));
        expect(proxy.server.spend.settled("bart", "total")).toBeCloseTo(one * (CONCURRENT + 1), 9);
        const metrics = await proxy.server.metrics.registry.metrics();
        expect(metrics).toMatch(/^keyproxy_active_streams\{agent="bart",provider="anthropic"\} 0$/m);
    });

    it("paused agents hold back only their own streams: another agent's, on the same upstream connection, still flows", async () => {
        const upstream = await h2Upstream();
        const proxy = await proxyTo(upstream);
        const chunk = "x".repeat(64 * 1024);
        const CHUNKS = 100;
        /** Three stalled streams' windows (256 KiB each, undici's) are past the connection's (512 KiB): were it not replenished, the next stream would stall. */
        const SLOW = 3;
        let written = 0;
        let slowDone = 0;
        const allSlowDone = Promise.withResolvers<void>();
        upstream.handler = async (req, res) => {
            if (req.url?.startsWith("/v1/models")) {
                res.writeHead(200, { "content-type": "application/octet-stream" });
                for (let i = 0; i < CHUNKS; i++) {
                    written++;
                    if (!res.write(chunk)) await once(res, "drain");
                }
                res.end();
                if (++slowDone === SLOW) allSlowDone.resolve();
                return;
            }
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of anthropicStream()) res.write(event);
            res.end();
        };
        const pausedReader = () =>
            new Promise<http.IncomingMessage>((resolve) => {
                const req = http.request({ host: "127.0.0.1", port: proxy.port, method: "GET", path: "/anthropic/v1/models", headers: anthropicHeaders(), agent: false }, (res) => {
                    res.once("data", () => {
                        res.pause();
                        resolve(res);
                    });
                });
                req.end();
            });
        const slow = await Promise.all(Array.from({ length: SLOW }, pausedReader));
        for (let i = 0; i < 3; i++) {
            const other = await send(proxy.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: STREAMED });
            expect(other.body).toBe(anthropicStream().join(""));
        }
        expect(upstream.tlsConnections).toBe(1);
        // With their readers paused, only each stream's window and the sockets' buffers are in flight.
        expect(written).toBeLessThan((SLOW * CHUNKS) / 2);
        const read = slow.map((res) => {
            let bytes = 0;
            res.on("data", (c: Buffer) => (bytes += c.length));
            res.resume();
            return once(res, "end").then(() => bytes);
        });
        await allSlowDone.promise;
        // Each had its first chunk's bytes before it paused; the rest arrive once it reads again.
        for (const bytes of await Promise.all(read)) expect(bytes).toBeGreaterThan((CHUNKS - 2) * chunk.length);
    });

    it.each<[string, boolean, boolean]>([
        // Over HTTP/2 an end without the final event cannot be told from a reset (undici reports both as an end).
        ["HTTP/2: cut", true, false],
        // Over HTTP/1.1 a cut chunked body is an error: an end is an end, and the agent's stream ends too.
        ["HTTP/1.1: ended", false, true],
    ])("a stream the upstream ends without its final event: %s", async (_name, speaksHttp2, ended) => {
        const upstream = speaksHttp2 ? await h2Upstream() : await new MockUpstream().start();
        if (!speaksHttp2) cleanups.push(() => upstream.stop());
        const proxy = await proxyTo(upstream);
        upstream.handler = (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of anthropicStream().slice(0, 3)) res.write(event);
            res.end();
        };
        const outcome = await new Promise<boolean>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: proxy.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                let finished = false;
                res.on("data", () => undefined);
                res.on("end", () => (finished = res.complete));
                res.on("close", () => resolve(finished));
                res.on("error", () => undefined);
            });
            req.on("error", reject);
            req.end(STREAMED);
        });
        expect(outcome).toBe(ended);
        // Billed for what streamed either way: never free once output showed.
        expect(proxy.server.spend.settled("bart", "total")).toBeGreaterThan(0);
    });

    it("cuts only the agent whose stream the upstream resets; the streams sharing its connection finish", async () => {
        const upstream = await h2Upstream();
        const proxy = await proxyTo(upstream);
        const resetSent = Promise.withResolvers<void>();
        const bothStarted = Promise.withResolvers<void>();
        let started = 0;
        upstream.handler = async (req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            const events = anthropicStream();
            res.write(events[0]);
            if (++started === 2) bothStarted.resolve();
            await bothStarted.promise;
            if (JSON.parse((upstream.received.find((r) => r.headers === req.headers)?.body ?? "{}")).metadata?.user_id === "reset") {
                (res as unknown as http2.Http2ServerResponse).stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
                resetSent.resolve();
                return;
            }
            await resetSent.promise;
            for (const event of events.slice(1)) res.write(event);
            res.end();
        };
        const body = (user: string) => JSON.stringify({ ...JSON.parse(STREAMED), metadata: { user_id: user } });
        const cut = new Promise<{ status: number; ended: boolean }>((resolve, reject) => {
            const req = http.request({ host: "127.0.0.1", port: proxy.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                let ended = false;
                res.on("data", () => undefined);
                res.on("end", () => (ended = true));
                res.on("close", () => resolve({ status: res.statusCode!, ended: ended && res.complete }));
                res.on("error", () => undefined);
            });
            req.on("error", reject);
            req.end(body("reset"));
        });
        const whole = send(proxy.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: body("keep") });
        // The reset stream's agent sees a truncated stream; the other, on the same upstream connection, its whole answer.
        expect(await cut).toEqual({ status: 200, ended: false });
        const other = await whole;
        expect(other.status).toBe(200);
        expect(other.body).toBe(anthropicStream().join(""));
        expect(upstream.tlsConnections).toBe(1);
        await expect.poll(() => proxy.logs.some((l) => l.includes('"outcome":"upstream_error"'))).toBe(true);
        const metrics = await proxy.server.metrics.registry.metrics();
        expect(metrics).toMatch(/^keyproxy_active_streams\{agent="bart",provider="anthropic"\} 0$/m);
        expect(metrics).toMatch(/^keyproxy_reservations_outstanding\{agent="bart"\} 0$/m);
    });
});
