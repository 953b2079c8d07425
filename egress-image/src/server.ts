// The transport around the egress policy: CONNECT tunnels and absolute-form plain HTTP, resolved once and
// dialled at the vetted address.
import { lookup } from "node:dns/promises";
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import { networkInterfaces } from "node:os";
import type { Duplex } from "node:stream";
import { closeServer, portOf, startAdminServers } from "../../runtime/admin";
import type { Logger } from "../../runtime/log";
import type { EgressConfig } from "./config";
import { type DnsSink, startDnsSink } from "./dns";
import { type EgressMetrics, egressMetrics } from "./metrics";
import {
    type AddressPolicy,
    type EgressAgent,
    type Target,
    addressDenial,
    agentForSource,
    decideTarget,
    parseAbsoluteHttp,
    parseConnect,
    vetAnswers,
} from "./policy";

export interface EgressDeps {
    /** Every address a name resolves to. Called once per request. */
    resolve(host: string): Promise<string[]>;
    /** A connected socket to an IP literal; never given a name, so it cannot look one up again. */
    dial(address: string, port: number, timeoutMs: number): Promise<net.Socket>;
    ownAddresses(): string[];
}

export const systemDeps: EgressDeps = {
    resolve: async (host) => (await lookup(host, { all: true, verbatim: true })).map((answer) => answer.address),
    dial: (address, port, timeoutMs) =>
        new Promise((resolve, reject) => {
            const socket = net.connect({ host: address, port, timeout: timeoutMs });
            socket.once("connect", () => {
                socket.setTimeout(0);
                resolve(socket);
            });
            socket.once("timeout", () => socket.destroy(new Error("connect timeout")));
            socket.once("error", reject);
        }),
    ownAddresses: () =>
        Object.values(networkInterfaces())
            .flat()
            .filter((i) => i !== undefined)
            .map((i) => i.address),
};

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

/** `wouldDeny`: in report mode, what enforce mode would have denied. */
type Vetted = { ok: true; agent: EgressAgent; address: string; wouldDeny: string | null } | { ok: false; agent?: EgressAgent; reason: string };

export class EgressGateway {
    readonly metrics: EgressMetrics = egressMetrics();
    private readonly server: http.Server;
    private adminServers: http.Server[] = [];
    private dnsSink: DnsSink | undefined;
    private agents: EgressAgent[] = [];
    private readonly tunnels = new Map<string, number>();
    private readonly open = new Set<Duplex>();

    constructor(
        private readonly config: EgressConfig,
        private readonly log: Logger,
        private readonly deps: EgressDeps = systemDeps,
    ) {
        this.server = http.createServer(
            {
                headersTimeout: config.limits.requestHeadTimeoutMs,
                requestTimeout: config.limits.requestHeadTimeoutMs * 6,
                // Node checks those timeouts on this period (30 s by default): slow clients need a finer one.
                connectionsCheckingInterval: Math.min(1000, Math.ceil(config.limits.requestHeadTimeoutMs / 2)),
            },
            (req, res) => void this.handlePlain(req, res),
        );
        this.server.on("connect", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void this.handleConnect(req, socket, head));
        this.server.on("upgrade", (req: http.IncomingMessage, socket: Duplex) => this.refuseRaw(socket, agentForSource(req.socket.remoteAddress, this.agents), "upgrade", req.url ?? ""));
        this.server.on("clientError", (_error, socket) => socket.destroy());
    }

    setAgents(agents: readonly EgressAgent[]) {
        this.agents = [...agents];
        this.metrics.registeredAgents.set(agents.length);
    }

    async listen(): Promise<{ port: number; dnsPort: number; adminPorts: number[] }> {
        this.server.listen(this.config.listen.port, this.config.listen.host);
        await once(this.server, "listening");
        this.dnsSink = await startDnsSink(this.config.dns.host, this.config.dns.port, (source, question) => {
            const agent = agentForSource(source, this.agents)?.name ?? "unknown";
            this.metrics.dnsQueries.inc({ agent });
            this.log("dns_refused", { agent, source, name: question?.name ?? null, qtype: question?.type ?? null, malformed: question === undefined });
        });
        this.adminServers = await startAdminServers(this.config.admin, this.metrics.registry, () => this.server.listening);
        const ports = { port: portOf(this.server), dnsPort: this.dnsSink.udp.address().port, adminPorts: this.adminServers.map(portOf) };
        this.log("listening", { port: ports.port, dns: ports.dnsPort, admin: ports.adminPorts.join(",") });
        return ports;
    }

    async close(): Promise<void> {
        for (const socket of this.open) socket.destroy();
        await Promise.all([this.server, ...this.adminServers].map(closeServer));
        await this.dnsSink?.close();
    }

    private addressPolicy(): AddressPolicy {
        return { ownAddresses: this.deps.ownAddresses(), allowRanges: this.config.allowRanges };
    }

    private record(agent: EgressAgent | undefined, target: string, decision: "allow" | "deny", reason: string, extra: Record<string, string | number | null> = {}) {
        const name = agent?.name ?? "unknown";
        this.metrics.decisions.inc({ agent: name, decision, reason });
        this.log("decision", { agent: name, target: target.slice(0, 300), decision, reason, ...extra });
    }

    /** Allowlist, then one resolution, then address safety on every answer. Report mode relaxes only the allowlist. */
    private async vet(agent: EgressAgent | undefined, target: Target): Promise<Vetted> {
        const decision = decideTarget(agent, target);
        if (!decision.allow) return { ok: false, agent, reason: decision.reason };
        const wouldDeny = decision.wouldDeny ?? null;
        const policy = this.addressPolicy();
        if (target.kind === "ip") {
            const denial = addressDenial(target.address, policy);
            return denial ? { ok: false, agent, reason: denial } : { ok: true, agent: agent!, address: target.address, wouldDeny };
        }
        let answers: string[];
        try {
            answers = await this.deps.resolve(target.host);
        } catch {
            return { ok: false, agent, reason: "resolver_failure" };
        }
        const vetted = vetAnswers(answers, policy);
        return vetted.ok ? { ok: true, agent: agent!, address: vetted.address, wouldDeny } : { ok: false, agent, reason: vetted.reason };
    }

    private refuseRaw(socket: Duplex, agent: EgressAgent | undefined, reason: string, target: string, status = "403 Forbidden") {
        this.record(agent, target, "deny", reason);
        const body = `egress denied: ${reason}\n`;
        socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
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

    private async handleConnect(req: http.IncomingMessage, client: Duplex, head: Buffer) {
        client.on("error", () => client.destroy());
        const agent = agentForSource(req.socket.remoteAddress, this.agents);
        const targetText = req.url ?? "";
        const parsed = parseConnect(targetText, req.headers.host);
        if (!parsed.ok) return this.refuseRaw(client, agent, parsed.reason, targetText);
        const vetted = await this.vet(agent, parsed.value);
        if (!vetted.ok) return this.refuseRaw(client, vetted.agent, vetted.reason, targetText);
        if (!this.takeTunnel(vetted.agent)) return this.refuseRaw(client, vetted.agent, "tunnel_limit", targetText, "429 Too Many Requests");
        let upstream: net.Socket;
        try {
            upstream = await this.deps.dial(vetted.address, parsed.value.port, this.config.limits.connectTimeoutMs);
        } catch {
            this.releaseTunnel(vetted.agent);
            return this.refuseRaw(client, vetted.agent, "dial_failed", targetText, "502 Bad Gateway");
        }
        this.record(vetted.agent, targetText, "allow", "allowlisted", { address: vetted.address, would_deny: vetted.wouldDeny });
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) {
            this.metrics.bytes.inc({ agent: vetted.agent.name, direction: "out" }, head.length);
            upstream.write(head);
        }
        this.relay(vetted.agent, client, upstream);
    }

    private relay(agent: EgressAgent, client: Duplex, upstream: net.Socket) {
        const name = agent.name;
        this.open.add(client);
        this.open.add(upstream);
        let done = false;
        const finish = () => {
            if (done) return;
            done = true;
            client.destroy();
            upstream.destroy();
            this.open.delete(client);
            this.open.delete(upstream);
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

    private async handlePlain(req: http.IncomingMessage, res: http.ServerResponse) {
        const agent = agentForSource(req.socket.remoteAddress, this.agents);
        const targetText = req.url ?? "";
        const refuse = (reason: string, agentForLog = agent, status = 403) => {
            this.record(agentForLog, targetText, "deny", reason);
            res.writeHead(status, { "content-type": "text/plain", connection: "close" }).end(`egress denied: ${reason}\n`);
        };
        if (!PLAIN_METHODS.has(req.method ?? "")) return refuse("method");
        const te = req.headers["transfer-encoding"];
        if (te !== undefined && (te.toLowerCase() !== "chunked" || req.headers["content-length"] !== undefined)) return refuse("smuggling");
        const parsed = parseAbsoluteHttp(targetText, req.headers.host);
        if (!parsed.ok) return refuse(parsed.reason);
        const { target, path, authority } = parsed.value;
        const vetted = await this.vet(agent, target);
        if (!vetted.ok) return refuse(vetted.reason, vetted.agent);
        if (!this.takeTunnel(vetted.agent)) return refuse("tunnel_limit", vetted.agent, 429);
        let socket: net.Socket;
        try {
            socket = await this.deps.dial(vetted.address, target.port, this.config.limits.connectTimeoutMs);
        } catch {
            this.releaseTunnel(vetted.agent);
            return refuse("dial_failed", vetted.agent, 502);
        }
        this.record(vetted.agent, targetText, "allow", "allowlisted", { address: vetted.address, would_deny: vetted.wouldDeny });
        let released = false;
        const release = () => {
            if (released) return;
            released = true;
            this.releaseTunnel(vetted.agent);
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
            upstreamRes.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: vetted.agent.name, direction: "in" }, chunk.length));
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
        req.on("data", (chunk: Buffer) => this.metrics.bytes.inc({ agent: vetted.agent.name, direction: "out" }, chunk.length));
        req.pipe(upstreamReq);
    }
}
