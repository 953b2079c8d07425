// The transport around the Ingress's policy: TLS in, the agent's gateway out (HTTP with streaming, SSE, WebSocket
// upgrades), the user's credential removed and who they are attached for the gateway's trusted-proxy auth. Browsers
// sign in at /signin and carry a session cookie instead of a bearer header.
import { once } from "node:events";
import http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import { WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import { closeServer, portOf, startAdminServers } from "../../runtime/admin";
import { AuditLog, auditAddress, auditField } from "../../runtime/audit";
import type { Logger } from "../../runtime/log";
import { AuditBudget, RateLimiter } from "../../runtime/rateLimiter";
import { type IngressConfig, registryDirs } from "./config";
import { type IngressMetrics, ingressMetrics } from "./metrics";
import { GATEWAY_IDENTITY, type IngressAgent, type IngressUser, authenticate, isChatRequest, isPageLoad, isSameOrigin, isUnreadPrompt, mayReach, openAiError, routeRequest, signInNext } from "./policy";
import { type CompiledRule, type RuleHit, applyFrameRules, applyRules, compileRules } from "./rules";
import { CLEARED_SESSION_COOKIE, SessionStore, cookiesForGateway, sessionCookie, sessionFromCookies } from "./sessions";
import { SIGN_IN_PAGE_HEADERS, SIGN_IN_PATH, SIGN_OUT_PATH, signInPage } from "./signInPage";

/** Every security event the Ingress writes to its audit stream, with the only fields each may carry. */
export const INGRESS_AUDIT_EVENTS = {
    /** `unaudited`: failures from this address refused since its last audited one, but not written (the audit budget). */
    auth_failed: z.object({ reason: auditField.name, remote: auditField.address, unaudited: auditField.count }),
    route_refused: z.object({ user: auditField.name, reason: auditField.name }),
    forbidden: z.object({ user: auditField.name, agent: auditField.name }),
    rate_limited: z.object({ user: auditField.name, agent: auditField.name, limit: z.enum(["rate", "read_rate", "concurrency"]) }),
    rule_hit: z.object({ user: auditField.name, agent: auditField.name, rule: auditField.name, action: z.enum(["strip", "reject"]), role: auditField.name, textSha256: auditField.digest }),
    revoked: z.object({ user: auditField.name, connections: auditField.count, sessions: auditField.count }),
    signed_in: z.object({ user: auditField.name, remote: auditField.address }),
    signed_out: z.object({ user: auditField.name }),
};

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade", "host"]);
/**
 * Client headers the gateway never gets as sent: the user's credential and cookies (the session cookie is taken
 * out, the rest re-added), and claims about the client only the Ingress may make (identity, scopes, addresses).
 */
const WITHHELD = new Set(["authorization", "cookie", "forwarded", "x-real-ip", "content-length"]);
const withheld = (name: string) => WITHHELD.has(name) || name.startsWith("x-forwarded-") || name.startsWith("x-openclaw-") || name.startsWith("proxy-");

/** What the agent's gateway gets: the client's headers as allowed, and who is asking, as only the Ingress may say. */
function gatewayHeaders(req: http.IncomingMessage, user: IngressUser): Record<string, string | string[]> {
    const { headers } = req;
    const named = new Set((headers.connection ?? "").split(",").map((t) => t.trim().toLowerCase()));
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(headers)) {
        if (value === undefined || withheld(name)) continue;
        if (HOP_BY_HOP.has(name) || named.has(name)) continue;
        out[name] = value;
    }
    const host = headers.host ?? "ingress";
    const cookie = cookiesForGateway(headers.cookie);
    return {
        ...out,
        host,
        ...(cookie && { cookie }),
        [GATEWAY_IDENTITY.userHeader]: user.name,
        "x-forwarded-proto": "https",
        "x-forwarded-host": host,
        "x-forwarded-for": (req.socket.remoteAddress ?? "").replace(/^::ffff:/, ""),
        [GATEWAY_IDENTITY.scopesHeader]: GATEWAY_IDENTITY.scopes.join(","),
    };
}

function downstreamHeaders(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
    const named = new Set((headers.connection ?? "").split(",").map((t) => t.trim().toLowerCase()));
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name) && !named.has(name)) out[name] = value;
    }
    return out;
}

/** The whole body, or undefined once it passes `max` bytes (the rest is then read and dropped). */
function readBounded(req: http.IncomingMessage, max: number): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        let size = 0;
        req.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size <= max) chunks.push(chunk);
            else if (chunks.length > 0) {
                chunks.length = 0;
                resolve(undefined);
            }
        });
        req.once("end", () => resolve(size <= max ? Buffer.concat(chunks) : undefined));
        req.once("error", reject);
        // After "end" this changes nothing; before it, the client went away mid-body.
        req.once("close", () => reject(new Error("the client closed the request")));
    });
}

/** The close codes an endpoint may send (RFC 6455 7.4): the others only describe a close that had none. */
const SENDABLE_CLOSE_CODE = (code: number) => (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);

/** What may wait unsent to one side of a WebSocket before the connection is cut. */
const MAX_WEBSOCKET_BUFFER = 16 * 1024 * 1024;

interface Refusal {
    ok: false;
    status: number;
    code: string;
    message: string;
    /** A browser's page load without a sign-in: sent to the sign-in page instead. */
    signIn?: string;
}
type Admission = { ok: true; user: IngressUser; agent: IngressAgent; path: string; release: () => void } | Refusal;

const refusal = (status: number, code: string, message: string): Refusal => ({ ok: false, status, code, message });

export class IngressServer {
    readonly metrics: IngressMetrics = ingressMetrics();
    readonly audit: AuditLog<typeof INGRESS_AUDIT_EVENTS>;
    private readonly server: https.Server;
    private adminServers: http.Server[] = [];
    private users: IngressUser[] = [];
    private agents = new Map<string, IngressAgent>();
    private readonly rules: CompiledRule[];
    private readonly limiter: RateLimiter;
    private readonly readLimiter: RateLimiter;
    private readonly failureAudit: AuditBudget;
    private readonly active = new Map<string, number>();
    private readonly sessions: SessionStore;
    private readonly webSockets: WebSocketServer;
    /** The subprotocol the gateway chose, for the client's handshake. */
    private readonly chosenProtocols = new WeakMap<http.IncomingMessage, string>();
    /** Open client connections by user and by agent: closed when either is removed or changed. */
    private readonly byUser = new Map<string, Set<Duplex>>();
    private readonly byAgent = new Map<string, Set<Duplex>>();
    private readonly upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 512 });

    constructor(
        private readonly config: IngressConfig,
        private readonly log: Logger,
        /** Milliseconds, for the rate limits (tests drive it). */
        now: () => number = () => performance.now(),
    ) {
        this.rules = compileRules(config.rules);
        this.limiter = new RateLimiter(config.limits.ratePerSecond, config.limits.burst, now);
        this.readLimiter = new RateLimiter(config.limits.readsPerSecond, config.limits.readBurst, now);
        this.failureAudit = new AuditBudget(config.limits.auditedAuthFailuresPerSecond, config.limits.auditedAuthFailuresBurst, now);
        this.sessions = new SessionStore(config.limits.sessionSeconds * 1000, config.limits.maxSessionsPerUser);
        this.webSockets = new WebSocketServer({
            noServer: true,
            perMessageDeflate: false,
            maxPayload: config.limits.maxChatBodyBytes,
            handleProtocols: (_offered, req) => this.chosenProtocols.get(req) ?? false,
        });
        this.audit = new AuditLog({
            dir: registryDirs(config).audit,
            service: "ingress",
            events: INGRESS_AUDIT_EVENTS,
            rotation: config.auditRotation,
            onProblem: (problem) => {
                if (problem.kind === "write_failed") this.metrics.auditFailures.inc(problem.lost);
                log(`audit_${problem.kind}`, problem);
            },
        });
        this.server = https.createServer(
            {
                cert: config.tls.certPem,
                key: config.tls.keyPem,
                minVersion: "TLSv1.2",
                headersTimeout: config.limits.requestHeadTimeoutMs,
                connectionsCheckingInterval: Math.min(1000, Math.ceil(config.limits.requestHeadTimeoutMs / 2)),
            },
            // A client that goes away mid-body rejects the read: nothing is left to answer.
            (req, res) => void this.handle(req, res).catch(() => res.destroy()),
        );
        this.server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
            try {
                this.handleUpgrade(req, socket, head);
            } catch (error) {
                socket.destroy();
                log("upgrade_failed", { error: (error as Error).message.slice(0, 200) });
            }
        });
        this.server.on("clientError", (_error, socket) => socket.destroy());
    }

    setUsers(users: readonly IngressUser[]) {
        const next = new Map(users.map((user) => [user.name, JSON.stringify(user)]));
        for (const user of this.users) {
            if (next.get(user.name) === JSON.stringify(user)) continue;
            const closed = this.closeAll(this.byUser, user.name);
            const sessions = this.sessions.revokeUser(user.name);
            this.limiter.forget(user.name);
            this.readLimiter.forget(user.name);
            void this.audit.record({ type: "revoked", user: user.name, connections: closed, sessions });
        }
        this.users = [...users];
        this.metrics.registeredUsers.set(users.length);
    }

    setAgents(agents: readonly IngressAgent[]) {
        const next = new Map(agents.map((agent) => [agent.name, agent]));
        for (const [name, agent] of this.agents) {
            if (JSON.stringify(next.get(name)) !== JSON.stringify(agent)) this.closeAll(this.byAgent, name);
        }
        this.agents = next;
        this.metrics.registeredAgents.set(agents.length);
    }

    async listen(): Promise<{ port: number; adminPorts: number[] }> {
        this.server.listen(this.config.listen.port, this.config.listen.host);
        await once(this.server, "listening");
        this.adminServers = await startAdminServers(this.config.admin, this.metrics.registry, () => this.server.listening && !this.audit.failing);
        const ports = { port: portOf(this.server), adminPorts: this.adminServers.map(portOf) };
        this.log("listening", { port: ports.port, admin: ports.adminPorts.join(",") });
        return ports;
    }

    async close(): Promise<void> {
        for (const sockets of this.byUser.values()) for (const socket of sockets) socket.destroy();
        this.webSockets.close();
        await Promise.all([this.server, ...this.adminServers].map(closeServer));
        this.upstreamAgent.destroy();
        await this.audit.close();
    }

    private closeAll(index: Map<string, Set<Duplex>>, key: string): number {
        const sockets = index.get(key);
        if (!sockets) return 0;
        for (const socket of sockets) socket.destroy();
        index.delete(key);
        return sockets.size;
    }

    private track(user: string, agent: string, socket: Duplex): () => void {
        const sets = [this.setOf(this.byUser, user), this.setOf(this.byAgent, agent)];
        for (const set of sets) set.add(socket);
        return () => {
            for (const set of sets) set.delete(socket);
        };
    }

    private setOf(index: Map<string, Set<Duplex>>, key: string): Set<Duplex> {
        let set = index.get(key);
        if (!set) index.set(key, (set = new Set()));
        return set;
    }

    /**
     * Who is asking: the bearer token when the request carries one, else the browser's session cookie (then
     * `viaCookie`, and anything but a read must come from the Ingress's own origin).
     */
    private identify(req: http.IncomingMessage): { ok: true; user: IngressUser; viaCookie: boolean } | { ok: false; reason: string } {
        if (req.headers.authorization !== undefined) {
            const auth = authenticate(req.headers.authorization, this.users);
            return auth.ok ? { ...auth, viaCookie: false } : auth;
        }
        const session = sessionFromCookies(req.headers.cookie);
        const name = this.sessions.userOf(session);
        const user = name === undefined ? undefined : this.users.find((u) => u.name === name);
        if (user) return { ok: true, user, viaCookie: true };
        return { ok: false, reason: session === undefined ? "no_token" : "no_session" };
    }

    /** Who is asking, for which agent, and whether they may now: every refusal is counted and audited here. */
    private admit(req: http.IncomingMessage, upgrade = false): Admission {
        const identity = this.identify(req);
        if (!identity.ok) {
            if (!upgrade && isPageLoad(req.method, req.headers.accept)) {
                const next = signInNext(req.url);
                return this.refused({ ...refusal(303, "sign_in", "sign in first"), signIn: next ? `${SIGN_IN_PATH}?${new URLSearchParams({ next })}` : SIGN_IN_PATH }, "sign_in");
            }
            this.auditAuthFailure(identity.reason, auditAddress(req.socket.remoteAddress));
            return this.refused(refusal(401, "unauthorized", "a valid bearer token is required"), identity.reason);
        }
        const { user } = identity;
        // A read (GET/HEAD, never an upgrade) changes nothing: it needs no origin check and has its own rate.
        const read = !upgrade && (req.method === "GET" || req.method === "HEAD");
        if (identity.viaCookie && !read && !isSameOrigin(req.headers.origin, req.headers.host)) {
            void this.audit.record({ type: "route_refused", user: user.name, reason: "cross_origin" });
            return this.refused(refusal(403, "cross_origin", "a signed-in browser may send this only from the Ingress's own pages"), "cross_origin");
        }
        const route = routeRequest(req.url ?? "");
        if (!route.ok) {
            void this.audit.record({ type: "route_refused", user: user.name, reason: route.reason });
            return this.refused(refusal(route.status, route.reason, route.status === 404 ? "no such route: use /agents/<name>/..." : "this request target is not accepted"), route.reason);
        }
        if (!mayReach(user, route.agent)) {
            void this.audit.record({ type: "forbidden", user: user.name, agent: route.agent });
            return this.refused(refusal(403, "forbidden", "this token may not reach that agent"), "forbidden");
        }
        if (isUnreadPrompt(req.method, route.path)) {
            void this.audit.record({ type: "route_refused", user: user.name, reason: "unread_prompt" });
            return this.refused(refusal(404, "not_served", "this endpoint is not served through the Ingress: use /v1/chat/completions"), "unread_prompt");
        }
        const agent = this.agents.get(route.agent);
        if (!agent) return this.refused(refusal(503, "agent_unavailable", "that agent is not available"), "agent_unavailable");
        const limit = !(read ? this.readLimiter : this.limiter).take(user.name) ? (read ? "read_rate" : "rate") : (this.active.get(user.name) ?? 0) >= this.config.limits.maxConcurrentPerUser ? "concurrency" : undefined;
        if (limit) {
            void this.audit.record({ type: "rate_limited", user: user.name, agent: agent.name, limit });
            return this.refused(refusal(429, `${limit}_limited`, limit === "concurrency" ? "too many requests at once" : "too many requests"), `${limit}_limited`);
        }
        this.active.set(user.name, (this.active.get(user.name) ?? 0) + 1);
        this.metrics.active.inc({ user: user.name });
        const untrack = this.track(user.name, agent.name, req.socket);
        let released = false;
        const release = () => {
            if (released) return;
            released = true;
            untrack();
            this.active.set(user.name, (this.active.get(user.name) ?? 1) - 1);
            this.metrics.active.dec({ user: user.name });
        };
        return { ok: true, user, agent, path: route.path, release };
    }

    private auditAuthFailure(reason: string, remote: string) {
        const unaudited = this.failureAudit.admit(remote);
        if (unaudited !== undefined) void this.audit.record({ type: "auth_failed", reason, remote, unaudited });
    }

    private refused(answer: Refusal, reason: string): Refusal {
        this.metrics.refusals.inc({ reason });
        return answer;
    }

    private async handle(req: http.IncomingMessage, res: http.ServerResponse) {
        const target = (req.url ?? "").split("?")[0];
        if (target === SIGN_IN_PATH) return this.signIn(req, res);
        if (target === SIGN_OUT_PATH) return this.signOut(req, res);
        if (target === "/" && isPageLoad(req.method, req.headers.accept)) return this.redirect(res, SIGN_IN_PATH);
        const admission = this.admit(req);
        if (!admission.ok) return this.answer(res, admission);
        const { user, agent, path, release } = admission;
        res.once("close", release);
        let body: Buffer | undefined;
        if (isChatRequest(req.method, path)) {
            const read = await this.readChat(req, user, agent);
            if (!read.ok) return this.answer(res, read);
            body = read.body;
        }
        const started = performance.now();
        const upstream = http.request({
            host: agent.gateway.host,
            port: agent.gateway.port,
            method: req.method,
            path,
            agent: this.upstreamAgent,
            timeout: this.config.limits.connectTimeoutMs,
            headers: {
                ...gatewayHeaders(req, user),
                ...(body ? { "content-length": String(body.length) } : req.headers["content-length"] ? { "content-length": req.headers["content-length"] } : {}),
            },
        });
        // The timeout bounds the connect only: an agent may take minutes to its first byte, and a stream may pause.
        upstream.once("socket", (socket) => {
            if (socket.connecting) socket.once("connect", () => upstream.setTimeout(0));
            else upstream.setTimeout(0);
        });
        upstream.once("timeout", () => upstream.destroy(new Error("connect timeout")));
        upstream.once("response", (answer) => {
            res.writeHead(answer.statusCode ?? 502, downstreamHeaders(answer.headers));
            // Server-sent events go out as they come: headers at once, and every chunk as the gateway writes it.
            res.flushHeaders();
            answer.pipe(res);
            answer.once("end", () => {
                this.metrics.requests.inc({ user: user.name, agent: agent.name, status: `${Math.floor((answer.statusCode ?? 502) / 100)}xx` });
                this.log("request", { user: user.name, agent: agent.name, method: req.method, status: answer.statusCode, ms: Math.round(performance.now() - started) });
            });
        });
        upstream.once("error", () => {
            if (!res.headersSent) this.answer(res, refusal(502, "agent_unreachable", "the agent's gateway did not answer"));
            else res.destroy();
        });
        res.once("close", () => {
            if (!res.writableFinished) upstream.destroy();
        });
        if (body) upstream.end(body);
        else req.pipe(upstream);
    }

    /** Reads a chat request (bounded), applies the rules, audits every hit: the body to forward, or the answer. */
    private async readChat(req: http.IncomingMessage, user: IngressUser, agent: IngressAgent): Promise<{ ok: true; body: Buffer } | Refusal> {
        const raw = await readBounded(req, this.config.limits.maxChatBodyBytes);
        if (!raw) return this.refused(refusal(413, "body_too_large", "the request body is too large"), "body_too_large");
        let parsed: unknown;
        try {
            parsed = JSON.parse(raw.toString("utf8"));
        } catch {
            return this.refused(refusal(400, "invalid_json", "the request body is not JSON"), "invalid_json");
        }
        const verdict = applyRules(parsed, this.rules);
        if (verdict.kind === "malformed") return this.refused(refusal(400, "invalid_request", `the request is not a chat completion request: ${verdict.reason}`), "invalid_request");
        this.recordHits(verdict.hits, user, agent);
        if (verdict.kind === "reject") return this.refused(refusal(400, "prompt_rejected", `the request was rejected by rule '${verdict.rule}'`), "prompt_rejected");
        return { ok: true, body: verdict.body === undefined ? raw : Buffer.from(JSON.stringify(verdict.body)) };
    }

    /** Every rule hit, counted and audited: a chat request's or a WebSocket frame's. */
    private recordHits(hits: readonly RuleHit[], user: IngressUser, agent: IngressAgent) {
        for (const hit of hits) {
            this.metrics.ruleHits.inc({ rule: hit.rule, action: hit.action });
            void this.audit.record({ type: "rule_hit", user: user.name, agent: agent.name, ...hit });
        }
    }

    /**
     * GET: the sign-in form (saying who is signed in, if anyone). POST (a form with `token` and `next`): a valid
     * token gets a session cookie and a redirect to `next` (an agent's Control UI) or the user's first agent.
     */
    private async signIn(req: http.IncomingMessage, res: http.ServerResponse) {
        const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "");
        if (req.method === "GET" || req.method === "HEAD") return this.page(res, 200, { next: signInNext(query.get("next") ?? undefined) });
        if (req.method !== "POST") return this.answer(res, refusal(405, "method_not_allowed", "use GET or POST"));
        const remote = auditAddress(req.socket.remoteAddress);
        // A browser always names the page a form came from: one of another origin would sign its visitor in here.
        if (!isSameOrigin(req.headers.origin, req.headers.host)) return this.answer(res, this.refused(refusal(403, "cross_origin", "sign in from the Ingress's own page"), "cross_origin"));
        const raw = await readBounded(req, 8192);
        if (!raw) return this.answer(res, this.refused(refusal(413, "body_too_large", "the request body is too large"), "body_too_large"));
        const form = new URLSearchParams(raw.toString("utf8"));
        const next = signInNext(form.get("next") ?? undefined);
        const auth = authenticate(`Bearer ${form.get("token") ?? ""}`, this.users);
        if (!auth.ok) {
            this.auditAuthFailure(auth.reason, remote);
            this.metrics.refusals.inc({ reason: auth.reason });
            return this.page(res, 401, { next, failed: true });
        }
        const { user } = auth;
        const session = this.sessions.create(user.name);
        void this.audit.record({ type: "signed_in", user: user.name, remote });
        this.redirect(res, next ?? (user.agents.length > 0 ? `/agents/${user.agents[0]}/` : SIGN_IN_PATH), sessionCookie(session, this.config.limits.sessionSeconds));
    }

    /** POST from the Ingress's own page: ends the session and clears the cookie. */
    private signOut(req: http.IncomingMessage, res: http.ServerResponse) {
        if (req.method !== "POST") return this.answer(res, refusal(405, "method_not_allowed", "use POST"));
        if (!isSameOrigin(req.headers.origin, req.headers.host)) return this.answer(res, this.refused(refusal(403, "cross_origin", "sign out from the Ingress's own page"), "cross_origin"));
        req.resume();
        const session = sessionFromCookies(req.headers.cookie);
        const user = this.sessions.userOf(session);
        this.sessions.remove(session);
        if (user !== undefined) void this.audit.record({ type: "signed_out", user });
        this.redirect(res, SIGN_IN_PATH, CLEARED_SESSION_COOKIE);
    }

    private page(res: http.ServerResponse, status: number, content: Parameters<typeof signInPage>[0]) {
        const html = signInPage(content);
        res.writeHead(status, { ...SIGN_IN_PAGE_HEADERS, "content-length": Buffer.byteLength(html) });
        res.end(html);
    }

    private redirect(res: http.ServerResponse, location: string, cookie?: string) {
        res.writeHead(303, { location, "content-length": 0, "cache-control": "no-store", ...(cookie && { "set-cookie": cookie }) });
        res.end();
    }

    private answer(res: http.ServerResponse, answer: Refusal) {
        if (answer.signIn) return this.redirect(res, answer.signIn);
        const { status, body } = openAiError(answer.status, answer.code, answer.message);
        res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...(status === 401 ? { "www-authenticate": "Bearer" } : {}), connection: "close" });
        res.end(body);
    }

    /**
     * A WebSocket is ended here and opened again to the gateway (both without compression), so the rules read every
     * request frame the Control UI sends. The client's handshake completes only once the gateway accepted its own.
     */
    private handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer) {
        socket.on("error", () => socket.destroy());
        const admission = this.admit(req, true);
        if (!admission.ok) return this.answerRaw(socket, admission);
        const { user, agent, path, release } = admission;
        socket.once("close", release);
        const protocols = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim()).filter((p) => p !== "");
        const headers = Object.fromEntries(Object.entries(gatewayHeaders(req, user)).filter(([name]) => !name.startsWith("sec-websocket-")));
        const upstream = new WebSocket(`ws://${agent.gateway.host}:${agent.gateway.port}${path}`, protocols, {
            headers,
            perMessageDeflate: false,
            followRedirects: false,
            handshakeTimeout: this.config.limits.connectTimeoutMs,
        });
        let opened = false;
        upstream.once("unexpected-response", (_request, answer) => {
            answer.resume();
            this.answerRaw(socket, refusal(answer.statusCode ?? 502, "upgrade_refused", "the agent's gateway refused the upgrade"));
            upstream.terminate();
        });
        upstream.on("error", () => (opened ? undefined : this.answerRaw(socket, refusal(502, "agent_unreachable", "the agent's gateway did not answer"))));
        socket.once("close", () => upstream.terminate());
        upstream.once("open", () => {
            opened = true;
            if (socket.destroyed) return upstream.terminate();
            if (upstream.protocol) this.chosenProtocols.set(req, upstream.protocol);
            this.webSockets.handleUpgrade(req, socket, head, (client) => this.relay(client, upstream, user, agent));
        });
    }

    /** Gateway to client as it comes; client to gateway through the rules, a rejected request answered here. */
    private relay(client: WebSocket, upstream: WebSocket, user: IngressUser, agent: IngressAgent) {
        this.metrics.requests.inc({ user: user.name, agent: agent.name, status: "1xx" });
        // A side that does not read what is sent to it is cut off rather than buffered for without bound.
        const send = (to: WebSocket, data: Buffer | string, binary: boolean) => {
            if (to.bufferedAmount > MAX_WEBSOCKET_BUFFER) {
                this.metrics.refusals.inc({ reason: "slow_consumer" });
                client.terminate();
                upstream.terminate();
            } else to.send(data, { binary });
        };
        upstream.on("message", (data, binary) => send(client, data as Buffer, binary));
        client.on("message", (data, binary) => {
            const frame = this.readFrame(data as Buffer, user, agent);
            if (frame.kind === "forward") send(upstream, frame.data, binary && frame.data === data);
            else if (frame.kind === "answer") send(client, frame.reply, false);
            else client.close(1008, "unreadable request");
        });
        const closeWith = (other: WebSocket) => (code: number, reason: Buffer) => {
            if (other.readyState === WebSocket.OPEN) other.close(SENDABLE_CLOSE_CODE(code) ? code : 1000, reason);
            else other.terminate();
        };
        client.once("close", closeWith(upstream));
        upstream.once("close", closeWith(client));
        client.on("error", () => upstream.terminate());
        upstream.on("error", () => client.terminate());
    }

    /** One client frame through the rules: what to forward, the answer to a rejected request, or unreadable. */
    private readFrame(data: Buffer, user: IngressUser, agent: IngressAgent): { kind: "forward"; data: Buffer | string } | { kind: "answer"; reply: string } | { kind: "unreadable" } {
        let frame: unknown;
        try {
            frame = JSON.parse(data.toString("utf8"));
        } catch {
            // Not JSON: the rules take it as malformed, as any frame that is not an object.
        }
        const verdict = applyFrameRules(frame, this.rules);
        if (verdict.kind === "malformed") {
            this.metrics.refusals.inc({ reason: "invalid_frame" });
            return { kind: "unreadable" };
        }
        this.recordHits(verdict.hits, user, agent);
        if (verdict.kind === "reject") {
            this.metrics.refusals.inc({ reason: "prompt_rejected" });
            const id = (frame as { id?: unknown }).id;
            return { kind: "answer", reply: JSON.stringify({ type: "res", id: typeof id === "string" ? id : null, ok: false, error: { code: "INVALID_REQUEST", message: `the request was rejected by rule '${verdict.rule}'` } }) };
        }
        return { kind: "forward", data: verdict.body === undefined ? data : JSON.stringify(verdict.body) };
    }

    private answerRaw(socket: Duplex, answer: Refusal) {
        if (socket.destroyed) return;
        const { status, body } = openAiError(answer.status, answer.code, answer.message);
        const extra = status === 401 ? "www-authenticate: Bearer\r\n" : "";
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`);
    }
}
