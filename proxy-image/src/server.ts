// The transport around the policy core: an HTTP server that streams each request to its fixed upstream.
import { once } from "node:events";
import http from "node:http";
import type { Duplex } from "node:stream";
import { createSecureContext, rootCertificates } from "node:tls";
import { Pool, errors as undiciErrors } from "undici";
import { closeServer, portOf, startAdminServers } from "../../runtime/admin";
import { AgentListeners, arrivalOf } from "../../runtime/agentListeners";
import { AgentProbe } from "./agentProbe";
import type { LoadedConfig } from "./config";
import type { Logger } from "../../runtime/log";
import { type MeterResult, ResponseMeter, classifyEndpoint, planRequest } from "./metering";
import { type KeyProxyMetrics, type StreamMetrics, keyProxyMetrics, streamMetrics } from "./metrics";
import {
    type AgentEntry,
    type ErrorKind,
    type Provider,
    authenticate,
    clientResponseHeaders,
    decideRoute,
    presentedCredential,
    providerError,
    MIN_SECRET_LENGTH,
    scrubSecrets,
    upstreamRequestHeaders,
} from "./policy";
import { microsToUsd } from "./budget";
import { type ResponseSecrets, StreamScrubber } from "./scrub";
import { SpendTracker, type Ticket } from "./spend";

/** Upstream error bodies are small; past this much the rest is cut before scrubbing. */
const MAX_ERROR_BODY_BYTES = 1024 * 1024;

interface Upstream {
    pool: Pool;
    basePath: string;
    key: string;
}

class BodyTooLarge extends Error {}

/** What a client connection is owed: responses not yet sent, and whether it closes once they are. */
interface Connection {
    owed: Set<http.ServerResponse>;
    closing?: { last?: string };
}

export class KeyProxyServer {
    readonly metrics: KeyProxyMetrics = keyProxyMetrics();
    private readonly server: http.Server;
    private adminServers: http.Server[] = [];
    private readonly upstreams: Partial<Record<Provider, Upstream>> = {};
    private agentsByDigest = new Map<string, AgentEntry>();
    private readonly activeByAgent = new Map<string, number>();
    private readonly metricChildren = new Map<string, StreamMetrics>();
    private readonly connections = new WeakMap<Duplex, Connection>();
    private readonly secrets: string[];
    private readonly responseSecrets: ResponseSecrets;
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
    ) {
        const { config, keys, extraCa } = loaded;
        this.spend = new SpendTracker(config, this.metrics, log, now);
        this.agentProbe = config.agentProbe && new AgentProbe(config.agentProbe, this.metrics.agentUp, this.metrics.agentRestarts);
        // One TLS context for every upstream connection: building one per connection (as a `ca` option does)
        // re-parses the whole root store each time.
        const secureContext = createSecureContext(extraCa ? { ca: [...rootCertificates, extraCa] } : {});
        for (const [provider, upstream] of Object.entries(config.upstreams) as [Provider, { baseUrl: string }][]) {
            const url = new URL(upstream.baseUrl);
            this.upstreams[provider] = {
                pool: new Pool(url.origin, {
                    connections: config.limits.maxUpstreamConnections,
                    keepAliveTimeout: 30_000,
                    headersTimeout: config.limits.headersTimeoutMs,
                    bodyTimeout: config.limits.bodyIdleTimeoutMs,
                    connect: { secureContext, timeout: config.limits.connectTimeoutMs, rejectUnauthorized: true },
                }),
                basePath: url.pathname.replace(/\/$/, ""),
                key: keys[provider]!,
            };
        }
        this.secrets = Object.values(keys);
        this.responseSecrets = {
            literals: this.secrets.filter((key) => key.length >= MIN_SECRET_LENGTH).map((key) => Buffer.from(key)),
            isCredential: (sha256) => this.agentsByDigest.has(sha256),
        };
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
        server.on("connect", (req) => this.drop(req, "method"));
        server.on("upgrade", (req) => this.drop(req, "upgrade"));
        server.on("clientError", (error, socket) => {
            const code = (error as NodeJS.ErrnoException).code;
            this.closeAfterAnswers(socket, code === "HPE_HEADER_OVERFLOW" ? "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" : undefined);
            this.metrics.refusals.inc({ agent: "unknown", provider: "none", reason: code === "HPE_HEADER_OVERFLOW" ? "header_size" : "malformed" });
            this.log("refused", { reason: code === "HPE_HEADER_OVERFLOW" ? "header_size" : "malformed" });
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
        this.adminServers = await startAdminServers(config.admin, this.metrics.registry, () => !this.draining);
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
        await Promise.all(Object.values(this.upstreams).map((u) => u.pool.close()));
        await this.spend.close();
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
        void this.handle(req, res, expectsContinue, agentPort);
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

    private drop(req: http.IncomingMessage, reason: string, res?: http.ServerResponse) {
        this.metrics.refusals.inc({ agent: "unknown", provider: "none", reason });
        this.log("dropped", { reason, method: req.method?.slice(0, 16) ?? null, remote: req.socket.remoteAddress ?? null });
        if (res) this.connection(req.socket).owed.delete(res);
        this.closeAfterAnswers(req.socket);
    }

    private respondError(res: http.ServerResponse, provider: Provider, kind: ErrorKind, close = false) {
        const { status, body } = providerError(provider, kind);
        res.writeHead(status, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            ...(close ? { connection: "close" } : {}),
        });
        res.end(body);
        return status;
    }

    private async handle(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean, agentPort: number | undefined) {
        const started = performance.now();
        const decision = decideRoute(req.method ?? "", req.url ?? "");
        if (decision.action === "drop") return this.drop(req, decision.reason, res);
        const { provider } = decision;
        const upstream = this.upstreams[provider];
        if (!upstream) return this.drop(req, "provider_disabled", res);

        const auth = authenticate(presentedCredential(req.headers, provider), arrivalOf(agentPort, req.socket), this.agentsByDigest);
        const access = { agent: auth.ok ? auth.agent.name : "unknown", provider, method: req.method!, route: decision.route };
        const childKey = `${access.agent}\u0000${provider}`;
        let m = this.metricChildren.get(childKey);
        if (!m) {
            m = streamMetrics(this.metrics, access.agent, provider);
            this.metricChildren.set(childKey, m);
        }
        const labels = m.labels;
        const finish = (status: number, extra: Record<string, string | number | null> = {}) => {
            const seconds = (performance.now() - started) / 1000;
            m.requests(status).inc();
            m.duration.observe(seconds);
            this.log("request", { ...access, status, duration_ms: Math.round(seconds * 1000), ...extra });
        };
        const refuse = (kind: ErrorKind, reason: string) => {
            this.metrics.refusals.inc({ ...labels, reason });
            // The request body is not read: close the connection rather than leave it half-consumed.
            finish(this.respondError(res, provider, kind, true), { reason });
        };

        if (!auth.ok) return refuse("authentication", auth.reason);
        const endpoint = classifyEndpoint(provider, req.method!, decision.route);
        if (endpoint === undefined) return refuse("forbidden", "endpoint_not_allowed");
        const declaredLength = Number(req.headers["content-length"] ?? 0);
        const { limits } = this.loaded.config;
        // Free endpoints need small bodies: what nobody pays for gets no 64 MiB pipe to the upstream.
        const bodyLimit = endpoint === "free" ? limits.maxFreeBodyBytes : limits.maxBodyBytes;
        if (declaredLength > bodyLimit) return refuse("too_large", "body_size");
        const active = this.activeByAgent.get(auth.agent.name) ?? 0;
        if (active >= limits.maxConcurrentPerAgent) return refuse("rate_limited", "concurrency");

        if (expectsContinue) res.writeContinue();
        this.activeByAgent.set(auth.agent.name, active + 1);
        this.inFlight++;
        m.active.inc();
        const abort = new AbortController();
        res.on("close", () => {
            if (!res.writableFinished) abort.abort(new Error("client closed"));
        });
        let bytesIn = 0;
        let bytesOut = 0;
        let status = 0;
        let outcome = "ok";
        let ticket: Ticket | undefined;
        let meter: ResponseMeter | undefined;
        let metered: MeterResult | undefined;
        const endMeter = () => {
            if (meter && !metered) {
                const { result, rest } = meter.end();
                metered = result;
                return rest;
            }
            return [];
        };
        try {
            const headers = upstreamRequestHeaders(req.headers, provider, upstream.key);
            // The whole body is read before anything goes upstream, so a body over the limit never reaches it.
            const raw = await readBody(req, bodyLimit);
            bytesIn = raw.length;
            let body: Buffer | null = raw;
            let hideUsageChunk = false;
            let maxOutputTokens = 0;
            if (endpoint === "free") {
                if (raw.length === 0 && req.method !== "POST") body = null;
                else headers["content-length"] = String(raw.length);
            } else {
                const plan = planRequest(endpoint, raw, this.loaded.config.metering.defaultMaxOutputTokens);
                if (plan.kind === "refused") {
                    status = this.respondError(res, provider, "bad_request");
                    outcome = plan.reason;
                    return;
                }
                const admission = await this.spend.reserve(auth.agent, provider, plan);
                if (!admission.ok) {
                    const reason = admission.refusal === "budget" ? "budget_exceeded" : "ledger_unavailable";
                    this.metrics.refusals.inc({ ...labels, reason });
                    status = this.respondError(res, provider, admission.refusal);
                    outcome = admission.refusal === "budget" ? `${reason}:${admission.window}` : reason;
                    return;
                }
                ticket = admission.ticket;
                body = plan.body;
                headers["content-length"] = String(plan.body.length);
                hideUsageChunk = plan.hideUsageChunk;
                maxOutputTokens = plan.maxOutputTokens;
            }
            const response = await upstream.pool.request({
                method: req.method as "GET" | "POST" | "DELETE",
                path: upstream.basePath + decision.upstreamPath,
                headers,
                body,
                signal: abort.signal,
            });
            m.ttfb.observe((performance.now() - started) / 1000);
            status = response.statusCode;
            const responseHeaders = clientResponseHeaders(response.headers, this.secrets);
            if (status >= 400) {
                const text = scrubSecrets(await readLimited(response.body, MAX_ERROR_BODY_BYTES), this.secrets);
                delete responseHeaders["content-length"];
                res.writeHead(status, { ...responseHeaders, "content-length": Buffer.byteLength(text) });
                res.end(text);
                bytesOut = Buffer.byteLength(text);
            } else {
                // Embeddings never stream: their body is metered as JSON whatever its content type says.
                const sse = endpoint !== "openai-embeddings" && String(response.headers["content-type"] ?? "").includes("text/event-stream");
                if (endpoint !== "free") meter = new ResponseMeter(endpoint, sse, hideUsageChunk && sse, maxOutputTokens);
                // A hidden usage chunk changes the length: let Node frame the body itself.
                if (hideUsageChunk && sse) delete responseHeaders["content-length"];
                res.writeHead(status, responseHeaders);
                res.flushHeaders();
                const scrubber = new StreamScrubber(this.responseSecrets);
                const forward = async (bytes: Buffer) => {
                    if (bytes.length === 0) return;
                    bytesOut += bytes.length;
                    if (!res.write(bytes)) await waitForDrain(res, abort.signal);
                };
                for await (const chunk of response.body) {
                    for (const piece of meter ? meter.push(chunk) : [chunk]) await forward(scrubber.push(piece));
                }
                for (const piece of endMeter()) await forward(scrubber.push(piece));
                await forward(scrubber.end());
                res.end();
            }
        } catch (error) {
            outcome = classify(error, abort.signal.aborted);
            this.metrics.upstreamErrors.inc({ ...labels, kind: outcome });
            if (outcome === "client_abort") {
                // Nothing to tell: the agent is gone, and the upstream request was cancelled with it.
            } else if (!res.headersSent) {
                status = this.respondError(res, provider, outcome === "body_size" ? "too_large" : outcome === "timeout" ? "timeout" : "upstream", true);
            } else {
                // Mid-stream failure: cut the connection so the agent's SDK sees a truncated stream, not a finished one.
                res.destroy();
            }
        } finally {
            this.inFlight--;
            this.activeByAgent.set(auth.agent.name, (this.activeByAgent.get(auth.agent.name) ?? 1) - 1);
            m.active.dec();
            m.bytesIn.inc(bytesIn);
            m.bytesOut.inc(bytesOut);
            let committed: Promise<void> | undefined;
            let costUsd: number | null = null;
            if (ticket) {
                endMeter();
                const settlement = this.spend.settle(ticket, status, metered);
                costUsd = microsToUsd(settlement.cost);
                committed = settlement.committed;
            }
            finish(status, { bytes_in: bytesIn, bytes_out: bytesOut, outcome, cost_usd: costUsd, model: ticket?.model.slice(0, 100) ?? null });
            await committed?.catch((error: Error) => this.log("ledger_write_failed", { agent: ticket?.agent.name, error: error.message.slice(0, 200) }));
        }
    }
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of req) {
        total += (chunk as Buffer).length;
        if (total > limit) throw new BodyTooLarge();
        chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
}

function classify(error: unknown, clientAborted: boolean): string {
    if (clientAborted) return "client_abort";
    if (error instanceof BodyTooLarge || (error as { cause?: unknown }).cause instanceof BodyTooLarge) return "body_size";
    if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) return "timeout";
    if (error instanceof undiciErrors.ConnectTimeoutError) return "timeout";
    return "upstream_error";
}

async function readLimited(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
        if (size < limit) chunks.push(chunk.subarray(0, limit - size));
        size += chunk.length;
    }
    return Buffer.concat(chunks).toString("utf8");
}

async function waitForDrain(res: http.ServerResponse, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw signal.reason;
    await once(res, "drain", { signal });
}
