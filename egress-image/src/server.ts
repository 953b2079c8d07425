// The transport around the egress policy: CONNECT tunnels and absolute-form plain HTTP, resolved once and
// dialled at the vetted address.
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import { networkInterfaces } from "node:os";
import type { Duplex } from "node:stream";
import { z } from "zod";
import { closeServer, portOf, startAdminServers } from "../../runtime/admin";
import { AgentListeners, arrivalOf } from "../../runtime/agentListeners";
import { type AuditEventOf, AuditLog, auditAddress, auditField, auditHost, recordWithinBudget } from "../../runtime/audit";
import type { Logger } from "../../runtime/log";
import { AuditBudget } from "../../runtime/rateLimiter";
import type { EgressConfig } from "./config";
import { type DnsSink, startDnsSink } from "./dns";
import { dnsResolver } from "./resolver";
import { type EgressMetrics, egressMetrics } from "./metrics";
import { type AddressPolicy, type AddressVerdict, type EgressAgent, type Target, agentForArrival, decideTarget, parseAbsoluteHttp, parseConnect, vetAnswers, vetLiteral } from "./policy";

/**
 * Every security event EgressGateway writes to its audit stream, with the only fields each may carry. `host` is the
 * destination or name asked (`hostSha256` instead for one of odd bytes), never a URL's path or query nor a header;
 * absent when the request or query could not be read. `unaudited`: events of this kind from this agent left out
 * since its last audited one (the audit budget, `limits.auditedDenials*`).
 */
export const EGRESS_AUDIT_EVENTS = {
    /** A CONNECT, plain-HTTP request or upgrade refused by policy or a limit (not a failure on the way: 5xx). */
    egress_denied: z.object({
        agent: auditField.name,
        remote: auditField.address,
        host: auditField.host.optional(),
        hostSha256: auditField.digest.optional(),
        port: auditField.port.optional(),
        reason: auditField.reason,
        unaudited: auditField.count,
    }),
    /** A query to the DNS sink, which refuses every one: agents have no DNS of their own. */
    dns_refused: z.object({
        agent: auditField.name,
        remote: auditField.address,
        host: auditField.host.optional(),
        hostSha256: auditField.digest.optional(),
        qtype: auditField.count.optional(),
        unaudited: auditField.count,
    }),
};
type EgressAuditEvent = AuditEventOf<typeof EGRESS_AUDIT_EVENTS>;

export interface EgressDeps {
    /** Every address a name resolves to. Called once per request; `signal` aborts when the lookup is abandoned. */
    resolve(host: string, signal: AbortSignal): Promise<string[]>;
    /** A connected socket to an IP literal; never given a name, so it cannot look one up again. */
    dial(address: string, port: number, timeoutMs: number): Promise<net.Socket>;
    /** The addresses of this host's interfaces (read again every few seconds, not per request). */
    ownAddresses(): string[];
}

export function dialAddress(address: string, port: number, timeoutMs: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
        const socket = net.connect({ host: address, port, timeout: timeoutMs });
        socket.once("connect", () => {
            socket.setTimeout(0);
            resolve(socket);
        });
        socket.once("timeout", () => socket.destroy(new Error("connect timeout")));
        socket.once("error", reject);
    });
}

export function interfaceAddresses(): string[] {
    return Object.values(networkInterfaces())
        .flat()
        .filter((i) => i !== undefined)
        .map((i) => i.address);
}

/** The real resolver (config.staticHosts first, then DNS), dialer and interfaces. */
export function systemDeps(config: Pick<EgressConfig, "staticHosts" | "resolvers" | "limits">): EgressDeps {
    const resolve = dnsResolver({ timeoutMs: config.limits.resolveTimeoutMs, servers: config.resolvers });
    return {
        resolve: (host, signal) => (Object.hasOwn(config.staticHosts, host) ? Promise.resolve(config.staticHosts[host]) : resolve(host, signal)),
        dial: dialAddress,
        ownAddresses: interfaceAddresses,
    };
}

/** How long the gateway trusts its last reading of its own addresses; a dial that lands on itself is refused anyway. */
const OWN_ADDRESSES_REFRESH_MS = 5_000;

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);
const PLAIN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

function forwardable(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
    const named = new Set((headers.connection ?? "").split(",").map((t) => t.trim().toLowerCase()));
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(headers)) {
        if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || name.startsWith("proxy-")) continue;
        out[name] = value;
    }
    return out;
}

/**
 * A request let through, with its upstream connection and the agent's slot (the caller releases it), or refused with
 * a status. `wouldDeny`: in report mode, what enforce mode would have denied.
 */
type Refusal = { ok: false; agent?: EgressAgent; reason: string; status: number };

/** A request refused: by whom (the agent, else its source address), for what as far as it could be read, and why. */
interface Denial {
    agent: EgressAgent | undefined;
    remote: string | undefined;
    targetText: string;
    destination?: Target;
    reason: string;
    status?: number;
}
type Admission = { ok: true; agent: EgressAgent; upstream: net.Socket; address: string; wouldDeny: string | null } | Refusal;

/** Why a lookup was given up on before it answered. */
class LookupAbandoned extends Error {
    constructor(readonly reason: "resolver_timeout" | "shutting_down") {
        super(reason);
    }
}

export class EgressGateway {
    readonly metrics: EgressMetrics = egressMetrics();
    readonly audit: AuditLog<typeof EGRESS_AUDIT_EVENTS>;
    private readonly auditBudget: AuditBudget;
    private readonly server: http.Server;
    private adminServers: http.Server[] = [];
    private dnsSink: DnsSink | undefined;
    private readonly agentListeners: AgentListeners<http.Server>;
    private agents: EgressAgent[] = [];
    private readonly tunnels = new Map<string, number>();
    private readonly open = new Set<Duplex>();
    /** Aborted by close(): lookups still waiting are abandoned. */
    private readonly closing = new AbortController();
    private ownAddresses: { addresses: string[]; readAt: number } | undefined;

    constructor(
        private readonly config: EgressConfig,
        private readonly log: Logger,
        private readonly deps: EgressDeps = systemDeps(config),
        /** Milliseconds, for the audit budget (tests drive it). */
        now: () => number = () => performance.now(),
    ) {
        this.auditBudget = new AuditBudget(config.limits.auditedDenialsPerSecond, config.limits.auditedDenialsBurst, now);
        this.audit = new AuditLog({
            dir: config.auditDir,
            service: "egress",
            events: EGRESS_AUDIT_EVENTS,
            rotation: config.auditRotation,
            onProblem: (problem) => {
                if (problem.kind === "write_failed") this.metrics.auditFailures.inc(problem.lost);
                log(`audit_${problem.kind}`, problem);
            },
        });
        this.server = this.createListener(undefined);
        this.agentListeners = new AgentListeners(config.listen.host, (port) => this.createListener(port), log);
    }

    /** The main listener (`agentPort` undefined: agents known by their subnet), or the listener of one agent's port. */
    private createListener(agentPort: number | undefined): http.Server {
        const { limits } = this.config;
        const server = http.createServer(
            {
                headersTimeout: limits.requestHeadTimeoutMs,
                requestTimeout: limits.requestHeadTimeoutMs * 6,
                // Node checks those timeouts on this period (30 s by default): slow clients need a finer one.
                connectionsCheckingInterval: Math.min(1000, Math.ceil(limits.requestHeadTimeoutMs / 2)),
            },
            (req, res) => void this.handlePlain(req, res, this.agentOf(agentPort, req)),
        );
        server.on("connect", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void this.handleConnect(req, socket, head, this.agentOf(agentPort, req)));
        server.on("upgrade", (req: http.IncomingMessage, socket: Duplex) =>
            this.refuseRaw(socket, { agent: this.agentOf(agentPort, req), remote: req.socket.remoteAddress, targetText: req.url ?? "", reason: "upgrade" }),
        );
        server.on("clientError", (_error, socket) => socket.destroy());
        return server;
    }

    private agentOf(agentPort: number | undefined, req: http.IncomingMessage): EgressAgent | undefined {
        return agentForArrival(arrivalOf(agentPort, req.socket), this.agents);
    }

    /** Takes the registry's entries; resolves once the listeners of agents registered by port match them. */
    setAgents(agents: readonly EgressAgent[]): Promise<void> {
        // An agent's network is attached (a new own address) before the agent is registered.
        this.ownAddresses = undefined;
        this.agents = [...agents];
        this.metrics.registeredAgents.set(agents.length);
        return this.agentListeners.sync(agents);
    }

    async listen(): Promise<{ port: number; dnsPort: number; adminPorts: number[] }> {
        this.server.listen(this.config.listen.port, this.config.listen.host);
        await once(this.server, "listening");
        this.dnsSink = await startDnsSink(this.config.dns.host, this.config.dns.port, (source, question) => {
            const agent = agentForArrival({ via: "network", remoteAddress: source }, this.agents)?.name ?? "unknown";
            this.metrics.dnsQueries.inc({ agent });
            this.log("dns_refused", { agent, source, name: question?.name ?? null, qtype: question?.type ?? null, malformed: question === undefined });
            const remote = auditAddress(source);
            this.audited("dns_refused", agent === "unknown" ? `@${remote}` : agent, (unaudited) => ({
                type: "dns_refused",
                agent,
                remote,
                ...(question ? { ...auditHost(question.name), qtype: question.type } : {}),
                unaudited,
            }));
        });
        this.adminServers = await startAdminServers(this.config.admin, this.metrics.registry, () => this.server.listening && !this.audit.failing);
        const ports = { port: portOf(this.server), dnsPort: this.dnsSink.udp.address().port, adminPorts: this.adminServers.map(portOf) };
        this.log("listening", { port: ports.port, dns: ports.dnsPort, admin: ports.adminPorts.join(",") });
        return ports;
    }

    async close(): Promise<void> {
        this.closing.abort();
        for (const socket of this.open) socket.destroy();
        await Promise.all([this.agentListeners.close(), ...[this.server, ...this.adminServers].map(closeServer)]);
        await this.dnsSink?.close();
        await this.audit.close();
    }

    /** Reading the interfaces costs about 260 us of CPU: it is done every few seconds, not per request. */
    private addressPolicy(): AddressPolicy {
        const now = performance.now();
        if (!this.ownAddresses || now - this.ownAddresses.readAt >= OWN_ADDRESSES_REFRESH_MS) this.ownAddresses = { addresses: this.deps.ownAddresses(), readAt: now };
        return { ownAddresses: this.ownAddresses.addresses, allowRanges: this.config.allowRanges };
    }

    private record(agent: EgressAgent | undefined, target: string, decision: "allow" | "deny", reason: string, extra: Record<string, string | number | null> = {}) {
        const name = agent?.name ?? "unknown";
        this.metrics.decisions.inc({ agent: name, decision, reason });
        this.log("decision", { agent: name, target: target.slice(0, 300), decision, reason, ...extra });
    }

    /** Counts and logs a refusal, and audits it unless it was a failure on the way (5xx) or is past the agent's audit budget. */
    private deny({ agent, remote, targetText, destination, reason, status = 403 }: Denial) {
        this.record(agent, targetText, "deny", reason);
        if (status >= 500) return;
        const name = agent?.name ?? "unknown";
        const address = auditAddress(remote);
        this.audited("egress_denied", agent?.name ?? `@${address}`, (unaudited) => ({
            type: "egress_denied",
            agent: name,
            remote: address,
            ...(destination ? { ...auditHost(destination.kind === "ip" ? destination.address : destination.host), port: destination.port } : {}),
            reason,
            unaudited,
        }));
    }

    /** Writes an event within the audit budget of its kind and key (an agent, or `@address` for an unknown source). */
    private audited(type: EgressAuditEvent["type"], key: string, event: (unaudited: number) => EgressAuditEvent) {
        recordWithinBudget(this.audit, this.auditBudget, this.metrics, this.log, type, key, event);
    }

    /**
     * Allowlist, then the agent's slot, then one bounded resolution, address safety on every answer, and the dial
     * of the vetted address. Report mode relaxes only the allowlist. A refusal has released the slot.
     */
    private async admit(agent: EgressAgent | undefined, target: Target): Promise<Admission> {
        const decision = decideTarget(agent, target);
        if (!decision.allow) return { ok: false, agent, reason: decision.reason, status: 403 };
        const allowed = agent!; // decideTarget allows only known agents
        if (!this.takeTunnel(allowed)) return { ok: false, agent, reason: "tunnel_limit", status: 429 };
        const dialled = await this.vetAndDial(allowed, target);
        if (dialled.ok) return { ...dialled, agent: allowed, wouldDeny: decision.wouldDeny ?? null };
        this.releaseTunnel(allowed);
        return dialled;
    }

    private async vetAndDial(agent: EgressAgent, target: Target): Promise<{ ok: true; upstream: net.Socket; address: string } | Refusal> {
        const refuse = (reason: string, status = 403): Refusal => ({ ok: false, agent, reason, status });
        const policy = this.addressPolicy();
        let vetted: AddressVerdict;
        if (target.kind === "ip") {
            vetted = vetLiteral(target.address, policy);
        } else {
            try {
                vetted = vetAnswers(await this.resolveWithin(target.host), policy);
            } catch (error) {
                if (error instanceof LookupAbandoned) return refuse(error.reason, error.reason === "resolver_timeout" ? 504 : 503);
                // c-ares gives up at about 0.8 of the bound; under load that can come before the gateway's own timer.
                if ((error as NodeJS.ErrnoException).code === "ETIMEOUT") return refuse("resolver_timeout", 504);
                return refuse("resolver_failure");
            }
        }
        if (!vetted.ok) return refuse(vetted.reason);
        let upstream: net.Socket;
        try {
            upstream = await this.deps.dial(vetted.address, target.port, this.config.limits.connectTimeoutMs);
        } catch {
            return refuse("dial_failed", 502);
        }
        // The kernel sends to one of this host's own addresses from that same address: an address gained since the
        // last reading is caught here, before a byte is relayed, and the reading is renewed.
        if (upstream.remoteAddress !== undefined && upstream.remoteAddress === upstream.localAddress) {
            upstream.destroy();
            this.ownAddresses = undefined;
            return refuse(target.kind === "ip" ? "own_address" : "resolved_own_address");
        }
        return { ok: true, upstream, address: vetted.address };
    }

    /**
     * The resolver's answers, unless it takes longer than the bound or the gateway closes first: then the lookup is
     * abandoned, and the resolver told so (it cancels its queries).
     */
    private resolveWithin(host: string): Promise<string[]> {
        const signal = this.closing.signal;
        const lookup = new AbortController();
        return new Promise((resolve, reject) => {
            const abandon = (reason: LookupAbandoned["reason"]) => () => {
                reject(new LookupAbandoned(reason));
                lookup.abort();
            };
            const onClose = abandon("shutting_down");
            const timer = setTimeout(abandon("resolver_timeout"), this.config.limits.resolveTimeoutMs).unref();
            const settled = () => {
                clearTimeout(timer);
                signal.removeEventListener("abort", onClose);
            };
            if (signal.aborted) return onClose();
            signal.addEventListener("abort", onClose, { once: true });
            this.deps.resolve(host, lookup.signal).then(resolve, reject).finally(settled);
        });
    }

    private refuseRaw(socket: Duplex, denial: Denial) {
        this.deny(denial);
        const { reason, status = 403 } = denial;
        const body = `egress denied: ${reason}\n`;
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }

    private takeTunnel(agent: EgressAgent): boolean {
        const count = this.tunnels.get(agent.name) ?? 0;
        if (count >= this.config.limits.maxTunnelsPerAgent) return false;
        this.tunnels.set(agent.name, count + 1);
        this.metrics.activeTunnels.inc({ agent: agent.name });
        return true;
    }

    private releaseTunnel(agent: EgressAgent) {
        this.tunnels.set(agent.name, (this.tunnels.get(agent.name) ?? 1) - 1);
        this.metrics.activeTunnels.dec({ agent: agent.name });
    }

    /** Counts a socket as open until it closes, so close() can end it wherever its request is. */
    private track(socket: Duplex) {
        this.open.add(socket);
        socket.once("close", () => this.open.delete(socket));
    }

    private async handleConnect(req: http.IncomingMessage, client: Duplex, head: Buffer, agent: EgressAgent | undefined) {
        client.on("error", () => client.destroy());
        this.track(client);
        const targetText = req.url ?? "";
        const remote = req.socket.remoteAddress;
        const parsed = parseConnect(targetText, req.headers.host);
        if (!parsed.ok) return this.refuseRaw(client, { agent, remote, targetText, reason: parsed.reason });
        const admission = await this.admit(agent, parsed.value);
        if (!admission.ok) return this.refuseRaw(client, { agent: admission.agent, remote, targetText, destination: parsed.value, reason: admission.reason, status: admission.status });
        const { agent: admitted, upstream } = admission;
        this.record(admitted, targetText, "allow", "allowlisted", { address: admission.address, would_deny: admission.wouldDeny });
        this.track(upstream);
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) {
            this.metrics.bytes.inc({ agent: admitted.name, direction: "out" }, head.length);
            upstream.write(head);
        }
        this.relay(admitted, client, upstream);
    }

    private relay(agent: EgressAgent, client: Duplex, upstream: net.Socket) {
        const name = agent.name;
        let done = false;
        const finish = () => {
            if (done) return;
            done = true;
            client.destroy();
            upstream.destroy();
            this.releaseTunnel(agent);
        };
        const idle = this.config.limits.idleTimeoutMs;
        upstream.setTimeout(idle, finish);
        (client as net.Socket).setTimeout?.(idle, finish);
        client.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: name, direction: "out" }, chunk.length));
        upstream.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: name, direction: "in" }, chunk.length));
        client.pipe(upstream);
        upstream.pipe(client);
        for (const socket of [client, upstream]) {
            socket.on("error", finish);
            socket.on("close", finish);
        }
    }

    private async handlePlain(req: http.IncomingMessage, res: http.ServerResponse, agent: EgressAgent | undefined) {
        const targetText = req.url ?? "";
        const refuse = (reason: string, refused?: { agent: EgressAgent | undefined; destination: Target; status: number }) => {
            this.deny({ agent: refused?.agent ?? agent, remote: req.socket.remoteAddress, targetText, destination: refused?.destination, reason, status: refused?.status });
            res.writeHead(refused?.status ?? 403, { "content-type": "text/plain", connection: "close" }).end(`egress denied: ${reason}\n`);
        };
        if (!PLAIN_METHODS.has(req.method ?? "")) return refuse("method");
        const te = req.headers["transfer-encoding"];
        if (te !== undefined && (te.toLowerCase() !== "chunked" || req.headers["content-length"] !== undefined)) return refuse("smuggling");
        const parsed = parseAbsoluteHttp(targetText, req.headers.host);
        if (!parsed.ok) return refuse(parsed.reason);
        const { target, path, authority } = parsed.value;
        const admission = await this.admit(agent, target);
        if (!admission.ok) return refuse(admission.reason, { agent: admission.agent, destination: target, status: admission.status });
        const { agent: admitted, upstream: socket } = admission;
        this.record(admitted, targetText, "allow", "allowlisted", { address: admission.address, would_deny: admission.wouldDeny });
        let released = false;
        const release = () => {
            if (released) return;
            released = true;
            this.releaseTunnel(admitted);
        };
        // The connection is the one dialled at the vetted address: nothing here can look the name up again.
        const upstreamReq = http.request({
            method: req.method,
            path,
            headers: { ...forwardable(req.headers), host: authority },
            setHost: false,
            // No agent: with createConnection and no agent, Node uses exactly this socket, once.
            createConnection: () => socket,
        });
        upstreamReq.on("response", (upstreamRes) => {
            upstreamRes.setTimeout(this.config.limits.idleTimeoutMs, () => upstreamRes.destroy());
            res.writeHead(upstreamRes.statusCode ?? 502, forwardable(upstreamRes.headers));
            upstreamRes.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: admitted.name, direction: "in" }, chunk.length));
            upstreamRes.pipe(res);
            upstreamRes.on("end", release);
            upstreamRes.on("error", () => res.destroy());
        });
        upstreamReq.on("error", () => {
            release();
            if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain", connection: "close" }).end("egress: upstream failed\n");
            else res.destroy();
        });
        res.on("close", () => {
            upstreamReq.destroy();
            release();
        });
        req.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: admitted.name, direction: "out" }, chunk.length));
        req.pipe(upstreamReq);
    }
}
