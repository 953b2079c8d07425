// KeyProxy's view of whether each agent's container is there: pure transitions, then the probe against a
// listener on the loopback address an agent on 127.0.0.0/29 would have.
import net from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { AgentProbe, type Liveness, UNKNOWN, nextLiveness } from "../proxy-image/src/agentProbe";
import { keyProxyRuntimeConfig } from "../components/keyProxy";
import { parseStackConfig } from "../infra/config";
import { PORTS, agentNetworkAddresses } from "../infra/topology";
import { freePort, waitUntil } from "./support/processes";
import { devConfig } from "./support/mockStack";

const UP: Liveness = { seenUp: true, up: true };
const DOWN_AFTER_UP: Liveness = { seenUp: true, up: false };

describe.each([
    ["never seen, unreachable", UNKNOWN, false, { seenUp: false, up: false }, false],
    ["never seen, answers: first sight, not a restart", UNKNOWN, true, UP, false],
    ["up, still answers", UP, true, UP, false],
    ["up, stops answering", UP, false, DOWN_AFTER_UP, false],
    ["gone, still gone", DOWN_AFTER_UP, false, DOWN_AFTER_UP, false],
    ["gone, answers again: a restart", DOWN_AFTER_UP, true, UP, true],
])("liveness: %s", (_case, previous, reachable, state, restarted) => {
    it("moves as expected", () => expect(nextLiveness(previous, reachable)).toEqual({ state, restarted }));
});

describe("the probe", () => {
    const registry = new Registry();
    const up = new Gauge({ name: "agent_up", help: "up", labelNames: ["agent"], registers: [registry] });
    const restarts = new Counter({ name: "agent_restarts_total", help: "restarts", labelNames: ["agent"], registers: [registry] });
    let probe: AgentProbe | undefined;
    let server: net.Server | undefined;
    afterEach(() => {
        probe?.stop();
        server?.close();
    });
    const value = async (name: string) => (await registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.agent === "bart")?.value;
    const listen = (port: number) =>
        new Promise<net.Server>((resolve) => {
            const s = net.createServer((socket) => socket.destroy()).listen(port, agentNetworkAddresses("127.0.0.0/29").agent, () => resolve(s));
        });

    it("reports the agent up, down when its port goes away, and a restart when it comes back", async () => {
        const port = await freePort();
        server = await listen(port);
        probe = new AgentProbe({ port, intervalMs: 20, timeoutMs: 200 }, up, restarts);
        probe.setAgents([{ name: "bart", subnet: "127.0.0.0/29" }]);
        probe.start();
        await waitUntil(async () => (await value("agent_up")) === 1, "bart up");
        expect(await value("agent_restarts_total")).toBe(0);
        await new Promise((r) => server!.close(r));
        await waitUntil(async () => (await value("agent_up")) === 0, "bart down");
        server = await listen(port);
        await waitUntil(async () => (await value("agent_restarts_total")) === 1, "a restart counted");
        expect(await value("agent_up")).toBe(1);
        probe.setAgents([]);
        expect(await value("agent_up")).toBeUndefined();
    });

    it("leaves agents registered by port alone (their pods admit no connection from KeyProxy)", async () => {
        probe = new AgentProbe({ port: 1, intervalMs: 10, timeoutMs: 50 }, up, restarts);
        probe.setAgents([{ name: "homer", port: 20001 }, { name: "bart", subnet: "127.0.0.0/29" }]);
        const agents = async (name: string) => (await registry.getSingleMetric(name)!.get()).values.map((v) => v.labels.agent);
        expect(await agents("agent_restarts_total")).not.toContain("homer");
        expect(await agents("agent_restarts_total")).toContain("bart");
        probe.start();
        await waitUntil(async () => (await agents("agent_up")).includes("bart"), "bart probed");
        expect(await agents("agent_up")).not.toContain("homer");
        probe.setAgents([]);
    });

    it("is configured by the KeyProxy component to probe the agents' gateway port", () => {
        expect(keyProxyRuntimeConfig(parseStackConfig(devConfig()).keyProxy).agentProbe).toEqual({ port: PORTS.agentDashboard, intervalMs: 1000 });
    });
});
