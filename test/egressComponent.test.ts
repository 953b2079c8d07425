import { beforeAll, describe, expect, it } from "vitest";
import { egressRegistryEntry, egressRuntimeConfig } from "../components/egressGateway";
import { parseStackConfig } from "../infra/config";
import { agentNetworkAddresses, uplinkAddresses } from "../infra/topology";
import { type RecordedResource, TYPES, devConfig, reveal, runProgram } from "./support/mockStack";

let dev: RecordedResource[];
beforeAll(async () => {
    dev = await runProgram(devConfig());
});

const find = (resources: RecordedResource[], type: string, name: string) => resources.find((r) => r.type === type && r.name === name)!;
const config = parseStackConfig(devConfig());
const UPLINK = uplinkAddresses(config.network.uplinkSubnet);

describe("the EgressGateway container", () => {
    it("sits on the uplink only, publishes nothing, binds its DNS sink without capabilities", () => {
        const c = reveal(find(dev, TYPES.container, "egress-gateway-container").inputs);
        expect(c.networksAdvanced).toEqual([{ name: "openclaw-dev-uplink", ipv4Address: UPLINK.egressGateway }]);
        expect(c.ports).toBeUndefined();
        expect(c.capabilities).toEqual({ drops: ["ALL"] });
        expect(c.sysctls).toEqual({ "net.ipv4.ip_unprivileged_port_start": "53" });
        expect(c.healthcheck.tests).toEqual(["CMD", "/nodejs/bin/node", "/app/egress.cjs", "healthcheck"]);
        const runtime = JSON.parse(c.envs.find((e: string) => e.startsWith("EGRESS_CONFIG=")).slice("EGRESS_CONFIG=".length));
        expect(runtime).toMatchObject({ listen: { port: 3128 }, dns: { port: 53 }, admin: [{ host: "127.0.0.1" }] });
        expect(runtime.allowRanges).toBeUndefined();
    });

    it("passes a private-range override through only when the stack sets one", () => {
        const auditRotation = { maxFileBytes: 1 << 20, keepSegments: 3 };
        expect(egressRuntimeConfig({ allowPrivateRanges: ["172.16.0.0/12"], auditRotation }).allowRanges).toEqual(["172.16.0.0/12"]);
        expect(egressRuntimeConfig({ allowPrivateRanges: [], auditRotation })).not.toHaveProperty("allowRanges");
    });
});

describe.each(config.agents.map((a) => [a.name, a] as const))("agent %s and EgressGateway", (name, agent) => {
    const { egressGateway } = agentNetworkAddresses(agent.subnet);

    it("attaches the gateway at the address the agent uses as proxy and resolver", () => {
        const attach = find(dev, TYPES.command, `egress-gateway-attach-${name}`).inputs;
        expect(attach.create).toContain(`docker network connect --ip ${egressGateway} --alias egress-gateway openclaw-dev-net-agent-${name} openclaw-dev-egress-gateway`);
        const c = reveal(find(dev, TYPES.container, `agent-${name}-container`).inputs);
        expect(c.envs).toContain(`HTTPS_PROXY=http://${egressGateway}:3128`);
        expect(c.dns).toEqual([egressGateway]);
    });

    it("registers the agent's subnet, mode and allowlist with default ports filled in", () => {
        const register = find(dev, TYPES.command, `egress-gateway-register-${name}`).inputs;
        expect(register.create).toBe("docker exec -i openclaw-dev-egress-gateway /nodejs/bin/node /app/egress.cjs register");
        expect(register.delete).toBe(`docker exec openclaw-dev-egress-gateway /nodejs/bin/node /app/egress.cjs unregister ${name}`);
        const entry = JSON.parse(register.stdin);
        expect(entry).toEqual({ name, subnet: agent.subnet, mode: "enforce", allow: agent.egress.allow.map((r) => ({ host: r.host, ports: [443] })) });
    });
});

describe("egressRegistryEntry", () => {
    it("adds the stack-wide rules and keeps explicit ports", () => {
        const entry = JSON.parse(
            egressRegistryEntry(
                { name: "a", subnet: "10.64.0.0/28", mode: "report", allow: [{ host: "x.example", ports: [80] }, { host: "y.example" }] },
                { defaultPorts: [443, 8443], allowForAll: [{ host: "*.pypi.org" }] },
            ),
        );
        expect(entry.allow).toEqual([
            { host: "x.example", ports: [80] },
            { host: "y.example", ports: [443, 8443] },
            { host: "*.pypi.org", ports: [443, 8443] },
        ]);
    });

    it("changing one agent's allowlist changes only that agent's registration", async () => {
        const raw = devConfig();
        (raw.agents as any[])[0].egress = { allow: ["github.com", "api.github.com"] };
        const changedRun = await runProgram(raw);
        const key = (r: RecordedResource) => `${r.type}::${r.name}`;
        const before = new Map(dev.map((r) => [key(r), JSON.stringify(reveal(r.inputs))]));
        const changed = changedRun.filter((r) => before.get(key(r)) !== JSON.stringify(reveal(r.inputs))).map(key);
        expect(changed).toEqual([`${TYPES.command}::egress-gateway-register-bart`]);
    });
});
