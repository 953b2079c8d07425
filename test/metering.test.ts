import { describe, expect, it } from "vitest";
import { BudgetLedger, windowKeys } from "../proxy-image/src/budget";
import { LedgerCorruptError, encodeRecord, replayLedger } from "../proxy-image/src/ledgerStore";
import { type ApiFormat, ResponseMeter, classifyEndpoint, planRequest } from "../proxy-image/src/metering";
import { DEFAULT_FALLBACK_PRICE, DEFAULT_PRICES, costMicros, maxCostMicros, priceFor } from "../proxy-image/src/pricing";
import { builtInProvider } from "../providers/index";
import { anthropicStream, openaiStream, responsesStream, sse } from "./support/mockUpstream";

const book = { prices: DEFAULT_PRICES, fallback: DEFAULT_FALLBACK_PRICE };

/** Runs a response through a meter in chunks of `size` bytes; returns what reached the client and the result. */
function meterAll(format: ApiFormat, sseStream: boolean, hide: boolean, body: string, size = 7, maxOutputTokens = 32_000) {
    const meter = new ResponseMeter(format, sseStream, hide, maxOutputTokens);
    const bytes = Buffer.from(body);
    const out: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += size) out.push(...meter.push(bytes.subarray(i, i + size)));
    const { result, rest } = meter.end();
    return { forwarded: Buffer.concat([...out, ...rest]).toString(), result };
}

describe("classifyEndpoint", () => {
    it.each<[string, string, string, string | undefined]>([
        ["anthropic", "POST", "/v1/messages", "anthropic-messages"],
        ["openai", "POST", "/v1/chat/completions", "openai-chat"],
        ["openai", "POST", "/v1/responses", "openai-responses"],
        ["anthropic", "POST", "/v1/messages/count_tokens", "free"],
        ["anthropic", "GET", "/v1/models", "free"],
        ["openai", "GET", "/v1/models/gpt-5.1", "free"],
        ["openai", "POST", "/v1/embeddings", "openai-embeddings"],
        ["anthropic", "POST", "/v1/embeddings", undefined],
        ["openai", "GET", "/v1/embeddings", undefined],
        ["openai", "POST", "/v1/images/generations", undefined],
        ["openai", "POST", "/v1/audio/speech", undefined],
        ["anthropic", "POST", "/v1/messages/batches", undefined],
        ["openai", "DELETE", "/v1/files/f1", undefined],
        ["anthropic", "POST", "/v1/chat/completions", undefined],
    ])("%s %s %s -> %s", (provider, method, route, expected) => expect(classifyEndpoint(builtInProvider(provider)!, method, route)).toBe(expected));
});

describe("planRequest", () => {
    const plan = (format: ApiFormat, body: unknown) => planRequest(format, Buffer.from(typeof body === "string" ? body : JSON.stringify(body)), 32_000);

    it("keeps a request that sets its own cap unchanged, byte for byte", () => {
        const body = '{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[]}';
        const result = plan("anthropic-messages", body);
        expect(result).toMatchObject({ kind: "metered", model: "claude-sonnet-4-5", maxOutputTokens: 100, stream: false, hideUsageChunk: false });
        expect(result.kind === "metered" && result.body.toString()).toBe(body);
    });

    it.each<[ApiFormat, Record<string, unknown>, string]>([
        ["anthropic-messages", { model: "claude-sonnet-4-5", messages: [] }, "max_tokens"],
        ["openai-chat", { model: "gpt-5.1", messages: [] }, "max_completion_tokens"],
        ["openai-responses", { model: "gpt-5.1", input: "hi" }, "max_output_tokens"],
    ])("writes the default cap into %s when the client set none", (format, body, field) => {
        const result = plan(format, body);
        expect(result).toMatchObject({ kind: "metered", maxOutputTokens: 32_000 });
        expect(result.kind === "metered" && JSON.parse(result.body.toString())[field]).toBe(32_000);
    });

    it.each<[string, unknown]>([
        ["a string", "hello"],
        ["an array of strings", ["a", "b"]],
        ["an array of token arrays", [[1, 2, 3]]],
    ])("meters embeddings of %s as input only, body unchanged", (_case, input) => {
        const body = JSON.stringify({ model: "text-embedding-3-small", input, encoding_format: "base64" });
        const result = plan("openai-embeddings", body);
        expect(result).toMatchObject({ kind: "metered", format: "openai-embeddings", model: "text-embedding-3-small", stream: false, maxOutputTokens: 0, hideUsageChunk: false });
        expect(result.kind === "metered" && result.body.toString()).toBe(body);
    });

    it("reads OpenAI's legacy max_tokens", () => {
        expect(plan("openai-chat", { model: "gpt-4o", max_tokens: 77 })).toMatchObject({ maxOutputTokens: 77 });
    });

    it("asks OpenAI streams for usage and hides it only when the client did not ask", () => {
        const injected = plan("openai-chat", { model: "gpt-5.1", max_completion_tokens: 5, stream: true, stream_options: { foo: 1 } });
        expect(injected).toMatchObject({ hideUsageChunk: true, stream: true });
        expect(injected.kind === "metered" && JSON.parse(injected.body.toString()).stream_options).toEqual({ foo: 1, include_usage: true });
        expect(plan("openai-chat", { model: "gpt-5.1", max_completion_tokens: 5, stream: true, stream_options: { include_usage: true } })).toMatchObject({ hideUsageChunk: false });
    });

    it.each<[ApiFormat, unknown, string]>([
        ["anthropic-messages", "not json", "body_not_json"],
        ["anthropic-messages", "[1]", "body_not_json"],
        ["anthropic-messages", { max_tokens: 5 }, "no_model"],
        ["openai-chat", { model: "gpt-5.1", max_completion_tokens: -1 }, "bad_output_cap"],
        ["openai-chat", { model: "gpt-5.1", max_completion_tokens: 1.5 }, "bad_output_cap"],
        ["openai-responses", { model: "gpt-5.1", max_output_tokens: "9" }, "bad_output_cap"],
        ["openai-embeddings", { input: "x" }, "no_model"],
        ["openai-embeddings", { model: "text-embedding-3-small" }, "no_input"],
        ["openai-embeddings", { model: "text-embedding-3-small", input: { text: "x" } }, "no_input"],
    ])("refuses %s body %j: %s", (format, body, reason) => expect(plan(format, body)).toEqual({ kind: "refused", reason }));
});

describe("ResponseMeter", () => {
    it("Anthropic SSE: cache tokens counted apart, message_delta cumulative (last wins), stream untouched", () => {
        const events = [
            sse("message_start", { type: "message_start", message: { model: "claude-sonnet-4-5-20250929", usage: { input_tokens: 100, cache_creation_input_tokens: 2000, cache_read_input_tokens: 5000, output_tokens: 1 } } }),
            sse("content_block_delta", { type: "content_block_delta", delta: { type: "text_delta", text: "usage: {" } }),
            sse("message_delta", { type: "message_delta", usage: { output_tokens: 10 } }),
            sse("message_delta", { type: "message_delta", usage: { output_tokens: 25 } }),
            sse("message_stop", { type: "message_stop" }),
        ].join("");
        const { forwarded, result } = meterAll("anthropic-messages", true, false, events);
        expect(forwarded).toBe(events);
        expect(result).toMatchObject({ complete: true, reported: true, model: "claude-sonnet-4-5-20250929", problems: [] });
        expect(result.usage).toEqual({ input: 100, output: 25, cacheWrite: 2000, cacheWrite1h: 0, cacheRead: 5000 });
        // 100x3 + 2000x3.75 + 5000x0.30 + 25x15 micro-dollars
        expect(costMicros(result.usage, priceFor(book, result.model!).price)).toBe(9675);
    });

    it("Anthropic: a final message_delta that restates input and cache counts replaces them; 1-hour cache writes apart", () => {
        const events = [
            sse("message_start", { type: "message_start", message: { model: "claude-opus-4-5", usage: { input_tokens: 10, cache_creation_input_tokens: 1500, cache_creation: { ephemeral_5m_input_tokens: 1000, ephemeral_1h_input_tokens: 500 }, output_tokens: 1 } } }),
            sse("message_delta", { type: "message_delta", usage: { input_tokens: 12, cache_read_input_tokens: 40, output_tokens: 9 } }),
            sse("message_stop", { type: "message_stop" }),
        ].join("");
        const { result } = meterAll("anthropic-messages", true, false, events, 3);
        expect(result.usage).toEqual({ input: 12, output: 9, cacheWrite: 1000, cacheWrite1h: 500, cacheRead: 40 });
    });

    it("OpenAI chat stream: the usage chunk we asked for is read and hidden, everything else passes byte for byte", () => {
        const usage = { prompt_tokens: 1000, prompt_tokens_details: { cached_tokens: 800 }, completion_tokens: 50, total_tokens: 1050 };
        const events = openaiStream("gpt-5.1", true, usage as never);
        const { forwarded, result } = meterAll("openai-chat", true, true, events.join(""));
        expect(forwarded).toBe(events.filter((e) => !e.includes('"choices":[]')).join(""));
        expect(forwarded).not.toContain("prompt_tokens");
        expect(result.usage).toEqual({ input: 200, output: 50, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 800 });
        expect(result.complete).toBe(true);
    });

    it("OpenAI chat stream: a client that asked for usage keeps its usage chunk", () => {
        const events = openaiStream("gpt-5.1", true).join("");
        const { forwarded, result } = meterAll("openai-chat", true, false, events);
        expect(forwarded).toBe(events);
        expect(result.usage.output).toBe(3);
    });

    it("keeps CRLF event separators intact when hiding", () => {
        const events = openaiStream("gpt-5.1", true).map((e) => e.replace(/\n/g, "\r\n"));
        const { forwarded } = meterAll("openai-chat", true, true, events.join(""), 5);
        expect(forwarded).toBe(events.filter((e) => !e.includes('"choices":[]')).join(""));
    });

    it.each(["response.completed", "response.incomplete", "response.failed"])("OpenAI Responses stream ending in %s", (terminal) => {
        const { result } = meterAll("openai-responses", true, false, responsesStream("gpt-5.1", terminal).join(""));
        expect(result).toMatchObject({ complete: true, reported: true, model: "gpt-5.1" });
        expect(result.usage).toEqual({ input: 16, output: 7, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 4 });
    });

    it.each<[ApiFormat, unknown, object]>([
        ["anthropic-messages", { model: "claude-haiku-4-5", usage: { input_tokens: 5, cache_read_input_tokens: 7, output_tokens: 3 } }, { input: 5, cacheRead: 7, output: 3 }],
        ["openai-chat", { model: "gpt-4o", usage: { prompt_tokens: 9, prompt_tokens_details: { cached_tokens: 2 }, completion_tokens: 3 } }, { input: 7, cacheRead: 2, output: 3 }],
        ["openai-responses", { model: "gpt-5.1", usage: { input_tokens: 20, input_tokens_details: { cached_tokens: 4 }, output_tokens: 7 } }, { input: 16, cacheRead: 4, output: 7 }],
        ["openai-embeddings", { object: "list", data: [{ embedding: "AACAPgAAAL8AAAA+" }], model: "text-embedding-3-small", usage: { prompt_tokens: 11, total_tokens: 11 } }, { input: 11, cacheRead: 0, output: 0 }],
        ["openai-embeddings", { object: "list", data: [{ embedding: [0.5] }], model: "text-embedding-3-large", usage: { total_tokens: 13 } }, { input: 13, cacheRead: 0, output: 0 }],
    ])("non-streaming %s JSON", (format, body, usage) => {
        const { forwarded, result } = meterAll(format, false, false, JSON.stringify(body), 4);
        expect(forwarded).toBe(JSON.stringify(body));
        expect(result).toMatchObject({ complete: true, reported: true, usage });
    });

    it.each<[string, string, number]>([
        ["without usage", '{"object":"list","data":[]}', 30],
        ["unparseable", '{"object":"list","da', 30],
        ["too large to meter", `{"data":"${"x".repeat(64)}","usage":{"prompt_tokens":1}}`, 32],
    ])("a whole body %s is unmeasured, so billed at its reservation", (_case, body, limit) => {
        const meter = new ResponseMeter("openai-embeddings", false, false, 0, limit);
        meter.push(Buffer.from(body));
        expect(meter.end().result).toMatchObject({ reported: false, unmeasured: true });
    });

    it("a truncated Anthropic stream is billed for what it showed, output estimated from the bytes streamed", () => {
        const events = anthropicStream().slice(0, 3).join("");
        const { result } = meterAll("anthropic-messages", true, false, events);
        expect(result.complete).toBe(false);
        expect(result.problems).toContain("stream ended without its final event");
        expect(result.usage.input).toBe(12);
        expect(result.usage.output).toBe(Math.ceil(Buffer.byteLength(events) / 4));
    });

    it.each<[string, ApiFormat, string, number, number]>([
        ["an Anthropic stream cut before its message_delta", "anthropic-messages", anthropicStream().slice(0, 3).join(""), 5, 5],
        ["an OpenAI chat stream cut before its usage chunk", "openai-chat", openaiStream().slice(0, 2).join(""), 7, 7],
        ["a cut stream whose estimate is under the cap", "anthropic-messages", anthropicStream().slice(0, 3).join(""), 10_000, Math.ceil(Buffer.byteLength(anthropicStream().slice(0, 3).join("")) / 4)],
        ["a stream that reported more output than the cap (billed as reported)", "anthropic-messages", anthropicStream().join(""), 2, 5],
    ])("%s: output estimated from bytes never passes the request's output cap", (_case, format, body, cap, output) => {
        expect(meterAll(format, true, format === "openai-chat", body, 7, cap).result.usage.output).toBe(output);
    });

    it("malformed events are reported and skipped, not fatal", () => {
        const events = `event: message_start\ndata: {not json\n\n${anthropicStream().slice(2).join("")}`;
        const { result } = meterAll("anthropic-messages", true, false, events);
        expect(result.problems).toContain("unparseable event");
        expect(result.usage.output).toBe(5);
    });

    it("skims Anthropic and Responses streams: the same usage whatever the chunk boundaries, text that looks like an event ignored", () => {
        const anthropic = [
            sse("message_start", { type: "message_start", message: { model: "claude-sonnet-4-5", usage: { input_tokens: 100, cache_creation_input_tokens: 20, cache_read_input_tokens: 30, output_tokens: 1 } } }),
            sse("content_block_delta", { type: "content_block_delta", delta: { type: "text_delta", text: "\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":999}}\n\n" } }),
            ...Array.from({ length: 20 }, (_, i) => sse("content_block_delta", { type: "content_block_delta", delta: { type: "text_delta", text: `chunk ${i} `.repeat(5) } })),
            sse("message_delta", { type: "message_delta", usage: { output_tokens: 10 } }),
            sse("message_delta", { type: "message_delta", usage: { output_tokens: 42 } }),
            sse("message_stop", { type: "message_stop" }),
        ].join("");
        const expected = { input: 100, output: 42, cacheWrite: 20, cacheWrite1h: 0, cacheRead: 30 };
        // As written by the providers, without the optional space after the colon, and with CRLF line ends.
        const variants = [anthropic, anthropic.replaceAll("event: ", "event:"), anthropic.replaceAll("\n", "\r\n")];
        for (const [variant, stream] of variants.entries()) {
            for (const size of [1, 2, 3, 5, 7, 13, 31, 32, 33, 64, 100, stream.length]) {
                const { forwarded, result } = meterAll("anthropic-messages", true, false, stream, size);
                expect(forwarded).toBe(stream);
                expect(result, `variant ${variant}, chunks of ${size}`).toMatchObject({ usage: expected, complete: true, problems: [] });
            }
        }
        const responses = responsesStream("gpt-5.1").join("");
        for (const size of [1, 3, 17, 40, responses.length]) {
            expect(meterAll("openai-responses", true, false, responses, size).result.usage, `chunks of ${size}`).toEqual({ input: 16, output: 7, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 4 });
        }
    });

    it("gives the same result whatever the chunk boundaries", () => {
        const body = openaiStream("gpt-5.1", true).join("");
        const reference = meterAll("openai-chat", true, true, body, body.length);
        for (const size of [1, 2, 3, 13, 64]) expect(meterAll("openai-chat", true, true, body, size)).toEqual(reference);
    });
});

describe("prices", () => {
    it.each([
        ["claude-sonnet-4-5-20250929", DEFAULT_PRICES["claude-sonnet-4-5"], true],
        ["claude-opus-4-1-20250805", DEFAULT_PRICES["claude-opus-4-1"], true],
        ["gpt-5-mini-2025-08-07", DEFAULT_PRICES["gpt-5-mini"], true],
        ["gpt-5", DEFAULT_PRICES["gpt-5"], true],
        ["gpt-5-turbo-preview", DEFAULT_PRICES["gpt-5"], true],
        ["gpt-5.1-codex", DEFAULT_PRICES["gpt-5.1"], true],
        ["mystery-model", DEFAULT_FALLBACK_PRICE, false],
        ["gpt-4", DEFAULT_FALLBACK_PRICE, false],
        ["text-embedding-3-small", { input: 0.02, output: 0, cacheWrite: 0.02, cacheWrite1h: 0.02, cacheRead: 0.02 }, true],
        ["text-embedding-3-large", { input: 0.13, output: 0, cacheWrite: 0.13, cacheWrite1h: 0.13, cacheRead: 0.13 }, true],
        ["text-embedding-ada-002", { input: 0.1, output: 0, cacheWrite: 0.1, cacheWrite1h: 0.1, cacheRead: 0.1 }, true],
        ["text-embedding-4-preview", DEFAULT_FALLBACK_PRICE, false],
    ])("%s", (model, price, known) => expect(priceFor(book, model)).toEqual({ price, known }));

    it("bounds a request's cost by its bytes and output cap", () => {
        const sonnet = DEFAULT_PRICES["claude-sonnet-4-5"];
        // 1000 bytes at the dearest input-side price (1-hour cache write, $6/M) + 100 output tokens at $15/M
        expect(maxCostMicros(1000, 100, sonnet)).toBe(6000 + 1500);
    });
});

describe("budget windows", () => {
    it.each([
        ["2026-11-30T23:30:00Z", "UTC", "day:2026-11-30", "month:2026-11"],
        ["2026-11-30T23:30:00Z", "Europe/Berlin", "day:2026-12-01", "month:2026-12"],
        ["2026-12-01T03:00:00Z", "America/Los_Angeles", "day:2026-11-30", "month:2026-11"],
    ])("%s in %s", (at, zone, day, month) => expect(windowKeys(new Date(at), zone)).toEqual({ day, month, total: "total" }));

    it("admits while settled plus reserved fits, per window, and a new day starts from zero", () => {
        const ledger = new BudgetLedger();
        const budget = { dailyUsd: 0.01, totalUsd: 0.015 };
        const day1 = windowKeys(new Date("2026-11-22T10:00:00Z"), "UTC");
        expect(ledger.admit("bart", budget, 6000, day1)).toMatchObject({ ok: true });
        ledger.apply({ t: "reserve", id: "a", agent: "bart", micros: 6000, keys: ["day:2026-11-22", "month:2026-11", "total"], at: 0 });
        expect(ledger.admit("bart", budget, 5000, day1)).toEqual({ ok: false, window: "day", limitMicros: 10_000, usedMicros: 6000 });
        ledger.apply({ t: "settle", id: "a", micros: 4000, at: 0 });
        expect(ledger.admit("bart", budget, 5000, day1)).toMatchObject({ ok: true });
        expect(ledger.admit("lisa", budget, 9000, day1)).toMatchObject({ ok: true });
        const day2 = windowKeys(new Date("2026-11-23T00:00:01Z"), "UTC");
        expect(ledger.admit("bart", { dailyUsd: 0.01 }, 9000, day2)).toMatchObject({ ok: true });
        expect(ledger.admit("bart", { dailyUsd: 0.01, totalUsd: 0.012 }, 9000, day2)).toEqual({ ok: false, window: "total", limitMicros: 12_000, usedMicros: 4000 });
    });
});

describe("ledger file", () => {
    const records = [
        { t: "reserve" as const, id: "a", agent: "bart", micros: 10, keys: ["total"], at: 1 },
        { t: "settle" as const, id: "a", micros: 7, at: 2 },
    ];

    it("round-trips CRC-checked lines", () => {
        expect(replayLedger(records.map(encodeRecord).join(""))).toEqual({ records });
    });

    it("reports a torn last line (a write cut by a crash) and keeps everything before it", () => {
        const text = records.map(encodeRecord).join("") + encodeRecord(records[0]).slice(0, 20);
        expect(replayLedger(text)).toEqual({ records, tornTail: { line: 3, bytes: 20 } });
    });

    it.each([
        ["a flipped byte", (text: string) => text.replace('"micros":10', '"micros":90')],
        ["a missing checksum", (text: string) => text.replace(/^[0-9a-f]{8} /, "")],
        ["a complete but garbled last line", (text: string) => `${text}garbage\n`],
    ])("refuses to start from %s anywhere else", (_case, damage) => {
        expect(() => replayLedger(damage(records.map(encodeRecord).join("")))).toThrow(LedgerCorruptError);
    });
});
