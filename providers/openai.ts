// OpenAI: Chat Completions (JSON and SSE), Responses (JSON and SSE), Embeddings, model listings. The Chat
// Completions and Embeddings formats are also what every OpenAI-compatible endpoint speaks (openaiCompatible.ts).
import type { ErrorKind, MeterState, Price, ProviderSpec, Usage, WireFormat } from "./types";
import { num, readOutputCap } from "./usage";

const price = (input: number, output: number, cacheRead: number): Price => ({ input, output, cacheWrite: input, cacheWrite1h: input, cacheRead });
/** Embedding models bill input tokens only. */
const embedding = (input: number): Price => price(input, 0, input);

/**
 * OpenAI usage: prompt/input counts include the cached tokens, which are billed at the cache-read price. What
 * the total counts beyond the output is input too (embeddings report only prompt and total tokens).
 */
export function openaiUsage(raw: Record<string, unknown>): Usage {
    const output = num(raw.completion_tokens ?? raw.output_tokens);
    const prompt = Math.max(num(raw.prompt_tokens ?? raw.input_tokens), num(raw.total_tokens) - output);
    const details = (raw.prompt_tokens_details ?? raw.input_tokens_details) as Record<string, unknown> | undefined;
    const cached = Math.min(prompt, num(details?.cached_tokens));
    return { input: prompt - cached, output, cacheWrite: 0, cacheWrite1h: 0, cacheRead: cached };
}

function report(state: MeterState, raw: Record<string, unknown>) {
    state.usage = openaiUsage(raw);
    state.reported = state.outputReported = true;
}

function readJsonUsage(body: Record<string, unknown>, state: MeterState) {
    const raw = body.usage as Record<string, unknown> | undefined;
    if (raw) report(state, raw);
}

const USAGE_OBJECT = /"usage"\s*:\s*\{/;

/**
 * Chat Completions. Streams report usage only when asked (`stream_options.include_usage`): the proxy asks when the
 * client did not, and then hides that extra chunk (it has no choices) from the client.
 */
export const openaiChat: WireFormat = {
    id: "openai-chat",
    plan(json, _target, defaultMax) {
        const outcome = readOutputCap(json, "max_completion_tokens", json.max_completion_tokens ?? json.max_tokens, defaultMax);
        if (outcome.kind === "refused" || !outcome.stream) return outcome;
        const options = (json.stream_options ?? {}) as Record<string, unknown>;
        if (options.include_usage === true) return outcome;
        json.stream_options = { ...options, include_usage: true };
        return { ...outcome, hideUsageChunk: true, rewritten: true };
    },
    readEvent(event, state, hideUsageChunk) {
        const { raw } = event;
        if (raw.includes("[DONE]") && event.data().trim() === "[DONE]") {
            state.complete = true;
            return false;
        }
        // Cheap checks first: this runs on every content delta.
        if (!raw.includes('"usage"') || !USAGE_OBJECT.test(raw)) {
            if (state.model === undefined && raw.includes('"model"')) state.model = event.json()?.model as string | undefined;
            return false;
        }
        const parsed = event.json();
        if (!parsed?.usage || typeof parsed.usage !== "object") return false;
        report(state, parsed.usage as Record<string, unknown>);
        state.model = (parsed.model as string | undefined) ?? state.model;
        // The usage chunk we asked for carries no choices: the client, which did not ask, never sees it.
        return hideUsageChunk && Array.isArray(parsed.choices) && parsed.choices.length === 0;
    },
    readJson: readJsonUsage,
};

const RESPONSES_TERMINAL = ["response.completed", "response.incomplete", "response.failed"];

/** Responses: the terminal event carries the whole response with its usage. */
export const openaiResponses: WireFormat = {
    id: "openai-responses",
    plan: (json, _target, defaultMax) => readOutputCap(json, "max_output_tokens", json.max_output_tokens, defaultMax),
    namedEvents: RESPONSES_TERMINAL,
    readEvent(event, state) {
        if (event.name === undefined || !RESPONSES_TERMINAL.includes(event.name)) return false;
        const response = event.json()?.response as Record<string, unknown> | undefined;
        state.complete = true;
        state.model = (response?.model as string | undefined) ?? state.model;
        if (response?.usage) report(state, response.usage as Record<string, unknown>);
        return false;
    },
    readJson: readJsonUsage,
};

/** Embeddings: input tokens only, which the request bytes bound, so the body goes up unchanged. */
export const openaiEmbeddings: WireFormat = {
    id: "openai-embeddings",
    plan(json) {
        if (typeof json.model !== "string" || json.model.length === 0) return { kind: "refused", reason: "no_model" };
        if (typeof json.input !== "string" && !Array.isArray(json.input)) return { kind: "refused", reason: "no_input" };
        return { kind: "metered", model: json.model, stream: false, maxOutputTokens: 0, hideUsageChunk: false, rewritten: false };
    },
    neverStreams: true,
    readEvent: () => false,
    readJson: readJsonUsage,
};

const ERROR_TYPES: Record<ErrorKind, [type: string, code: string | null]> = {
    authentication: ["invalid_request_error", "invalid_api_key"],
    forbidden: ["invalid_request_error", "endpoint_not_allowed"],
    bad_request: ["invalid_request_error", "invalid_request"],
    budget: ["budget_exceeded", "budget_exceeded"],
    ledger: ["server_error", "spend_ledger_unavailable"],
    too_large: ["invalid_request_error", "request_too_large"],
    rate_limited: ["rate_limit_error", "rate_limit_exceeded"],
    upstream: ["server_error", null],
    timeout: ["server_error", "timeout"],
};

/** OpenAI's error body, which OpenAI-compatible servers imitate. */
export const openaiErrorBody = (kind: ErrorKind, _status: number, message: string) => ({ error: { message, type: ERROR_TYPES[kind][0], param: null, code: ERROR_TYPES[kind][1] } });

export const openai: ProviderSpec = {
    id: "openai",
    displayName: "OpenAI",
    defaultBaseUrl: "https://api.openai.com",
    enabledByDefault: true,
    presented: { headers: [{ header: "authorization", bearer: true }] },
    attach: { header: "authorization", bearer: true },
    keyPrefixes: ["sk-"],
    errorBody: openaiErrorBody,
    routes: [
        { method: "POST", path: /^\/v1\/chat\/completions$/, meter: openaiChat },
        { method: "POST", path: /^\/v1\/responses$/, meter: openaiResponses },
        { method: "POST", path: /^\/v1\/embeddings$/, meter: openaiEmbeddings },
        { method: "GET", path: /^\/v1\/models(\/[^/]+)?$/, meter: "free" },
    ],
    // List prices (USD per million tokens) as published in late 2025.
    prices: {
        "gpt-5.1": price(1.25, 10, 0.125),
        "gpt-5-mini": price(0.25, 2, 0.025),
        "gpt-5-nano": price(0.05, 0.4, 0.005),
        "gpt-5": price(1.25, 10, 0.125),
        "gpt-4.1-mini": price(0.4, 1.6, 0.1),
        "gpt-4.1-nano": price(0.1, 0.4, 0.025),
        "gpt-4.1": price(2, 8, 0.5),
        "gpt-4o-mini": price(0.15, 0.6, 0.075),
        "gpt-4o": price(2.5, 10, 1.25),
        "o4-mini": price(1.1, 4.4, 0.275),
        o3: price(2, 8, 0.5),
        "text-embedding-3-small": embedding(0.02),
        "text-embedding-3-large": embedding(0.13),
        "text-embedding-ada-002": embedding(0.1),
    },
    openClaw: { api: "openai-completions", basePath: "/v1" },
};
