// The transport around the policy core: an HTTP server that streams each request to its fixed upstream.
import { once } from "node:events";
import http from "node:http";
import { sensitiveHeaders } from "node:http2";
import type { Duplex } from "node:stream";
import { createSecureContext, rootCertificates } from "node:tls";
import { type Dispatcher, Pool, errors as undiciErrors } from "undici";
import { closeServer, portOf, startAdminServers } from "../../runtime/admin";
import { AgentListeners, arrivalOf } from "../../runtime/agentListeners";
import { AgentProbe } from "./agentProbe";
import { RefusalAudit } from "./audit";
import { type LoadedConfig, configuredProviders } from "./config";
import type { LogFields, Logger } from "../../runtime/log";
import { admit } from "./admission";
import { type ApiFormat, type MeterResult, ResponseMeter, mayStream, planRequest } from "./metering";
import { type KeyProxyMetrics, type StreamMetrics, keyProxyMetrics, streamMetrics } from "./metrics";
import {
    type AgentEntry,
    type AuthDecision,
    type ErrorKind,
    type RouteDecision,
    authenticate,
    clientResponseHeaders,
    credentialDigest,
    decideRoute,
    presentedCredential,
    providerError,
    MIN_SECRET_LENGTH,
    scrubSecrets,
    upstreamRequestHeaders,
    upstreamTarget,
} from "./policy";
import type { ProviderSpec } from "../../providers/index";
import { microsToUsd } from "./budget";
import { type ResponseSecrets, StreamScrubber } from "./scrub";
import { SpendTracker, type Ticket } from "./spend";

/** Upstream error bodies are small; past this much the rest is cut before scrubbing. */
const MAX_ERROR_BODY_BYTES = 1024 * 1024;

interface Upstream {
    provider: ProviderSpec;
    pool: Pool;
    basePath: string;
    key: string;
}

/** Route decisions remembered, at most, and the longest request target remembered (past it, decided afresh). */
const MAX_REMEMBERED_ROUTES = 1000;
const MAX_REMEMBERED_TARGET = 512;

class BodyTooLarge extends Error {}
class StreamCutUpstream extends Error {
    constructor() {
        super("the upstream ended an HTTP/2 stream before its final event");
    }
}

type DispatchController = Dispatcher.DispatchController;

/**
 * A connection's last credential check: valid while the credential, provider and registry are the same (a
 * connection keeps its listener, so its agent port, and its peer address).
 */
interface CachedAuth {
    credential: string | undefined;
    provider: ProviderSpec;
    agents: ReadonlyMap<string, AgentEntry>;
    decision: AuthDecision;
    metrics: StreamMetrics;
}

/** What a client connection is owed: responses not yet sent, and whether it closes once they are. */
interface Connection {
    owed: Set<http.ServerResponse>;
    closing?: { last?: string };
    auth?: CachedAuth;
}

export class KeyProxyServer {
    readonly metrics: KeyProxyMetrics = keyProxyMetrics();
    readonly audit: RefusalAudit;
    private readonly server: http.Server;
    private adminServers: http.Server[] = [];
    private readonly upstreams = new Map<string, Upstream>();
    private readonly routePrefixes: ReadonlySet<string>;
    private agentsByDigest = new Map<string, AgentEntry>();
    private readonly activeByAgent = new Map<string, number>();
    private readonly metricChildren = new Map<string, StreamMetrics>();
    private readonly routes = new Map<string, RouteDecision>();
    private readonly connections = new WeakMap<Duplex, Connection>();
    private readonly secrets: string[];
    private readonly responseSecrets: ResponseSecrets;
    private readonly relayContext: RelayContext;
    private inFlight = 0;
    private draining = false;
    private closed = false;
    readonly spend: SpendTracker;
    private readonly agentProbe: AgentProbe | undefined;
    private readonly agentListeners: AgentListeners<http.Server>;

    constructor(
        private readonly loaded: LoadedConfig,
        private readonly log: Logger,
        now: () => Date = () => new Date(),
        /** Milliseconds, for the audit budget (tests drive it). */
        clockMs: () => number = () => performance.now(),
    ) {
        const { config, keys, extraCa } = loaded;
        const isSecret = (text: string) => scrubSecrets(text, this.secrets) !== text || this.agentsByDigest.has(credentialDigest(text));
        this.audit = new RefusalAudit(config, this.metrics, log, isSecret, clockMs);
        this.spend = new SpendTracker(config, this.metrics, log, now);
        this.agentProbe = config.agentProbe && new AgentProbe(config.agentProbe, this.metrics.agentUp, this.metrics.agentRestarts);
        // One TLS context for every upstream connection: building one per connection (as a `ca` option does)
        // re-parses the whole root store each time.
        const secureContext = createSecureContext(extraCa ? { ca: [...rootCertificates, extraCa] } : {});
        for (const [id, provider] of configuredProviders(config)) {
            const url = new URL(config.upstreams[id].baseUrl);
            this.upstreams.set(id, {
                provider,
                pool: new Pool(url.origin, {
                    connections: config.limits.maxUpstreamConnections,
                    // HTTP/2 offered first, so a server that picks by the client's preference picks it too.
                    allowH2: config.upstreamHttp2,
                    keepAliveTimeout: 30_000,
                    headersTimeout: config.limits.headersTimeoutMs,
                    bodyTimeout: config.limits.bodyIdleTimeoutMs,
                    connect: { secureContext, timeout: config.limits.connectTimeoutMs, rejectUnauthorized: true, preferH2: config.upstreamHttp2 },
                }),
                basePath: url.pathname.replace(/\/$/, ""),
                key: keys[id],
            });
        }
        this.routePrefixes = new Set(this.upstreams.keys());
        this.secrets = Object.values(keys);
        this.responseSecrets = {
            literals: this.secrets.filter((key) => key.length >= MIN_SECRET_LENGTH).map((key) => Buffer.from(key)),
            isCredential: (sha256) => this.agentsByDigest.has(sha256),
        };
        this.relayContext = { secrets: this.secrets, responseSecrets: this.responseSecrets };
        this.server = this.createListener(undefined);
        this.agentListeners = new AgentListeners(config.listen.host, (port) => this.createListener(port), log);
    }

    /** The main listener (`agentPort` undefined: agents known by their subnet), or the listener of one agent's port. */
    private createListener(agentPort: number | undefined): http.Server {
        const server = http.createServer(
            { maxHeaderSize: this.loaded.config.limits.maxHeaderBytes, noDelay: true, keepAliveTimeout: 65_000, headersTimeout: 30_000, requestTimeout: 0 },
            (req, res) => this.accept(req, res, false, agentPort),
        );
        // With this listener Node leaves `100 Continue` to us: it goes out only once the request's head passed every check.
        server.on("checkContinue", (req, res) => this.accept(req, res, true, agentPort));
        // CONNECT and upgrades are not proxy business: close the connection, say nothing (nginx's 444).
        server.on("connect", (req) => this.drop(req, "method", agentPort));
        server.on("upgrade", (req) => this.drop(req, "upgrade", agentPort));
        server.on("clientError", (error, socket) => {
            const code = (error as NodeJS.ErrnoException).code;
            const reason = code === "HPE_HEADER_OVERFLOW" ? "header_size" : "malformed";
            // A parse error is the client's doing; a reset or timeout is not a security event. (Before the close: a
            // destroyed socket no longer knows its peer.)
            if (code?.startsWith("HPE_")) this.audit.dropped(reason, undefined, { remoteAddress: (socket as Duplex & { remoteAddress?: string }).remoteAddress, agentPort });
            this.closeAfterAnswers(socket, code === "HPE_HEADER_OVERFLOW" ? "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" : undefined);
            this.metrics.refusals.inc({ agent: "unknown", provider: "none", reason });
            this.log("refused", { reason });
        });
        return server;
    }

    /** Takes the registry's entries; resolves once the listeners of agents registered by port match them. */
    setAgents(entries: readonly AgentEntry[]): Promise<void> {
        this.agentsByDigest = new Map(entries.map((e) => [e.credentialSha256, e]));
        this.metrics.registeredAgents.set(entries.length);
        this.spend.track(entries);
        this.agentProbe?.setAgents(entries);
        return this.agentListeners.sync(entries);
    }

    async listen(): Promise<{ port: number; adminPorts: number[] }> {
        const { config } = this.loaded;
        this.server.listen(config.listen.port, config.listen.host);
        await once(this.server, "listening");
        this.adminServers = await startAdminServers(config.admin, this.metrics.registry, () => !this.draining && !this.audit.failing);
        this.agentProbe?.start();
        const port = portOf(this.server);
        const adminPorts = this.adminServers.map(portOf);
        this.log("listening", { port, admin: adminPorts.join(",") });
        return { port, adminPorts };
    }

    /** Stops accepting, lets in-flight requests finish until the deadline, then cuts what is left. */
    async drain(deadlineMs = this.loaded.config.drainSeconds * 1000): Promise<void> {
        this.draining = true;
        this.log("draining", { in_flight: this.inFlight, deadline_ms: deadlineMs });
        const listeners = [this.server, ...this.agentListeners.servers];
        const closed = Promise.all(listeners.map((server) => new Promise((resolve) => server.close(resolve))));
        for (const server of listeners) server.closeIdleConnections();
        const deadline = Date.now() + deadlineMs;
        while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const cut = this.inFlight;
        for (const server of listeners) server.closeAllConnections();
        await closed;
        await this.close();
        this.log("drained", { cut_streams: cut });
    }

    async close(): Promise<void> {
        if (this.closed) return;
        this.closed = true;
        this.agentProbe?.stop();
        await Promise.all([this.agentListeners.close(), ...[this.server, ...this.adminServers].map(closeServer)]);
        await Promise.all([...this.upstreams.values()].map((u) => u.pool.close()));
        await this.spend.close();
        await this.audit.close();
    }

    private connection(socket: Duplex): Connection {
        let connection = this.connections.get(socket);
        if (!connection) {
            connection = { owed: new Set() };
            this.connections.set(socket, connection);
        }
        return connection;
    }

    private accept(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean, agentPort: number | undefined) {
        const connection = this.connection(req.socket);
        // Pipelined after a request that closes the connection: never answered.
        if (connection.closing) return;
        connection.owed.add(res);
        res.on("close", () => {
            connection.owed.delete(res);
            this.closeIfDue(req.socket, connection);
        });
        this.handle(req, res, expectsContinue, agentPort);
    }

    /**
     * Closes a connection (sending `last` first, when given) once the answers it owes to requests pipelined before
     * this point are sent: a hostile request never costs the valid ones before it their answers.
     */
    private closeAfterAnswers(socket: Duplex, last?: string) {
        const connection = this.connection(socket);
        connection.closing ??= { last };
        this.closeIfDue(socket, connection);
    }

    private closeIfDue(socket: Duplex, connection: Connection) {
        if (!connection.closing || connection.owed.size > 0) return;
        if (connection.closing.last !== undefined && socket.writable) socket.end(connection.closing.last);
        else socket.destroy();
    }

    private drop(req: http.IncomingMessage, reason: string, agentPort: number | undefined, res?: http.ServerResponse) {
        this.metrics.refusals.inc({ agent: "unknown", provider: "none", reason });
        this.log("dropped", { reason, method: req.method?.slice(0, 16) ?? null, remote: req.socket.remoteAddress ?? null });
        this.audit.dropped(reason, req.method?.slice(0, 16), { remoteAddress: req.socket.remoteAddress, agentPort });
        if (res) this.connection(req.socket).owed.delete(res);
        this.closeAfterAnswers(req.socket);
    }

    private respondError(res: http.ServerResponse, provider: ProviderSpec, kind: ErrorKind, close = false) {
        const { status, body } = providerError(provider, kind);
        res.writeHead(status, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            ...(close ? { connection: "close" } : {}),
        });
        res.end(body);
        return status;
    }

    /**
     * The agent behind a request's credential, and its metric children. A client sends the same credential on every
     * request of a keep-alive connection from the same address: the digest and lookup run once per connection, and
     * again only when the credential or the registry changes.
     */
    private identify(req: http.IncomingMessage, provider: ProviderSpec, query: string, agentPort: number | undefined): CachedAuth {
        const connection = this.connection(req.socket);
        const credential = presentedCredential(req.headers, provider, query);
        const cached = connection.auth;
        if (cached && cached.credential === credential && cached.provider === provider && cached.agents === this.agentsByDigest) return cached;
        const decision = authenticate(credential, arrivalOf(agentPort, req.socket), this.agentsByDigest);
        const agentName = decision.ok ? decision.agent.name : "unknown";
        const childKey = `${agentName}\u0000${provider.id}`;
        let metrics = this.metricChildren.get(childKey);
        if (!metrics) {
            metrics = streamMetrics(this.metrics, agentName, provider.id);
            this.metricChildren.set(childKey, metrics);
        }
        connection.auth = { credential, provider, agents: this.agentsByDigest, decision, metrics };
        return connection.auth;
    }

    /**
     * decideRoute, remembered: agents send the same few targets over and over. Bounded (short targets only, cleared
     * when full); a decision is a pure function of its method and target, and is never changed after it is made.
     */
    private route(method: string, target: string): RouteDecision {
        if (target.length > MAX_REMEMBERED_TARGET) return decideRoute(method, target, this.routePrefixes);
        const key = `${method} ${target}`;
        let decision = this.routes.get(key);
        if (!decision) {
            if (this.routes.size >= MAX_REMEMBERED_ROUTES) this.routes.clear();
            decision = decideRoute(method, target, this.routePrefixes);
            this.routes.set(key, decision);
        }
        return decision;
    }

    /** Counts a finished request in the metrics and writes its access line. */
    private account(m: StreamMetrics, method: string, route: string, started: number, status: number, fields: LogFields) {
        const seconds = (performance.now() - started) / 1000;
        m.requests(status).inc();
        m.duration.observe(seconds);
        this.log("request", { agent: m.labels.agent, provider: m.labels.provider, method, route, status, duration_ms: Math.round(seconds * 1000), ...fields });
    }

    /** Phase 1, admit: route, credential and the cheap checks, all before a byte of the body is read. */
    private handle(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean, agentPort: number | undefined) {
        const started = performance.now();
        const decision = this.route(req.method ?? "", req.url ?? "");
        if (decision.action === "drop") return this.drop(req, decision.reason, agentPort, res);
        const { route } = decision;
        const upstream = this.upstreams.get(decision.provider)!;
        const { provider } = upstream;
        const { decision: auth, metrics: m } = this.identify(req, provider, decision.query, agentPort);
        const method = req.method!;
        const admission = admit(
            { provider, method, route, auth, contentLength: req.headers["content-length"], active: auth.ok ? (this.activeByAgent.get(auth.agent.name) ?? 0) : 0 },
            this.loaded.config.limits,
        );
        if (!admission.ok) {
            this.metrics.refusals.inc({ ...m.labels, reason: admission.reason });
            if (!auth.ok) this.audit.authFailed(auth, provider.id, { remoteAddress: req.socket.remoteAddress, agentPort });
            else if (admission.kind === "forbidden") this.audit.endpointRefused(auth.agent.name, provider.id, route);
            // The request body is not read: close the connection rather than leave it half-consumed.
            const status = this.respondError(res, provider, admission.kind, true);
            return this.account(m, method, route, started, status, { reason: admission.reason });
        }
        if (expectsContinue) res.writeContinue();
        const x: Exchange = {
            req,
            res,
            started,
            method,
            provider,
            route,
            target: decision,
            upstreamPath: upstream.basePath + upstreamTarget(decision, provider),
            upstream,
            agent: admission.agent,
            endpoint: admission.endpoint,
            bodyLimit: admission.bodyLimit,
            m,
            status: 0,
            outcome: "ok",
            bytesIn: 0,
            bytesOut: 0,
            clientGone: false,
        };
        this.activeByAgent.set(x.agent.name, (this.activeByAgent.get(x.agent.name) ?? 0) + 1);
        this.inFlight++;
        m.active.inc();
        res.on("close", () => {
            if (res.writableFinished) return;
            x.clientGone = true;
            x.controller?.abort(new Error("client closed"));
        });
        void this.run(x);
    }

    private async run(x: Exchange) {
        try {
            const prepared = await this.prepareAndReserve(x);
            if (prepared) await this.relay(x, prepared);
        } catch (error) {
            this.fail(x, error);
        } finally {
            this.settle(x);
        }
    }

    /**
     * Phase 2, prepare and reserve: reads the whole body (so a body over the limit never reaches the upstream), plans
     * the metered request and reserves its maximum cost. Answers and returns undefined when the request stops here.
     */
    private async prepareAndReserve(x: Exchange): Promise<Prepared | undefined> {
        const headers = upstreamRequestHeaders(x.req.headers, x.provider, x.upstream.key);
        const raw = await readBody(x.req, x.bodyLimit);
        x.bytesIn = raw.length;
        if (x.endpoint === "free") {
            if (raw.length === 0 && x.method !== "POST") return { headers, body: null, hideUsageChunk: false, maxOutputTokens: 0 };
            headers["content-length"] = String(raw.length);
            return { headers, body: raw, hideUsageChunk: false, maxOutputTokens: 0 };
        }
        const plan = planRequest(x.endpoint, raw, this.loaded.config.metering.defaultMaxOutputTokens, x.target);
        if (plan.kind === "refused") {
            x.status = this.respondError(x.res, x.provider, "bad_request");
            x.outcome = plan.reason;
            return undefined;
        }
        const reservation = await this.spend.reserve(x.agent, x.provider.id, plan);
        if (!reservation.ok) {
            const reason = reservation.refusal === "budget" ? "budget_exceeded" : "ledger_unavailable";
            this.metrics.refusals.inc({ ...x.m.labels, reason });
            if (reservation.refusal === "budget") this.audit.budgetRefused(x.agent.name, x.provider.id, reservation.window, plan.model);
            else this.audit.ledgerUnavailable(x.agent.name, x.provider.id);
            x.status = this.respondError(x.res, x.provider, reservation.refusal);
            x.outcome = reservation.refusal === "budget" ? `${reason}:${reservation.window}` : reason;
            return undefined;
        }
        x.ticket = reservation.ticket;
        headers["content-length"] = String(plan.body.length);
        return { headers, body: plan.body, hideUsageChunk: plan.hideUsageChunk, maxOutputTokens: plan.maxOutputTokens };
    }

    /**
     * Phase 3, relay: undici's dispatch API hands each upstream chunk to a callback, which meters, scrubs and writes
     * it to the agent; when the agent's socket is full the upstream is paused until it drains. No Readable, no async
     * iteration, no promise per chunk, and one handler object per exchange (no closure per callback).
     */
    private relay(x: Exchange, prepared: Prepared): Promise<void> {
        return new Promise((resolve, reject) => {
            x.upstream.pool.dispatch(
                { method: x.method as "GET" | "POST" | "DELETE", path: x.upstreamPath, headers: prepared.headers, body: prepared.body },
                new Relay(this.relayContext, x, prepared, resolve, reject),
            );
        });
    }

    private fail(x: Exchange, error: unknown) {
        x.outcome = classify(error, x.clientGone);
        this.metrics.upstreamErrors.inc({ ...x.m.labels, kind: x.outcome });
        if (x.outcome === "client_abort") {
            // Nothing to tell: the agent is gone, and the upstream request was cancelled with it.
        } else if (!x.res.headersSent) {
            x.status = this.respondError(x.res, x.provider, x.outcome === "body_size" ? "too_large" : x.outcome === "timeout" ? "timeout" : "upstream", true);
        } else {
            // Mid-stream failure: cut the connection so the agent's SDK sees a truncated stream, not a finished one.
            x.res.destroy();
        }
    }

    /** Phase 4, settle: the agent's slot and gauges back, the reservation settled to what the response cost, the access line. */
    private settle(x: Exchange) {
        this.inFlight--;
        this.activeByAgent.set(x.agent.name, (this.activeByAgent.get(x.agent.name) ?? 1) - 1);
        x.m.active.dec();
        x.m.bytesIn.inc(x.bytesIn);
        x.m.bytesOut.inc(x.bytesOut);
        let costUsd: number | null = null;
        if (x.ticket) {
            endMeter(x);
            const settlement = this.spend.settle(x.ticket, x.status, x.metered);
            costUsd = microsToUsd(settlement.cost);
            const ticket = x.ticket;
            settlement.committed.catch((error: Error) => this.log("ledger_write_failed", { agent: ticket.agent.name, error: error.message.slice(0, 200) }));
        }
        this.account(x.m, x.method, x.route, x.started, x.status, { bytes_in: x.bytesIn, bytes_out: x.bytesOut, outcome: x.outcome, cost_usd: costUsd, model: x.ticket?.model.slice(0, 100) ?? null });
    }
}

/** What every relay shares: the secrets scrubbed from what upstreams answer. */
interface RelayContext {
    secrets: readonly string[];
    responseSecrets: ResponseSecrets;
}

/** What the meter still holds back at the end of a response (a hidden usage chunk's neighbours); meters once. */
function endMeter(x: Exchange): Buffer[] {
    if (!x.meter || x.metered) return [];
    const { result, rest } = x.meter.end();
    x.metered = result;
    return rest;
}

/**
 * One exchange's undici dispatch handler. A step that throws aborts the exchange. Chunks of an SSE stream the
 * upstream delivers in one pass of the event loop's poll phase (a TLS socket hands over each record, often one
 * small event, on its own) are metered, scrubbed and written together, once, in the same loop iteration: one write
 * instead of one per record, and nothing waits for a later iteration. Other bodies come in few, large chunks: each
 * goes through as it arrives.
 */
class Relay implements Dispatcher.DispatchHandler {
    private responseHeaders: Record<string, string | string[]> = {};
    /** Set when the upstream answered with an error: its (small) body is collected, scrubbed and sent whole. */
    private errorBody: Buffer[] | undefined;
    private errorBytes = 0;
    private scrubber: StreamScrubber | undefined;
    private pending: Buffer[] = [];
    private scheduled = false;
    /** Set for an SSE response: its chunks are batched per loop iteration; any other body's go straight through. */
    private batched = false;
    /** The response came over HTTP/2: node:http2 marks the headers it parsed with its `sensitiveHeaders` symbol. */
    private overHttp2 = false;

    constructor(
        private readonly context: RelayContext,
        private readonly x: Exchange,
        private readonly prepared: Prepared,
        private readonly resolve: () => void,
        private readonly reject: (error: Error) => void,
    ) {}

    onRequestStart(controller: DispatchController) {
        this.x.controller = controller;
        if (this.x.clientGone) controller.abort(new Error("client closed"));
    }

    onResponseStart(controller: DispatchController, status: number, headers: http.IncomingHttpHeaders) {
        try {
            this.start(status, headers);
        } catch (error) {
            controller.abort(error as Error);
        }
    }

    onResponseData(controller: DispatchController, chunk: Buffer) {
        try {
            this.data(chunk);
        } catch (error) {
            controller.abort(error as Error);
        }
    }

    onResponseEnd(controller: DispatchController) {
        try {
            this.end();
        } catch (error) {
            controller.abort(error as Error);
        }
    }

    abort(error: Error) {
        this.x.controller!.abort(error);
    }

    onResponseError(_controller: DispatchController, error: Error) {
        this.pending = [];
        this.reject(error);
    }

    private start(status: number, headers: http.IncomingHttpHeaders) {
        const { x, prepared } = this;
        x.m.ttfb.observe((performance.now() - x.started) / 1000);
        x.status = status;
        this.overHttp2 = sensitiveHeaders in headers;
        this.responseHeaders = clientResponseHeaders(headers, this.context.secrets);
        if (status >= 400) {
            this.errorBody = [];
            return;
        }
        // Embeddings never stream: their body is metered as JSON whatever its content type says.
        const sse = x.endpoint !== "free" && mayStream(x.endpoint) && String(headers["content-type"] ?? "").includes("text/event-stream");
        if (x.endpoint !== "free") x.meter = new ResponseMeter(x.endpoint, sse, prepared.hideUsageChunk && sse, prepared.maxOutputTokens);
        // A hidden usage chunk changes the length: let Node frame the body itself.
        if (prepared.hideUsageChunk && sse) delete this.responseHeaders["content-length"];
        x.res.writeHead(status, this.responseHeaders);
        // A stream's head goes out at once, so the agent sees it start; any other head rides with its body.
        if (sse) x.res.flushHeaders();
        this.batched = sse;
        this.scrubber = new StreamScrubber(this.context.responseSecrets);
    }

    private data(chunk: Buffer) {
        if (this.errorBody) {
            if (this.errorBytes < MAX_ERROR_BODY_BYTES) this.errorBody.push(chunk.subarray(0, MAX_ERROR_BODY_BYTES - this.errorBytes));
            this.errorBytes += chunk.length;
            return;
        }
        this.pending.push(chunk);
        if (!this.batched) return this.relayPending();
        if (!this.scheduled) {
            this.scheduled = true;
            setImmediate(relayPendingOf, this);
        }
    }

    private end() {
        const { x } = this;
        if (this.errorBody) {
            const text = scrubSecrets(Buffer.concat(this.errorBody).toString("utf8"), this.context.secrets);
            delete this.responseHeaders["content-length"];
            x.bytesOut = Buffer.byteLength(text);
            x.res.writeHead(x.status, { ...this.responseHeaders, "content-length": x.bytesOut });
            x.res.end(text);
        } else {
            this.relayPending();
            for (const piece of endMeter(x)) this.forward(this.scrubber!.push(piece));
            this.forward(this.scrubber!.end());
            // Over HTTP/2 undici reports a stream the upstream reset (RST_STREAM) as an end: an SSE stream that ends
            // without its final event may be one, and the agent must see a truncated stream, not a finished one.
            // (Over HTTP/1.1 a cut chunked body is an error, and an end is an end.)
            if (this.batched && this.overHttp2 && x.metered && !x.metered.complete) return this.reject(new StreamCutUpstream());
            x.res.end();
        }
        this.resolve();
    }

    private forward(bytes: Buffer) {
        if (bytes.length === 0) return;
        this.x.bytesOut += bytes.length;
        this.x.res.write(bytes);
    }

    relayPending() {
        this.scheduled = false;
        const { x, pending } = this;
        if (pending.length === 0 || x.res.destroyed) return;
        const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending);
        this.pending = [];
        if (x.meter) for (const piece of x.meter.push(chunk)) this.forward(this.scrubber!.push(piece));
        else this.forward(this.scrubber!.push(chunk));
        const controller = x.controller!;
        if (x.res.writableNeedDrain && !controller.paused) {
            controller.pause();
            x.res.once("drain", () => controller.resume());
        }
    }
}

/** The batched chunks of an SSE stream, relayed once per loop iteration (setImmediate's argument: no closure). */
function relayPendingOf(relay: Relay) {
    try {
        relay.relayPending();
    } catch (error) {
        relay.abort(error as Error);
    }
}

/** One request on its way through the phases: what each learned, for the next and for the access line. */
interface Exchange {
    readonly req: http.IncomingMessage;
    readonly res: http.ServerResponse;
    readonly started: number;
    readonly method: string;
    readonly provider: ProviderSpec;
    readonly route: string;
    /** The route and query the request was forwarded by (the metering plan reads the model from it on some APIs). */
    readonly target: Extract<RouteDecision, { action: "forward" }>;
    readonly upstreamPath: string;
    readonly upstream: Upstream;
    readonly agent: AgentEntry;
    readonly endpoint: ApiFormat | "free";
    readonly bodyLimit: number;
    readonly m: StreamMetrics;
    status: number;
    outcome: string;
    bytesIn: number;
    bytesOut: number;
    clientGone: boolean;
    controller?: DispatchController;
    ticket?: Ticket;
    meter?: ResponseMeter;
    metered?: MeterResult;
}

/** What goes upstream once a request is prepared (and, when metered, reserved). */
interface Prepared {
    headers: Record<string, string | string[]>;
    body: Buffer | null;
    hideUsageChunk: boolean;
    maxOutputTokens: number;
}

/** Reads a request body whole, by events (no async iterator), refusing past `limit` bytes. */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        let total = 0;
        const onData = (chunk: Buffer) => {
            total += chunk.length;
            if (total > limit) {
                req.off("data", onData);
                req.resume();
                return reject(new BodyTooLarge());
            }
            chunks.push(chunk);
        };
        req.on("data", onData);
        req.once("end", () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total)));
        req.once("error", reject);
        req.once("close", () => {
            if (!req.complete) reject(new Error("client closed"));
        });
    });
}

function classify(error: unknown, clientAborted: boolean): string {
    if (clientAborted) return "client_abort";
    if (error instanceof BodyTooLarge || (error as { cause?: unknown }).cause instanceof BodyTooLarge) return "body_size";
    if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) return "timeout";
    if (error instanceof undiciErrors.ConnectTimeoutError) return "timeout";
    return "upstream_error";
}
