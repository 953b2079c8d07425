// Port identity (Kubernetes): a listener of its own for each agent registered by port, opened and closed as the
// registry changes, so the port a connection arrived on names its agent. Both services use it.
import { once } from "node:events";
import type net from "node:net";
import type { Logger } from "./log";
import type { AgentIdentity, Arrival } from "./registry";

/** How a connection on a service's listener arrived: `agentPort` is undefined on the main listener. */
export function arrivalOf(agentPort: number | undefined, socket: { remoteAddress?: string }): Arrival {
    return agentPort === undefined ? { via: "network", remoteAddress: socket.remoteAddress } : { via: "port", port: agentPort };
}

interface OpenListener<S> {
    agent: string;
    server: S;
    /** Every connection it accepted: ended when the listener closes (upgraded and CONNECT sockets included). */
    sockets: Set<net.Socket>;
}

export class AgentListeners<S extends net.Server> {
    /** Port to agent name, as the registry says now. */
    private wanted = new Map<number, string>();
    private readonly open = new Map<number, OpenListener<S>>();
    private applied: Promise<void> = Promise.resolve();
    private closed = false;

    /** `create` builds the (not yet listening) server for an agent's port; it is bound on `host`. */
    constructor(
        private readonly host: string,
        private readonly create: (port: number) => S,
        private readonly log: Logger,
    ) {}

    /**
     * Opens a listener for each agent registered by port and closes the others (their connections end); a port whose
     * agent changed is closed and opened again. Resolves once the listeners match these entries. A port that cannot be
     * bound is logged and left closed, so its agent is refused; the next registry change tries it again.
     */
    sync(entries: readonly AgentIdentity[]): Promise<void> {
        this.wanted = new Map(entries.flatMap((e) => (e.port === undefined ? [] : [[e.port, e.name] as const])));
        return this.apply();
    }

    /** The listening servers, for a drain that stops them accepting. */
    get servers(): S[] {
        return [...this.open.values()].map((l) => l.server);
    }

    /** Closes every listener and ends its connections; nothing opens after this. */
    close(): Promise<void> {
        this.closed = true;
        this.wanted = new Map();
        return this.apply();
    }

    private apply(): Promise<void> {
        this.applied = this.applied.then(async () => {
            await Promise.all([...this.open].filter(([port, l]) => this.wanted.get(port) !== l.agent).map(([port, l]) => this.stop(port, l)));
            if (this.closed) return;
            await Promise.all([...this.wanted].filter(([port]) => !this.open.has(port)).map(([port, agent]) => this.start(port, agent)));
        });
        return this.applied;
    }

    private async start(port: number, agent: string) {
        const server = this.create(port);
        const sockets = new Set<net.Socket>();
        server.on("connection", (socket: net.Socket) => {
            // Accepted after the agent left the registry but before its listener closed: ended unanswered.
            if (this.wanted.get(port) !== agent) return void socket.destroy();
            sockets.add(socket);
            socket.once("close", () => sockets.delete(socket));
        });
        try {
            server.listen(port, this.host);
            await once(server, "listening");
        } catch (error) {
            this.log("agent_listener_failed", { agent, port, host: this.host, error: (error as NodeJS.ErrnoException).code ?? (error as Error).message.slice(0, 200), effect: "agent refused" });
            return;
        }
        this.open.set(port, { agent, server, sockets });
        this.log("agent_listener_opened", { agent, port });
    }

    private async stop(port: number, listener: OpenListener<S>) {
        this.open.delete(port);
        const closed = new Promise((resolve) => listener.server.close(resolve));
        const ended = listener.sockets.size;
        for (const socket of listener.sockets) socket.destroy();
        await closed;
        this.log("agent_listener_closed", { agent: listener.agent, port, connections_ended: ended });
    }
}
