// Whether each agent's container is there, seen from KeyProxy (which sits on every agent network): a TCP connect
// to the agent's gateway port at its fixed address. Restarts show as the agent going away and coming back.
// Docker only: on Kubernetes the kubelet's probes say whether an agent's pod is ready.
import net from "node:net";
import type { Counter, Gauge } from "prom-client";
import { agentNetworkAddresses } from "../../infra/topology";
import type { AgentIdentity } from "../../runtime/registry";

export interface Liveness {
    /** Seen answering at least once since KeyProxy started. */
    seenUp: boolean;
    up: boolean;
}

export const UNKNOWN: Liveness = { seenUp: false, up: false };

/** Pure: one probe result applied. A restart is coming back after having answered and then not. */
export function nextLiveness(previous: Liveness, reachable: boolean): { state: Liveness; restarted: boolean } {
    return { state: { seenUp: previous.seenUp || reachable, up: reachable }, restarted: reachable && previous.seenUp && !previous.up };
}

export interface ProbeSettings {
    port: number;
    intervalMs: number;
    timeoutMs: number;
}

function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
        const socket = net.connect({ host, port, timeout: timeoutMs });
        const done = (ok: boolean) => {
            socket.destroy();
            resolve(ok);
        };
        socket.once("connect", () => done(true));
        socket.once("error", () => done(false));
        socket.once("timeout", () => done(false));
    });
}

export class AgentProbe {
    private agents = new Map<string, { address: string; liveness: Liveness }>();
    private timer: NodeJS.Timeout | undefined;

    constructor(
        private readonly settings: ProbeSettings,
        private readonly up: Gauge<"agent">,
        private readonly restarts: Counter<"agent">,
    ) {}

    /** Agents registered by port (Kubernetes) are not probed: their pods admit no connection from KeyProxy. */
    setAgents(entries: readonly AgentIdentity[]) {
        const next = new Map<string, { address: string; liveness: Liveness }>();
        for (const entry of entries) {
            if (entry.subnet === undefined) continue;
            const address = agentNetworkAddresses(entry.subnet).agent;
            const known = this.agents.get(entry.name);
            next.set(entry.name, known?.address === address ? known : { address, liveness: UNKNOWN });
            this.restarts.inc({ agent: entry.name }, 0);
        }
        for (const name of this.agents.keys()) {
            if (!next.has(name)) {
                this.up.remove({ agent: name });
                this.restarts.remove({ agent: name });
            }
        }
        this.agents = next;
    }

    start() {
        const tick = async () => {
            await this.probeAll();
            if (this.timer) this.timer = setTimeout(tick, this.settings.intervalMs).unref();
        };
        this.timer = setTimeout(tick, 0).unref();
    }

    stop() {
        clearTimeout(this.timer);
        this.timer = undefined;
    }

    private async probeAll() {
        await Promise.all(
            [...this.agents].map(async ([name, agent]) => {
                const { state, restarted } = nextLiveness(agent.liveness, await reachable(agent.address, this.settings.port, this.settings.timeoutMs));
                if (this.agents.get(name) !== agent) return;
                agent.liveness = state;
                this.up.set({ agent: name }, state.up ? 1 : 0);
                if (restarted) this.restarts.inc({ agent: name });
            }),
        );
    }
}
