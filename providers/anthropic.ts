// Anthropic: the Messages API (JSON and SSE), token counting and model listings.
import type { ErrorKind, MeterState, Price, ProviderSpec, Usage, WireFormat } from "./types";
import { NO_USAGE } from "./types";
import { num, readOutputCap } from "./usage";

const price = (input: number, output: number): Price => ({ input, output, cacheWrite: input * 1.25, cacheWrite1h: input * 2, cacheRead: input * 0.1 });

/** Anthropic usage: input excludes cache tokens; cache writes may be split by TTL; a later report restates earlier counts. */
function anthropicUsage(raw: Record<string, unknown>, previous: Usage): Usage {
    const has = (key: string) => raw[key] !== undefined && raw[key] !== null;
    const creation = raw.cache_creation as Record<string, unknown> | undefined;
    const write1h = creation ? num(creation.ephemeral_1h_input_tokens) : undefined;
    const writeAll = has("cache_creation_input_tokens") ? num(raw.cache_creation_input_tokens) : undefined;
    return {
        input: has("input_tokens") ? num(raw.input_tokens) : previous.input,
        output: has("output_tokens") ? num(raw.output_tokens) : previous.output,
        cacheWrite: writeAll !== undefined ? writeAll - (write1h ?? 0) : previous.cacheWrite,
        cacheWrite1h: write1h ?? (writeAll !== undefined ? 0 : previous.cacheWrite1h),
        cacheRead: has("cache_read_input_tokens") ? num(raw.cache_read_input_tokens) : previous.cacheRead,
    };
}

function report(state: MeterState, raw: Record<string, unknown> | undefined, previous: Usage) {
    if (!raw) return;
    state.usage = anthropicUsage(raw, previous);
    state.reported = true;
}

/** Messages: `message_start` usage, then cumulative `message_delta` usage (the last wins), `message_stop` at the end. */
export const anthropicMessages: WireFormat = {
    id: "anthropic-messages",
    plan: (json, _target, defaultMax) => readOutputCap(json, "max_tokens", json.max_tokens, defaultMax),
    namedEvents: ["message_", "error"],
    readEvent(event, state) {
        const { name } = event;
        if (name === "message_stop") state.complete = true;
        if (name !== "message_start" && name !== "message_delta" && name !== "error") return false;
        const parsed = event.json();
        if (!parsed) return false;
        if (name === "error") {
            state.problems.push("upstream error event");
            return false;
        }
        if (name === "message_start") {
            const message = parsed.message as Record<string, unknown> | undefined;
            state.model = (message?.model as string | undefined) ?? state.model;
            report(state, message?.usage as Record<string, unknown> | undefined, state.usage);
        } else {
            const raw = parsed.usage as Record<string, unknown> | undefined;
            report(state, raw, state.usage);
            if (raw?.output_tokens !== undefined) state.outputReported = true;
        }
        return false;
    },
    readJson(body, state) {
        const raw = body.usage as Record<string, unknown> | undefined;
        if (!raw) return;
        report(state, raw, NO_USAGE);
        state.outputReported = true;
    },
};

const ERROR_TYPES: Record<ErrorKind, string> = {
    authentication: "authentication_error",
    forbidden: "permission_error",
    bad_request: "invalid_request_error",
    budget: "budget_exceeded",
    ledger: "api_error",
    too_large: "request_too_large",
    rate_limited: "rate_limit_error",
    upstream: "api_error",
    timeout: "api_error",
};

export const anthropic: ProviderSpec = {
    id: "anthropic",
    displayName: "Anthropic",
    defaultBaseUrl: "https://api.anthropic.com",
    enabledByDefault: true,
    // Older SDKs send the key as x-api-key; @anthropic-ai/sdk 1.x sends it as a bearer token.
    presented: { headers: [{ header: "x-api-key" }, { header: "authorization", bearer: true }] },
    attach: { header: "x-api-key" },
    keyPrefixes: ["sk-ant-"],
    errorBody: (kind, _status, message) => ({ type: "error", error: { type: ERROR_TYPES[kind], message } }),
    routes: [
        { method: "POST", path: /^\/v1\/messages$/, meter: anthropicMessages },
        { method: "POST", path: /^\/v1\/messages\/count_tokens$/, meter: "free" },
        { method: "GET", path: /^\/v1\/models(\/[^/]+)?$/, meter: "free" },
    ],
    // List prices (USD per million tokens) as published in late 2025.
    prices: {
        "claude-opus-4-5": price(5, 25),
        "claude-opus-4-1": price(15, 75),
        "claude-opus-4": price(15, 75),
        "claude-sonnet-4-5": price(3, 15),
        "claude-sonnet-4": price(3, 15),
        "claude-3-7-sonnet": price(3, 15),
        "claude-haiku-4-5": price(1, 5),
        "claude-3-5-haiku": price(0.8, 4),
    },
    openClaw: { api: "anthropic-messages", basePath: "" },
};
