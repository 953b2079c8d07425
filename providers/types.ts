// What a provider entry says about its provider, and the vocabulary the entries share. Pure: no I/O, no Pulumi,
// no node:http, so the program, the images and the tests all import it.

/** USD per million tokens. */
export interface Price {
    input: number;
    output: number;
    /** Prompt-cache writes (Anthropic's 5-minute cache; providers without a write price charge input). */
    cacheWrite: number;
    /** Prompt-cache writes with the 1-hour TTL (Anthropic). */
    cacheWrite1h: number;
    cacheRead: number;
}

/** Token counts of one request, each billed at its own price. `input` excludes every cache count. */
export interface Usage {
    input: number;
    output: number;
    cacheWrite: number;
    cacheWrite1h: number;
    cacheRead: number;
}

export const NO_USAGE: Usage = { input: 0, output: 0, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 0 };

/** Why the proxy answers itself; each provider renders these in its own error body shape. */
export type ErrorKind = "authentication" | "forbidden" | "bad_request" | "too_large" | "rate_limited" | "budget" | "ledger" | "upstream" | "timeout";

export const ERROR_KINDS: Record<ErrorKind, { status: number; message: string }> = {
    authentication: { status: 401, message: "invalid credential" },
    forbidden: { status: 403, message: "this endpoint is not available through the key proxy" },
    bad_request: { status: 400, message: "the proxy could not meter this request" },
    budget: { status: 429, message: "this agent's spend budget does not cover this request" },
    ledger: { status: 503, message: "the key proxy cannot record spend right now (its ledger cannot be written); metered requests are refused until it can" },
    too_large: { status: 413, message: "request too large" },
    rate_limited: { status: 429, message: "too many concurrent requests for this agent" },
    upstream: { status: 502, message: "upstream unavailable" },
    timeout: { status: 504, message: "upstream timed out" },
};

/** Where a request's metered properties come from besides its body. */
export interface RequestTarget {
    /** The upstream path without the query, e.g. /v1/messages. */
    route: string;
    /** The raw query including its `?`, or "". */
    query: string;
}

export type PlanOutcome =
    | { kind: "refused"; reason: string }
    | {
          kind: "metered";
          model: string;
          stream: boolean;
          maxOutputTokens: number;
          /** The client did not ask for the usage chunk the proxy asked for: hide it from the client. */
          hideUsageChunk: boolean;
          /** Whether `json` was changed and must be re-serialised. */
          rewritten: boolean;
      };

/** What a meter knows so far about one response; the wire format's readers update it. */
export interface MeterState {
    usage: Usage;
    model: string | undefined;
    /** A terminal event (or a whole JSON body) was seen. */
    complete: boolean;
    /** Usage was reported by the upstream at all. */
    reported: boolean;
    /** The output count was reported (else a cut stream's output is estimated from its bytes). */
    outputReported: boolean;
    problems: string[];
}

/** One SSE event as the meter hands it to a wire format. */
export interface SseEvent {
    /** The exact text of the event, separator included. */
    raw: string;
    /** The name on its first `event:` line, when it starts with one. */
    name: string | undefined;
    /** Its data lines joined. */
    data(): string;
    /** Its data parsed as a JSON object (an unparseable one is recorded as a problem). */
    json(): Record<string, unknown> | undefined;
}

/** One wire protocol of a metered endpoint: how to bound a request and how to read what it cost. */
export interface WireFormat {
    id: string;
    /** Reads the parsed request body; may write an output cap (or a usage request) into it. */
    plan(json: Record<string, unknown>, target: RequestTarget, defaultMaxOutputTokens: number): PlanOutcome;
    /** Responses of this format are one JSON body whatever their content type says (embeddings). */
    neverStreams?: boolean;
    /**
     * Names of the SSE events (`event: <name>` on their first line) that carry usage or end a stream. When set,
     * every other event is skipped as bytes, undecoded; when absent, every event is handed to `readEvent`.
     */
    namedEvents?: string[];
    /** Reads one SSE event into the state; returns true when the event must be hidden from the client. */
    readEvent(event: SseEvent, state: MeterState, hideUsageChunk: boolean): boolean;
    /** Reads a whole (non-streamed) JSON body into the state. */
    readJson(body: Record<string, unknown>, state: MeterState): void;
}

/** What the proxy does with each endpoint of a provider: meter it in a wire format, or let it through free. */
export interface RouteRule {
    method: "GET" | "POST" | "DELETE";
    path: RegExp;
    meter: WireFormat | "free";
}

/** A header that carries a key. */
export interface CredentialPlacement {
    /** Lower-case header name. */
    header: string;
    /** The header's value is `Bearer <key>`. */
    bearer?: boolean;
}

/** The provider entry: everything the program, KeyProxy, the policy pack and the tools know about one provider. */
export interface ProviderSpec {
    /** The route prefix (`/<id>/...`), the config key under keyProxy.providers, and the secret's name stem. */
    id: string;
    displayName: string;
    /** Where the API lives unless the stack says otherwise. */
    defaultBaseUrl?: string;
    /** Enabled in a stack that does not list its providers. */
    enabledByDefault: boolean;
    /**
     * Where the agent's credential may arrive: wherever this provider's SDKs put a key (any of these headers, or a
     * query parameter, which is never forwarded upstream). Two different values present no credential.
     */
    presented: { headers: CredentialPlacement[]; queryParam?: string };
    /** How the real key is attached to the upstream request. */
    attach: CredentialPlacement;
    /** Prefixes real keys of this provider start with: the policy pack and the scrubbers recognise keys by them. */
    keyPrefixes: string[];
    /** Error bodies in the shape this provider's SDKs parse. */
    errorBody(kind: ErrorKind, status: number, message: string): unknown;
    /** Every endpoint that passes; the rest is refused (403). */
    routes: RouteRule[];
    /** List prices by model id prefix. */
    prices: Record<string, Price>;
    /** The agent's OpenClaw `models.providers.<id>` entry: its `api` kind and the path after `/<id>` its base URL ends in. */
    openClaw: { api: string; basePath: string };
}
