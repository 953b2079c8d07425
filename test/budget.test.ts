// Metering and budgets through the running proxy, against the mock upstream.
import http from "node:http";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AgentEntry } from "../proxy-image/src/policy";
import { AGENTS, ANTHROPIC_BODY, OPENAI_BODY, type RunningProxy, TOKENS, anthropicHeaders, openaiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { EMBEDDING_TOKENS_PER_INPUT, MockUpstream, anthropicStream, sse } from "./support/mockUpstream";
import { tempDir } from "./support/tempDirs";

const upstream = new MockUpstream();
const running: RunningProxy[] = [];
beforeAll(async () => {
    await upstream.start();
});
afterEach(() => {
    upstream.handler = undefined;
});
afterAll(async () => {
    for (const p of running) await p.server.close();
    await upstream.stop();
});

async function proxyWith(budget: AgentEntry["budget"], overrides: Record<string, unknown> = {}, now?: () => Date) {
    const p = await startKeyProxy(upstream, { limits: { maxConcurrentPerAgent: 200 }, ...overrides }, true, now);
    p.server.setAgents([{ ...AGENTS[0], budget }, AGENTS[1]]);
    running.push(p);
    return p;
}

const anthropicMessage = (maxTokens: number, stream = false) => JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: maxTokens, stream, messages: [{ role: "user", content: "hi" }] });

/** The worst case for a budget: every response uses its whole output cap. */
function spendEverything(delayMs = 30) {
    upstream.handler = (_req, res, body) => {
        const { model, max_tokens } = JSON.parse(body);
        setTimeout(() => {
            res.writeHead(200, { "content-type": "application/json" });
            res.end(JSON.stringify({ id: "m", type: "message", model, content: [], usage: { input_tokens: 8, output_tokens: max_tokens } }));
        }, delayMs);
    };
}

describe("budget refusals", () => {
    it("answers 429 budget_exceeded in Anthropic's shape, without calling upstream", async () => {
        const p = await proxyWith({ dailyUsd: 0.0001 });
        upstream.received.length = 0;
        const res = await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        expect(res.status).toBe(429);
        expect(JSON.parse(res.body)).toEqual({ type: "error", error: { type: "budget_exceeded", message: "this agent's spend budget does not cover this request" } });
        expect(upstream.received).toHaveLength(0);
    });

    it("answers 429 budget_exceeded in OpenAI's shape", async () => {
        const p = await proxyWith({ monthlyUsd: 0.0001 });
        const res = await send(p.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: OPENAI_BODY });
        expect(res.status).toBe(429);
        expect(JSON.parse(res.body).error).toMatchObject({ type: "budget_exceeded", code: "budget_exceeded" });
        const metrics = await p.server.metrics.registry.metrics();
        expect(metrics).toMatch(/keyproxy_refusals_total\{agent="bart",provider="openai",reason="budget_exceeded"\} 1/);
    });

    it.each([
        ["/openai/v1/images/generations", '{"model":"gpt-image-1","prompt":"x"}'],
        ["/openai/v1/audio/speech", '{"model":"tts-1","input":"x"}'],
        ["/openai/v1/batches", '{"input_file_id":"f"}'],
    ])("refuses %s, which it cannot meter (403), so no budget can be bypassed", async (path, body) => {
        const p = await proxyWith({ totalUsd: 10 });
        upstream.received.length = 0;
        const res = await send(p.port, { path, headers: openaiHeaders(), body });
        expect(res.status).toBe(403);
        expect(JSON.parse(res.body).error.code).toBe("endpoint_not_allowed");
        expect(upstream.received).toHaveLength(0);
    });
});

describe("embeddings", () => {
    const inputs = Array.from({ length: 100 }, (_, i) => `memory chunk ${i}`);
    const tokens = inputs.length * EMBEDDING_TOKENS_PER_INPUT;
    const embeddingsBody = (model: string, input: unknown = inputs) => JSON.stringify({ model, input, encoding_format: "base64" });

    describe.each<[string, number, string]>([
        ["text-embedding-3-small", 0.02, "text-embedding-3-small"],
        ["text-embedding-3-large", 0.13, "text-embedding-3-large"],
        ["text-embedding-ada-002", 0.1, "text-embedding-ada-002"],
        ["embedding-model-of-tomorrow", 15, "other"],
    ])("%s", (model, usdPerMillion, modelLabel) => {
        const cost = Math.ceil(tokens * usdPerMillion) / 1e6;

        it("is forwarded unchanged and settled from usage.prompt_tokens at the model's input price, in metrics and ledger", async () => {
            const p = await proxyWith({ totalUsd: 1 });
            upstream.received.length = 0;
            const body = embeddingsBody(model);
            const res = await send(p.port, { path: "/openai/v1/embeddings", headers: openaiHeaders(), body });
            expect(res.status).toBe(200);
            expect(JSON.parse(res.body).data).toHaveLength(inputs.length);
            expect(upstream.received[0]).toMatchObject({ path: "/v1/embeddings", body });
            expect(p.server.spend.settled("bart", "total")).toBeCloseTo(cost, 9);
            const metrics = await p.server.metrics.registry.metrics();
            expect(metrics).toContain(`keyproxy_tokens_total{agent="bart",provider="openai",model="${modelLabel}",kind="input"} ${tokens}`);
            expect(metrics).not.toContain(`model="${modelLabel}",kind="output"`);
            expect(metrics).toContain(`keyproxy_spend_usd_total{agent="bart",provider="openai",model="${modelLabel}"} ${cost}`);
            await p.server.close();
            const restarted = await proxyWith({ totalUsd: 1 }, { metering: { ledgerFile: p.config.metering.ledgerFile } });
            expect(restarted.server.spend.settled("bart", "total")).toBeCloseTo(cost, 9);
        });

        it("is refused with 429 budget_exceeded, upstream not called, when the input bytes' bound does not fit", async () => {
            const body = embeddingsBody(model);
            // The bound: every request byte an input token at the dearest input-side price; one micro-dollar short of it.
            const dearest = modelLabel === "other" ? 30 : usdPerMillion;
            const p = await proxyWith({ dailyUsd: (Math.ceil(Buffer.byteLength(body) * dearest) - 1) / 1e6 });
            upstream.received.length = 0;
            const res = await send(p.port, { path: "/openai/v1/embeddings", headers: openaiHeaders(), body });
            expect(res.status).toBe(429);
            expect(JSON.parse(res.body).error).toMatchObject({ type: "budget_exceeded", code: "budget_exceeded" });
            expect(upstream.received).toHaveLength(0);
            const fits = await proxyWith({ dailyUsd: Math.ceil(Buffer.byteLength(body) * dearest) / 1e6 });
            expect((await send(fits.port, { path: "/openai/v1/embeddings", headers: openaiHeaders(), body })).status).toBe(200);
        });
    });

    it("refuses a body without input (400), before any reservation or upstream call", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        upstream.received.length = 0;
        const res = await send(p.port, { path: "/openai/v1/embeddings", headers: openaiHeaders(), body: '{"model":"text-embedding-3-small"}' });
        expect(res.status).toBe(400);
        expect(upstream.received).toHaveLength(0);
    });

    it("bills a success whose usage cannot be read at its full reservation", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        upstream.handler = (_req, res) => void res.writeHead(200, { "content-type": "application/json" }).end('{"object":"list","data":[]}');
        const body = embeddingsBody("text-embedding-3-small", "x");
        await send(p.port, { path: "/openai/v1/embeddings", headers: openaiHeaders(), body });
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(Math.ceil(Buffer.byteLength(body) * 0.02) / 1e6, 9);
        expect(p.logs.some((l) => l.includes("billed at the reservation"))).toBe(true);
    });
});

describe("zero overspend under concurrency", () => {
    it("never settles more than the budget, however many requests race for it", async () => {
        const p = await proxyWith({ totalUsd: 0.05 });
        spendEverything();
        const results = await Promise.all(
            Array.from({ length: 60 }, () => send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: anthropicMessage(500) })),
        );
        const ok = results.filter((r) => r.status === 200).length;
        const refused = results.filter((r) => r.status === 429).length;
        expect(ok + refused).toBe(60);
        const settled = p.server.spend.settled("bart", "total");
        // Each admitted request costs 8x$3/M + 500x$15/M = $0.007524; the budget holds six of them.
        expect(ok).toBeGreaterThanOrEqual(5);
        expect(settled).toBeCloseTo(ok * 0.007524, 9);
        expect(settled).toBeLessThanOrEqual(0.05);
        // And the budget is all but used: not even one more reservation fits.
        const another = await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: anthropicMessage(500) });
        expect(another.status).toBe(429);
        console.log(`60 concurrent requests against $0.05: ${ok} admitted, ${refused} refused, $${settled.toFixed(6)} settled`);
    });
});

describe("windows", () => {
    it("resets a daily budget at midnight in the configured time zone", async () => {
        let now = new Date("2026-11-22T22:30:00Z"); // 23:30 in Berlin
        const p = await proxyWith({ dailyUsd: 0.01 }, { metering: { timeZone: "Europe/Berlin", ledgerFile: path.join(tempDir("ledger-window"), "ledger.log") } }, () => now);
        spendEverything(0);
        const ask = async () => (await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: anthropicMessage(500) })).status;
        expect(await ask()).toBe(200);
        expect(await ask()).toBe(429);
        now = new Date("2026-11-22T23:00:01Z"); // 00:00:01 in Berlin, next day
        expect(await ask()).toBe(200);
        expect(p.server.spend.settled("bart", "day", new Date("2026-11-22T12:00:00Z"))).toBeCloseTo(0.007524, 9);
        expect(p.server.spend.settled("bart", "day", now)).toBeCloseTo(0.007524, 9);
        expect(p.server.spend.settled("bart", "month", now)).toBeCloseTo(2 * 0.007524, 9);
    });
});

describe("metering through the proxy", () => {
    it("asks OpenAI for stream usage, bills it, and hides the usage chunk from the agent", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        upstream.received.length = 0;
        const res = await send(p.port, { path: "/openai/v1/chat/completions", headers: openaiHeaders(), body: JSON.stringify({ model: "gpt-5.1", max_completion_tokens: 50, stream: true }) });
        expect(JSON.parse(upstream.received[0].body).stream_options).toEqual({ include_usage: true });
        expect(res.body).toContain("data: [DONE]");
        expect(res.body).not.toContain('"choices":[]');
        expect(res.body).not.toContain("prompt_tokens");
        // 9 x $1.25/M + 3 x $10/M = $0.00004125, rounded up to the micro-dollar
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(0.000042, 9);
    });

    it("bills an OpenAI Responses stream from response.completed", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        await send(p.port, { path: "/openai/v1/responses", headers: openaiHeaders(), body: JSON.stringify({ model: "gpt-5.1", input: "hi", stream: true }) });
        // 16 x $1.25/M + 4 x $0.125/M + 7 x $10/M = $0.0000905, rounded up to the micro-dollar
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(0.000091, 9);
    });

    it("bills an aborted stream for what streamed, and leaves no reservation open", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        upstream.handler = (_req, res) => {
            res.writeHead(200, { "content-type": "text/event-stream" });
            res.write(anthropicStream()[0]);
            res.write(sse("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "x".repeat(400) } }));
        };
        await new Promise<void>((resolve) => {
            const req = http.request({ host: "127.0.0.1", port: p.port, method: "POST", path: "/anthropic/v1/messages", headers: anthropicHeaders(), agent: false }, (res) => {
                res.once("data", () => setTimeout(() => req.destroy(), 50));
            });
            req.on("error", () => undefined);
            req.on("close", () => resolve());
            req.end(anthropicMessage(1000, true));
        });
        await expect.poll(() => p.logs.some((l) => l.includes('"outcome":"client_abort"'))).toBe(true);
        const settled = p.server.spend.settled("bart", "total");
        expect(settled).toBeGreaterThan(12 * 3e-6 + 100 * 15e-6);
        expect(await p.server.metrics.registry.metrics()).toMatch(/keyproxy_reservations_outstanding\{agent="bart"\} 0/);
    });

    it("charges nothing for an upstream error, and releases the reservation", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        upstream.handler = (_req, res) => void res.writeHead(500, { "content-type": "application/json" }).end('{"type":"error","error":{"type":"api_error"}}');
        const res = await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        expect(res.status).toBe(500);
        expect(p.server.spend.settled("bart", "total")).toBe(0);
        expect(await p.server.metrics.registry.metrics()).toMatch(/keyproxy_budget_remaining_usd\{agent="bart",window="total"\} 1\b/);
    });

    it("bills an unknown model at the fallback price and says so", async () => {
        const p = await proxyWith({ totalUsd: 1 });
        await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: JSON.stringify({ model: "claude-next-preview", max_tokens: 10 }) });
        // 12 x $15/M + 5 x $75/M at the fallback price
        expect(p.server.spend.settled("bart", "total")).toBeCloseTo(0.000555, 9);
        expect(p.logs.some((l) => l.includes('"event":"unknown_model"'))).toBe(true);
        expect(await p.server.metrics.registry.metrics()).toMatch(/keyproxy_unknown_model_requests_total\{agent="bart",provider="anthropic"\} 1/);
    });

    it("reports tokens and spend by agent, provider and model, and budget left per window", async () => {
        const p = await proxyWith({ dailyUsd: 2, totalUsd: 5 });
        await send(p.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        const metrics = await p.server.metrics.registry.metrics();
        expect(metrics).toMatch(/keyproxy_tokens_total\{agent="bart",provider="anthropic",model="claude-sonnet-4-5",kind="input"\} 12/);
        expect(metrics).toMatch(/keyproxy_tokens_total\{agent="bart",provider="anthropic",model="claude-sonnet-4-5",kind="output"\} 5/);
        expect(metrics).toMatch(/keyproxy_spend_usd_total\{agent="bart",provider="anthropic",model="claude-sonnet-4-5"\} 0\.000111/);
        expect(metrics).toMatch(/keyproxy_budget_remaining_usd\{agent="bart",window="day"\} 1\.999889/);
        expect(metrics).toMatch(/keyproxy_budget_limit_usd\{agent="bart",window="total"\} 5/);
        const line = p.logs.map((l) => JSON.parse(l)).find((l) => l.event === "request" && l.status === 200);
        expect(line).toMatchObject({ agent: "bart", model: "claude-sonnet-4-5", cost_usd: 0.000111 });
        expect(p.logs.join("\n")).not.toContain(TOKENS.bart);
    });
});

describe("durability", () => {
    it("keeps settled spend across a restart on the same ledger", async () => {
        const first = await proxyWith({ totalUsd: 1 });
        for (let i = 0; i < 3; i++) await send(first.port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY });
        const before = first.server.spend.settled("bart", "total");
        await first.server.close();
        const second = await proxyWith({ totalUsd: 1 }, { metering: { ledgerFile: first.config.metering.ledgerFile } });
        expect(second.server.spend.settled("bart", "total")).toBeCloseTo(before, 12);
        expect(before).toBeCloseTo(3 * 0.000111, 12);
    });
});
