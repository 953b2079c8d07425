// Google Gemini (the Generative Language API): generateContent and streamGenerateContent (SSE with alt=sse),
// token counting and model listings.
import type { ErrorKind, MeterState, PlanOutcome, Price, ProviderSpec, Usage, WireFormat } from "./types";
import { num } from "./usage";

/** Models have no explicit cache-write price (implicit caching is free; explicit cache creation bills input). */
const price = (input: number, output: number, cacheRead: number): Price => ({ input, output, cacheWrite: input, cacheWrite1h: input, cacheRead });

const GENERATE = /^\/v1(?:beta)?\/models\/([A-Za-z0-9._-]+):(generateContent|streamGenerateContent)$/;

/**
 * Gemini usage. `promptTokenCount` includes the cached tokens (billed at the cache price); tool-use prompt tokens are
 * input too; thinking tokens are output. Whatever the total counts beyond these is billed as output, so a count the
 * fields do not name is never free.
 */
export function geminiUsage(meta: Record<string, unknown>): Usage {
    const prompt = num(meta.promptTokenCount);
    const cached = Math.min(prompt, num(meta.cachedContentTokenCount));
    const input = prompt - cached + num(meta.toolUsePromptTokenCount);
    const named = num(meta.candidatesTokenCount) + num(meta.thoughtsTokenCount);
    const output = Math.max(named, num(meta.totalTokenCount) - input - cached);
    return { input, output, cacheWrite: 0, cacheWrite1h: 0, cacheRead: cached };
}

/** A candidate says why it finished, or the prompt was blocked (then there are no candidates: its feedback ends the answer). */
const finished = (body: Record<string, unknown>) =>
    (Array.isArray(body.candidates) && body.candidates.some((c) => typeof c === "object" && c !== null && typeof (c as Record<string, unknown>).finishReason === "string")) ||
    typeof (body.promptFeedback as Record<string, unknown> | undefined)?.blockReason === "string";

function read(body: Record<string, unknown>, state: MeterState) {
    if (typeof body.modelVersion === "string") state.model = body.modelVersion;
    const meta = body.usageMetadata;
    if (meta === null || typeof meta !== "object") return;
    state.usage = geminiUsage(meta as Record<string, unknown>);
    state.reported = true;
}

/** The stream's usage is cumulative in every chunk (the last wins); the chunk with a finishReason ends it. */
export const geminiGenerate: WireFormat = {
    id: "gemini-generate",
    plan(json, { route, query }, defaultMax): PlanOutcome {
        const match = GENERATE.exec(route);
        if (!match) return { kind: "refused", reason: "no_model" };
        const stream = match[2] === "streamGenerateContent";
        // Without alt=sse the stream is one JSON array, which cannot be metered as it goes: refuse it.
        if (stream && !/[?&]alt=sse(&|$)/.test(query)) return { kind: "refused", reason: "stream_needs_alt_sse" };
        const config = json.generationConfig ?? {};
        if (typeof config !== "object" || config === null || Array.isArray(config)) return { kind: "refused", reason: "bad_output_cap" };
        const generation = config as Record<string, unknown>;
        const requested = generation.maxOutputTokens;
        const base = { kind: "metered" as const, model: match[1], stream, hideUsageChunk: false };
        // Thinking tokens count against maxOutputTokens, so the cap bounds the whole billed output.
        if (requested === undefined || requested === null) {
            json.generationConfig = { ...generation, maxOutputTokens: defaultMax };
            return { ...base, maxOutputTokens: defaultMax, rewritten: true };
        }
        if (typeof requested === "number" && Number.isInteger(requested) && requested > 0) return { ...base, maxOutputTokens: requested, rewritten: false };
        return { kind: "refused", reason: "bad_output_cap" };
    },
    readEvent(event, state) {
        const { raw } = event;
        const hasUsage = raw.includes('"usageMetadata"');
        const hasFinish = raw.includes('"finishReason"') || raw.includes('"blockReason"');
        if (!hasUsage && !hasFinish) return false;
        const parsed = event.json();
        if (!parsed) return false;
        read(parsed, state);
        if (finished(parsed)) {
            state.complete = true;
            if (state.reported) state.outputReported = true;
        }
        return false;
    },
    readJson(body, state) {
        read(body, state);
        if (state.reported) state.outputReported = true;
    },
};

const STATUS: Record<ErrorKind, string> = {
    authentication: "UNAUTHENTICATED",
    forbidden: "PERMISSION_DENIED",
    bad_request: "INVALID_ARGUMENT",
    budget: "RESOURCE_EXHAUSTED",
    ledger: "UNAVAILABLE",
    too_large: "INVALID_ARGUMENT",
    rate_limited: "RESOURCE_EXHAUSTED",
    upstream: "UNAVAILABLE",
    timeout: "DEADLINE_EXCEEDED",
};

export const gemini: ProviderSpec = {
    id: "gemini",
    displayName: "Google Gemini",
    defaultBaseUrl: "https://generativelanguage.googleapis.com",
    enabledByDefault: false,
    // Google's SDKs send the key as x-goog-api-key; REST examples put it in ?key=. The real key only ever goes in the header.
    presented: { headers: [{ header: "x-goog-api-key" }], queryParam: "key" },
    attach: { header: "x-goog-api-key" },
    keyPrefixes: ["AIza"],
    errorBody: (kind, status, message) => ({ error: { code: status, message, status: STATUS[kind] } }),
    routes: [
        { method: "POST", path: GENERATE, meter: geminiGenerate },
        { method: "POST", path: /^\/v1(?:beta)?\/models\/[A-Za-z0-9._-]+:countTokens$/, meter: "free" },
        { method: "GET", path: /^\/v1(?:beta)?\/models(\/[A-Za-z0-9._-]+)?$/, meter: "free" },
    ],
    // Paid-tier list prices (USD per million tokens) as published in late 2025, at each model's dearest rate: the
    // long-context tier (prompts over 200k tokens) and audio input where those cost more, so metering never
    // under-counts. A stack whose traffic is short text can set the lower rates in keyProxy.prices.
    prices: {
        "gemini-3-pro": price(4, 18, 0.4),
        "gemini-2.5-pro": price(2.5, 15, 0.25),
        "gemini-2.5-flash-lite": price(0.3, 0.4, 0.03),
        "gemini-2.5-flash": price(1, 2.5, 0.1),
        "gemini-2.0-flash-lite": price(0.075, 0.3, 0.075),
        "gemini-2.0-flash": price(0.7, 0.4, 0.175),
    },
    openClaw: { api: "google-generative-ai", basePath: "/v1beta" },
};
