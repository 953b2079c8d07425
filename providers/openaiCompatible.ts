// Any OpenAI-compatible endpoint (OpenRouter, Mistral, DeepSeek, a vLLM server...): a kind a stack instantiates
// under ids of its own (keyProxy.providers.openaiCompatible), each with its base URL, key and prices. It speaks
// OpenAI's Chat Completions and Embeddings, so it meters with OpenAI's wire formats.
import { openaiChat, openaiEmbeddings, openaiErrorBody } from "./openai";
import type { ProviderSpec } from "./types";

export const OPENAI_COMPATIBLE_KIND = "openai-compatible";

/** The entry an instance starts from; its id is the instance's (providerOfKind). */
export const openaiCompatible: ProviderSpec = {
    id: OPENAI_COMPATIBLE_KIND,
    displayName: "OpenAI-compatible endpoint",
    enabledByDefault: false,
    presented: { headers: [{ header: "authorization", bearer: true }] },
    attach: { header: "authorization", bearer: true },
    // Keys of these services have no common shape (OpenRouter's sk-or- is covered by OpenAI's sk-).
    keyPrefixes: [],
    errorBody: openaiErrorBody,
    routes: [
        { method: "POST", path: /^\/v1\/chat\/completions$/, meter: openaiChat },
        { method: "POST", path: /^\/v1\/embeddings$/, meter: openaiEmbeddings },
        { method: "GET", path: /^\/v1\/models(\/[^/]+)?$/, meter: "free" },
    ],
    // None built in: each instance brings its own (keyProxy.providers.openaiCompatible[].prices); models it does
    // not price are billed at the fallback price.
    prices: {},
    openClaw: { api: "openai-completions", basePath: "/v1" },
};
