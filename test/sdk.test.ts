// The real provider SDKs from npm (openai, @anthropic-ai/sdk, @google/genai) talking to an in-process KeyProxy in
// front of the loopback mock upstream, streaming and not: each gets exactly what the upstream sent, and the request
// is metered. The SDKs hold only the agent's credential; the upstream sees only the real key.
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AGENTS, REAL_KEYS, type RunningProxy, TOKENS, startKeyProxy } from "./support/keyProxyHarness";
import { GEMINI_USAGE, MockUpstream, anthropicStream, embeddingsResponse, geminiResponse, geminiStream, openaiStream } from "./support/mockUpstream";

const upstream = new MockUpstream();
let proxy: RunningProxy;
let base: string;
beforeAll(async () => {
    await upstream.start();
    proxy = await startKeyProxy(upstream);
    base = `http://127.0.0.1:${proxy.port}`;
});
beforeEach(() => {
    upstream.received.length = 0;
});
afterAll(async () => {
    await proxy.server.close();
    await upstream.stop();
});

/** The JSON of each data line of an SSE stream the mock sent, in order. */
const eventsOf = (stream: string[]) => stream.map((event) => JSON.parse(/^data: (.*)$/m.exec(event)![1]));

/** Runs `use` and returns what it resolved to and the spend it settled for bart (in USD). */
async function metered<T>(use: () => Promise<T>): Promise<{ value: T; spent: number }> {
    const before = proxy.server.spend.settled("bart", "total");
    const value = await use();
    return { value, spent: proxy.server.spend.settled("bart", "total") - before };
}

function upstreamSawOnly(header: string, value: string) {
    expect(upstream.received).toHaveLength(1);
    expect(upstream.received[0].headers[header]).toBe(value);
    expect(JSON.stringify(upstream.received[0])).not.toContain(TOKENS.bart);
}

describe("openai", () => {
    const client = () => new OpenAI({ apiKey: TOKENS.bart, baseURL: `${base}/openai/v1`, maxRetries: 0 });
    const messages = [{ role: "user" as const, content: "hi" }];

    it("chat completions, JSON", async () => {
        const { value, spent } = await metered(() => client().chat.completions.create({ model: "gpt-5.1", messages, max_completion_tokens: 64 }));
        expect(value).toEqual({ id: "c1", object: "chat.completion", model: "gpt-5.1", choices: [{ index: 0, message: { role: "assistant", content: "Hello" } }], usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } });
        expect(spent).toBeCloseTo(Math.ceil(9 * 1.25 + 3 * 10) / 1e6, 9);
        upstreamSawOnly("authorization", `Bearer ${REAL_KEYS.openai}`);
    });

    it("chat completions, streamed: every chunk the upstream sent but the usage chunk the proxy asked for", async () => {
        const { value: chunks, spent } = await metered(async () => {
            const collected: unknown[] = [];
            for await (const chunk of await client().chat.completions.create({ model: "gpt-5.1", messages, max_completion_tokens: 64, stream: true })) collected.push(chunk);
            return collected;
        });
        const sent = eventsOf(openaiStream("gpt-5.1", true).slice(0, -1)).filter((event) => event.choices.length > 0);
        // The SDK fills in a null finish_reason where the upstream left it out: every field the upstream sent is there.
        expect(chunks).toHaveLength(sent.length);
        chunks.forEach((chunk, i) => expect(chunk).toMatchObject(sent[i]));
        expect(spent).toBeCloseTo(Math.ceil(9 * 1.25 + 3 * 10) / 1e6, 9);
    });

    it("embeddings", async () => {
        const { value, spent } = await metered(() => client().embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"], encoding_format: "float" }));
        expect(value).toEqual(embeddingsResponse({ model: "text-embedding-3-small", input: ["a", "b"] }));
        expect(spent).toBeGreaterThan(0);
    });
});

describe("@anthropic-ai/sdk", () => {
    const client = () => new Anthropic({ apiKey: TOKENS.bart, baseURL: `${base}/anthropic`, maxRetries: 0 });
    const request = { model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user" as const, content: "hi" }] };

    it("messages, JSON", async () => {
        const { value, spent } = await metered(() => client().messages.create(request));
        expect(value).toEqual({ id: "msg_1", type: "message", model: "claude-sonnet-4-5", content: [{ type: "text", text: "Hello" }], usage: { input_tokens: 12, output_tokens: 5 } });
        expect(spent).toBeCloseTo(Math.ceil(12 * 3 + 5 * 15) / 1e6, 9);
        upstreamSawOnly("x-api-key", REAL_KEYS.anthropic);
    });

    it("messages, streamed: every event the upstream sent", async () => {
        const { value: events, spent } = await metered(async () => {
            const collected: unknown[] = [];
            for await (const event of await client().messages.create({ ...request, stream: true })) collected.push(event);
            return collected;
        });
        expect(events).toEqual(eventsOf(anthropicStream()));
        expect(spent).toBeCloseTo(Math.ceil(12 * 3 + 5 * 15) / 1e6, 9);
    });

    it("sees KeyProxy's budget refusal as an API error in its own shape", async () => {
        const poor = await startKeyProxy(upstream);
        poor.server.setAgents([{ ...AGENTS[0], budget: { dailyUsd: 0.000001 } }]);
        try {
            const refused = new Anthropic({ apiKey: TOKENS.bart, baseURL: `http://127.0.0.1:${poor.port}/anthropic`, maxRetries: 0 }).messages.create(request);
            await expect(refused).rejects.toMatchObject({ status: 429, error: { type: "error", error: { type: "budget_exceeded" } } });
            expect(upstream.received).toHaveLength(0);
        } finally {
            await poor.server.close();
        }
    });
});

describe("@google/genai", () => {
    const client = () => new GoogleGenAI({ apiKey: TOKENS.bart, apiVersion: "v1beta", httpOptions: { baseUrl: `${base}/gemini` } });
    const request = { model: "gemini-2.5-flash", contents: "hi", config: { maxOutputTokens: 64 } };
    // 8 input at $1, 3 cached at $0.10, 10 output (answer and thoughts) at $2.50 per million.
    const cost = Math.ceil(8 * 1 + 3 * 0.1 + 10 * 2.5) / 1e6;

    it("generateContent", async () => {
        const { value, spent } = await metered(() => client().models.generateContent(request));
        expect(value).toMatchObject(geminiResponse());
        expect(value.text).toBe("Hello world");
        expect(value.usageMetadata).toEqual(GEMINI_USAGE);
        expect(spent).toBeCloseTo(cost, 9);
        upstreamSawOnly("x-goog-api-key", REAL_KEYS.gemini);
        expect(upstream.received[0].path).toBe("/v1beta/models/gemini-2.5-flash:generateContent");
    });

    it("generateContentStream: every chunk the upstream sent", async () => {
        const { value: chunks, spent } = await metered(async () => {
            const collected: unknown[] = [];
            for await (const chunk of await client().models.generateContentStream(request)) collected.push(chunk);
            return collected;
        });
        const sent = eventsOf(geminiStream());
        expect(chunks).toHaveLength(sent.length);
        chunks.forEach((chunk, i) => expect(chunk).toMatchObject(sent[i]));
        expect(spent).toBeCloseTo(cost, 9);
        expect(upstream.received[0].path).toBe("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    });
});
