// The pure core of KeyProxy: every decision from inputs alone, no I/O. The server is a shell around it.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { type Arrival, arrivedAs } from "../../runtime/registry";
import type { AgentEntry } from "../../contracts/keyProxy";
import { BUILT_IN_IDS, ERROR_KINDS, type ErrorKind, KEY_HEADERS, KEY_PREFIX_PATTERN, type ProviderSpec } from "../../providers/index";

export type { ErrorKind };

export const ALLOWED_METHODS: ReadonlySet<string> = new Set(["GET", "POST", "DELETE"]);

export type RouteDecision =
    | { action: "forward"; provider: string; upstreamPath: string; route: string; query: string }
    | { action: "drop"; reason: string };

// Percent-encodings that could smuggle a separator past the prefix check: / \ . NUL, and % itself.
const ENCODED_SEPARATOR = /%(2f|5c|2e|00|25)/i;
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Maps an origin-form request target to its upstream path, or drops it. The path is decoded once, for
 * checking only; what goes upstream is the raw path, which after these checks decodes to the same thing.
 */
export function decideRoute(method: string, target: string, providers: ReadonlySet<string> = new Set(BUILT_IN_IDS)): RouteDecision {
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
    if (!providers.has(prefix) || rest.length === 0 || rest[0] === "") {
        return { action: "drop", reason: "unknown_route" };
    }
    const upstreamPath = rawPath.slice(prefix.length + 1);
    return { action: "forward", provider: prefix, upstreamPath: upstreamPath + query, route: upstreamPath, query };
}

/** A query without every parameter named `name` (however its name is percent-encoded); the rest byte for byte. */
export function withoutQueryParam(query: string, name: string): string {
    if (query === "") return query;
    const kept = query
        .slice(1)
        .split("&")
        .filter((pair) => queryName(pair) !== name);
    return kept.length === 0 ? "" : `?${kept.join("&")}`;
}

function queryName(pair: string): string | undefined {
    const at = pair.indexOf("=");
    try {
        return decodeURIComponent((at < 0 ? pair : pair.slice(0, at)).replaceAll("+", " "));
    } catch {
        return undefined;
    }
}

/** Every value of the query parameter `name`. */
function queryValues(query: string, name: string): string[] {
    if (query === "") return [];
    return query
        .slice(1)
        .split("&")
        .filter((pair) => queryName(pair) === name)
        .map((pair) => {
            const at = pair.indexOf("=");
            try {
                return at < 0 ? "" : decodeURIComponent(pair.slice(at + 1).replaceAll("+", " "));
            } catch {
                return "";
            }
        });
}

/** The path and query that go upstream: a credential the agent put in the query is never forwarded (nor logged). */
export function upstreamTarget(decision: Extract<RouteDecision, { action: "forward" }>, provider: ProviderSpec): string {
    const param = provider.presented.queryParam;
    return param === undefined ? decision.upstreamPath : decision.route + withoutQueryParam(decision.query, param);
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

/** Headers that carry a credential (the agent's, or one an agent might try to pass along): every provider's, Azure's, cookies. */
const CREDENTIAL_HEADERS = new Set([...KEY_HEADERS, "api-key", "cookie"]);

/** Headers that would tell the upstream about our internal addresses. */
const ADDRESS_HEADERS = new Set(["forwarded", "via", "x-real-ip", "client-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip"]);

const NONE_NAMED: ReadonlySet<string> = new Set();

function namedInConnection(headers: IncomingHttpHeaders): ReadonlySet<string> {
    const value = headers.connection;
    // The common values name nothing beyond the hop-by-hop headers already dropped.
    if (value === undefined || value === "" || value === "keep-alive") return NONE_NAMED;
    return new Set(
        (value ?? "")
            .split(",")
            .map((t) => t.trim().toLowerCase())
            .filter(Boolean),
    );
}

/** The headers sent upstream: the client's minus credentials, hop-by-hop and address headers, plus the real key. */
export function upstreamRequestHeaders(incoming: IncomingHttpHeaders, provider: ProviderSpec, realKey: string): Record<string, string | string[]> {
    const connectionNamed = namedInConnection(incoming);
    const out: Record<string, string | string[]> = {};
    // for-in, not Object.entries: no [name, value] array per header per request.
    for (const name in incoming) {
        const value = incoming[name];
        if (value === undefined) continue;
        if (HOP_BY_HOP.has(name) || CREDENTIAL_HEADERS.has(name) || ADDRESS_HEADERS.has(name) || connectionNamed.has(name)) continue;
        if (name.startsWith("x-forwarded-") || name.startsWith("proxy-")) continue;
        out[name] = value;
    }
    // Identity, so error bodies can be scrubbed and usage metered without inflating.
    out["accept-encoding"] = "identity";
    out[provider.attach.header] = provider.attach.bearer ? `Bearer ${realKey}` : realKey;
    return out;
}

/** Response headers passed back to the agent: hop-by-hop and cookies removed, every value scrubbed of secrets. */
export function clientResponseHeaders(upstream: Record<string, string | string[] | undefined>, secrets: readonly string[]): Record<string, string | string[]> {
    const connectionNamed = namedInConnection(upstream as IncomingHttpHeaders);
    const out: Record<string, string | string[]> = {};
    for (const name in upstream) {
        const value = upstream[name];
        if (value === undefined) continue;
        const lower = name.toLowerCase();
        if (HOP_BY_HOP.has(lower) || connectionNamed.has(lower) || lower === "set-cookie") continue;
        out[lower] = Array.isArray(value) ? value.map((v) => scrubSecrets(v, secrets)) : scrubSecrets(value, secrets);
    }
    return out;
}

/**
 * The credential an agent presents, where its provider's SDK puts the key: a header, or for some providers a
 * query parameter instead. Two different values (header and query, or a repeated parameter) present none.
 */
export function presentedCredential(headers: IncomingHttpHeaders, provider: ProviderSpec, query = ""): string | undefined {
    const found: string[] = [];
    for (const { header, bearer } of provider.presented.headers) {
        const value = headers[header];
        if (typeof value !== "string" || value.length === 0) continue;
        const credential = bearer ? /^Bearer ([^\s]+)$/.exec(value)?.[1] : value;
        if (credential !== undefined) found.push(credential);
    }
    const { queryParam } = provider.presented;
    if (queryParam !== undefined) found.push(...queryValues(query, queryParam).filter((v) => v.length > 0));
    return new Set(found).size === 1 ? found[0] : undefined;
}

export function credentialDigest(credential: string): string {
    return createHash("sha256").update(credential, "utf8").digest("hex");
}

export type { AgentEntry };

/** A refusal of a registered credential that came the wrong way names whose it is (`credentialOf`), for the audit trail. */
export type AuthDecision =
    | { ok: true; agent: AgentEntry }
    | { ok: false; reason: "missing" | "unknown" }
    | { ok: false; reason: "wrong_network" | "wrong_port"; credentialOf: string };

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
    if (!arrivedAs(agent, arrival)) return { ok: false, reason: agent.port === undefined ? "wrong_network" : "wrong_port", credentialOf: agent.name };
    return { ok: true, agent };
}

/** An error response in the shape the agent's SDK for that provider understands. Echoes nothing from the request. */
export function providerError(provider: ProviderSpec, kind: ErrorKind, message = ERROR_KINDS[kind].message): { status: number; body: string } {
    const { status } = ERROR_KINDS[kind];
    return { status, body: JSON.stringify(provider.errorBody(kind, status, message)) };
}

// Anything shaped like a provider key (by the registry's key prefixes) or one of our credentials, whole or partly
// masked (OpenAI echoes the key's prefix, then stars, then its last four characters).
const KEY_SHAPED = new RegExp(`\\b(?:(?:${KEY_PREFIX_PATTERN})[A-Za-z0-9_*-]{4,}|ocp_[A-Za-z0-9*]{4,})`, "g");

/** Secrets shorter than this are not scrubbed verbatim: they would match ordinary text. */
export const MIN_SECRET_LENGTH = 8;

/** Removes every key-shaped string, and each given secret verbatim, from an upstream error body or header value. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
    let out = text;
    for (const secret of secrets) if (secret.length >= MIN_SECRET_LENGTH && out.includes(secret)) out = out.split(secret).join("[redacted]");
    return out.replace(KEY_SHAPED, "[redacted]");
}
