// The pure core of KeyProxy: every decision from inputs alone, no I/O. The server is a shell around it.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { type AgentIdentity, type Arrival, arrivedAs } from "../../runtime/registry";

export const PROVIDERS = ["anthropic", "openai"] as const;
export type Provider = (typeof PROVIDERS)[number];

export const ALLOWED_METHODS: ReadonlySet<string> = new Set(["GET", "POST", "DELETE"]);

export type RouteDecision =
    | { action: "forward"; provider: Provider; upstreamPath: string; route: string }
    | { action: "drop"; reason: string };

// Percent-encodings that could smuggle a separator past the prefix check: / \ . NUL, and % itself.
const ENCODED_SEPARATOR = /%(2f|5c|2e|00|25)/i;
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Maps an origin-form request target to its upstream path, or drops it. The path is decoded once, for
 * checking only; what goes upstream is the raw path, which after these checks decodes to the same thing.
 */
export function decideRoute(method: string, target: string): RouteDecision {
    if (!ALLOWED_METHODS.has(method)) return { action: "drop", reason: "method" };
    if (!target.startsWith("/")) return { action: "drop", reason: "target_form" };
    const queryAt = target.indexOf("?");
    const rawPath = queryAt < 0 ? target : target.slice(0, queryAt);
    const query = queryAt < 0 ? "" : target.slice(queryAt);
    if (target.includes("#") || CONTROL.test(target) || /[\s\\]/.test(rawPath)) return { action: "drop", reason: "path_chars" };
    if (ENCODED_SEPARATOR.test(rawPath)) return { action: "drop", reason: "path_encoding" };
    let decoded: string;
    try {
        decoded = decodeURIComponent(rawPath);
    } catch {
        return { action: "drop", reason: "path_encoding" };
    }
    const segments = decoded.split("/").slice(1);
    if (segments.some((s) => s === "." || s === "..") || decoded.includes("//") || CONTROL.test(decoded)) {
        return { action: "drop", reason: "path_traversal" };
    }
    const [prefix, ...rest] = segments;
    if (!(PROVIDERS as readonly string[]).includes(prefix) || rest.length === 0 || rest[0] === "") {
        return { action: "drop", reason: "unknown_route" };
    }
    const upstreamPath = rawPath.slice(prefix.length + 1);
    return { action: "forward", provider: prefix as Provider, upstreamPath: upstreamPath + query, route: upstreamPath };
}

const HOP_BY_HOP = new Set([
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
]);

/** Headers that carry a credential (the agent's, or one an agent might try to pass along). */
const CREDENTIAL_HEADERS = new Set(["authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"]);

/** Headers that would tell the upstream about our internal addresses. */
const ADDRESS_HEADERS = new Set(["forwarded", "via", "x-real-ip", "client-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip"]);

function namedInConnection(headers: IncomingHttpHeaders): Set<string> {
    const value = headers.connection;
    return new Set(
        (value ?? "")
            .split(",")
            .map((t) => t.trim().toLowerCase())
            .filter(Boolean),
    );
}

/** The headers sent upstream: the client's minus credentials, hop-by-hop and address headers, plus the real key. */
export function upstreamRequestHeaders(incoming: IncomingHttpHeaders, provider: Provider, realKey: string): Record<string, string | string[]> {
    const connectionNamed = namedInConnection(incoming);
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(incoming)) {
        if (value === undefined) continue;
        if (HOP_BY_HOP.has(name) || CREDENTIAL_HEADERS.has(name) || ADDRESS_HEADERS.has(name) || connectionNamed.has(name)) continue;
        if (name.startsWith("x-forwarded-") || name.startsWith("proxy-")) continue;
        out[name] = value;
    }
    // Identity, so error bodies can be scrubbed and usage metered without inflating.
    out["accept-encoding"] = "identity";
    if (provider === "anthropic") out["x-api-key"] = realKey;
    else out.authorization = `Bearer ${realKey}`;
    return out;
}

/** Response headers passed back to the agent: hop-by-hop and cookies removed, every value scrubbed of secrets. */
export function clientResponseHeaders(upstream: Record<string, string | string[] | undefined>, secrets: readonly string[]): Record<string, string | string[]> {
    const connectionNamed = namedInConnection(upstream as IncomingHttpHeaders);
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(upstream)) {
        if (value === undefined) continue;
        const lower = name.toLowerCase();
        if (HOP_BY_HOP.has(lower) || connectionNamed.has(lower) || lower === "set-cookie") continue;
        out[lower] = Array.isArray(value) ? value.map((v) => scrubSecrets(v, secrets)) : scrubSecrets(value, secrets);
    }
    return out;
}

/** The credential an agent presents, in the header its provider's SDK uses. */
export function presentedCredential(headers: IncomingHttpHeaders, provider: Provider): string | undefined {
    if (provider === "anthropic") {
        const value = headers["x-api-key"];
        return typeof value === "string" && value.length > 0 ? value : undefined;
    }
    const match = /^Bearer ([^\s]+)$/.exec(headers.authorization ?? "");
    return match?.[1];
}

export function credentialDigest(credential: string): string {
    return createHash("sha256").update(credential, "utf8").digest("hex");
}

export type AgentEntry = AgentIdentity & {
    /** sha256 (hex) of the agent's credential: the proxy never holds the credential itself. */
    credentialSha256: string;
    budget?: { dailyUsd?: number; monthlyUsd?: number; totalUsd?: number };
};

export type AuthDecision = { ok: true; agent: AgentEntry } | { ok: false; reason: "missing" | "unknown" | "wrong_network" | "wrong_port" };

/**
 * Finds the agent a credential belongs to and checks the connection came the agent's way: from inside its subnet
 * to the main listener, or to its own port's listener. The lookup is by digest, and the digest comparison is
 * constant-time, so timing says nothing about the credential.
 */
export function authenticate(credential: string | undefined, arrival: Arrival, agentsByDigest: ReadonlyMap<string, AgentEntry>): AuthDecision {
    if (credential === undefined) return { ok: false, reason: "missing" };
    const digest = credentialDigest(credential);
    const agent = agentsByDigest.get(digest);
    if (!agent || !timingSafeEqual(Buffer.from(agent.credentialSha256, "hex"), Buffer.from(digest, "hex"))) {
        return { ok: false, reason: "unknown" };
    }
    if (!arrivedAs(agent, arrival)) return { ok: false, reason: agent.port === undefined ? "wrong_network" : "wrong_port" };
    return { ok: true, agent };
}

export type ErrorKind = "authentication" | "forbidden" | "bad_request" | "too_large" | "rate_limited" | "budget" | "ledger" | "upstream" | "timeout";

const ERROR_SHAPES: Record<ErrorKind, { status: number; anthropic: string; openai: [type: string, code: string | null]; message: string }> = {
    authentication: { status: 401, anthropic: "authentication_error", openai: ["invalid_request_error", "invalid_api_key"], message: "invalid credential" },
    forbidden: { status: 403, anthropic: "permission_error", openai: ["invalid_request_error", "endpoint_not_allowed"], message: "this endpoint is not available through the key proxy" },
    bad_request: { status: 400, anthropic: "invalid_request_error", openai: ["invalid_request_error", "invalid_request"], message: "the proxy could not meter this request" },
    budget: { status: 429, anthropic: "budget_exceeded", openai: ["budget_exceeded", "budget_exceeded"], message: "this agent's spend budget does not cover this request" },
    ledger: { status: 503, anthropic: "api_error", openai: ["server_error", "spend_ledger_unavailable"], message: "the key proxy cannot record spend right now (its ledger cannot be written); metered requests are refused until it can" },
    too_large: { status: 413, anthropic: "request_too_large", openai: ["invalid_request_error", "request_too_large"], message: "request too large" },
    rate_limited: { status: 429, anthropic: "rate_limit_error", openai: ["rate_limit_error", "rate_limit_exceeded"], message: "too many concurrent requests for this agent" },
    upstream: { status: 502, anthropic: "api_error", openai: ["server_error", null], message: "upstream unavailable" },
    timeout: { status: 504, anthropic: "api_error", openai: ["server_error", "timeout"], message: "upstream timed out" },
};

/** An error response in the shape the agent's SDK for that provider understands. Echoes nothing from the request. */
export function providerError(provider: Provider, kind: ErrorKind, message = ERROR_SHAPES[kind].message): { status: number; body: string } {
    const shape = ERROR_SHAPES[kind];
    const body =
        provider === "anthropic"
            ? { type: "error", error: { type: shape.anthropic, message } }
            : { error: { message, type: shape.openai[0], param: null, code: shape.openai[1] } };
    return { status: shape.status, body: JSON.stringify(body) };
}

// Anything shaped like a provider key or one of our credentials, whole or partly masked (OpenAI echoes the key's
// prefix, then stars, then its last four characters).
const KEY_SHAPED = /\b(?:sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_*-]{4,}|ocp_[A-Za-z0-9*]{4,})/g;

/** Secrets shorter than this are not scrubbed verbatim: they would match ordinary text. */
export const MIN_SECRET_LENGTH = 8;

/** Removes every key-shaped string, and each given secret verbatim, from an upstream error body or header value. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
    let out = text;
    for (const secret of secrets) if (secret.length >= MIN_SECRET_LENGTH) out = out.split(secret).join("[redacted]");
    return out.replace(KEY_SHAPED, "[redacted]");
}
