// The Ingress's decisions, pure: who is asking (bearer token against stored digests), where to (the agent in the
// path), whether they may, and whether they are over their rate. The server around it only moves bytes.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IngressUser } from "../../contracts/ingress";
import { AGENT_NAME } from "../../runtime/registry";

export { GATEWAY_IDENTITY, type IngressAgent, type IngressUser, USER_TOKEN, tokenDigest } from "../../contracts/ingress";

export type Authentication = { ok: true; user: IngressUser } | { ok: false; reason: "no_token" | "bad_token" };

/**
 * The user whose token the Authorization header carries. Every stored digest is compared, in constant time, with
 * no early exit: the time taken says nothing about which user (if any) came close.
 */
export function authenticate(authorization: string | undefined, users: readonly IngressUser[]): Authentication {
    const presented = /^Bearer ([\x21-\x7e]{1,512})$/.exec(authorization ?? "")?.[1];
    if (presented === undefined) return { ok: false, reason: "no_token" };
    const digest = createHash("sha256").update(presented, "utf8").digest();
    let found: IngressUser | undefined;
    for (const user of users) {
        if (timingSafeEqual(digest, Buffer.from(user.tokenSha256, "hex")) && found === undefined) found = user;
    }
    return found ? { ok: true, user: found } : { ok: false, reason: "bad_token" };
}

export type Route = { ok: true; agent: string; path: string } | { ok: false; status: 400 | 404; reason: string };

const ROUTE = /^\/agents\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/;

/**
 * Splits `/agents/<name>/<rest>` into the agent and the path its gateway gets: the OpenAI-compatible API (`/v1/...`)
 * lives at the gateway's root, so `/<rest>` with the query; everything else is the Control UI, which the gateway
 * serves under `/agents/<name>` (its base path), so the target unchanged. The name is taken as written: no decoding,
 * no case folding. Refused: anything else, and any target a server behind could read differently: `.`/`..` segments
 * (also percent-encoded), encoded slashes or backslashes, `//`, control bytes.
 */
export function routeRequest(target: string): Route {
    if (!target.startsWith("/")) return { ok: false, status: 400, reason: "absolute_target" };
    if (/[\x00-\x20\x7f\\]|%(2f|5c|00)|\/\//i.test(target.split("?")[0])) return { ok: false, status: 400, reason: "bad_path" };
    const match = ROUTE.exec(target);
    if (!match) return { ok: false, status: 404, reason: "no_route" };
    const [, name, rest = "/", query = ""] = match;
    if (!AGENT_NAME.test(name)) return { ok: false, status: 404, reason: "no_route" };
    const segments = rest.split("/").map((segment) => segment.replace(/%2e/gi, "."));
    if (segments.some((segment) => segment === "." || segment === "..")) return { ok: false, status: 400, reason: "bad_path" };
    return { ok: true, agent: name, path: rest.startsWith(API_PREFIX) ? `${rest}${query}` : target };
}

/** The gateway's OpenAI-compatible API, at its root. */
const API_PREFIX = "/v1/";

/**
 * Where a sign-in may send the browser next: a path to an agent's Control UI, as `routeRequest` accepts it, and
 * nothing else (no other host, no scheme, no API path), so the sign-in page is no open redirect.
 */
export function signInNext(next: string | undefined): string | undefined {
    if (next === undefined || !next.startsWith("/agents/")) return undefined;
    const route = routeRequest(next);
    return route.ok && route.path === next ? next : undefined;
}

/** A browser's page load: answered with the sign-in page instead of a 401 in JSON. */
export function isPageLoad(method: string | undefined, accept: string | undefined): boolean {
    return (method === "GET" || method === "HEAD") && /\btext\/html\b/i.test(accept ?? "");
}

/**
 * A cookie-borne request that could change something (any method but GET/HEAD, and every WebSocket upgrade) must
 * come from a page of the Ingress's own origin: the browser's Origin is `https://` and the Host it asked for.
 */
export function isSameOrigin(origin: string | undefined, host: string | undefined): boolean {
    return origin !== undefined && host !== undefined && origin.toLowerCase() === `https://${host.toLowerCase()}`;
}

export function mayReach(user: IngressUser, agent: string): boolean {
    return user.agents.includes(agent);
}

/** The path of OpenClaw's OpenAI-compatible chat endpoint on the gateway: the requests the rules read. */
export const CHAT_COMPLETIONS_PATH = "/v1/chat/completions";

export function isChatRequest(method: string | undefined, path: string): boolean {
    return method === "POST" && path.split("?")[0] === CHAT_COMPLETIONS_PATH;
}

/**
 * Gateway endpoints that take a prompt the rules do not read (OpenClaw serves its Responses API beside chat
 * completions when the OpenAI-compatible surface is on): not forwarded, so no prompt goes around the rules over HTTP.
 */
const UNREAD_PROMPT_PATHS = new Set(["/v1/responses", "/v1/completions"]);

export function isUnreadPrompt(method: string | undefined, path: string): boolean {
    return method === "POST" && UNREAD_PROMPT_PATHS.has(path.split("?")[0].replace(/\/+$/, ""));
}

/** The OpenAI error shape every answer of the Ingress's own uses; the message is fixed text, never the request's. */
export function openAiError(status: number, code: string, message: string): { status: number; body: string } {
    const type = status === 429 ? "rate_limit_error" : status === 401 ? "authentication_error" : status === 403 ? "permission_error" : status >= 500 ? "server_error" : "invalid_request_error";
    return { status, body: JSON.stringify({ error: { message, type, code } }) };
}
