import { beforeAll, describe, expect, it } from "vitest";
import { parseStackConfig } from "../infra/config";
import { agentNetworkAddresses } from "../infra/topology";
import { FAKE_SECRETS, type RecordedResource, TYPES, agentConfigUpload, byType, devConfig, isSecret, reveal, runProgram } from "./support/mockStack";

const KEY_SHAPE = /sk-(ant-|proj-)?[A-Za-z0-9_-]{16,}/;

let dev: RecordedResource[];
beforeAll(async () => {
    dev = await runProgram(devConfig());
});

const allContainers = () => byType(dev, TYPES.container);
const labelOf = (r: RecordedResource, label: string) => r.inputs.labels.find((l: { label: string }) => l.label === label)?.value;
const containers = () => allContainers().filter((c) => labelOf(c, "openclaw.role") === "agent");
const allocated = parseStackConfig(devConfig()).agents;
const SERVICE_CONTAINERS = ["openclaw-dev-agent-bart", "openclaw-dev-agent-lisa", "openclaw-dev-egress-gateway", "openclaw-dev-key-proxy"];
const CONFIG_WRITERS = ["openclaw-dev-agent-bart-config-writer", "openclaw-dev-agent-lisa-config-writer"];
const CONTAINER_NAMES = [...SERVICE_CONTAINERS, ...CONFIG_WRITERS].sort();
const containerNamed = (name: string) => reveal(allContainers().find((r) => r.inputs.name === name)!.inputs);

describe("every container (invariant 4)", () => {
    it("is one of the stack's known containers", () => {
        expect(allContainers().map((c) => c.inputs.name).sort()).toEqual(CONTAINER_NAMES);
    });

    it.each(CONTAINER_NAMES)("%s is read-only, capability-free, unprivileged, non-root and limited", (name) => {
        const c = containerNamed(name);
        expect(c.readOnly).toBe(true);
        expect(c.privileged).toBe(false);
        expect(c.capabilities).toEqual({ drops: ["ALL"] });
        expect(c.securityOpts).toContain("no-new-privileges:true");
        expect(c.user).toMatch(/^[1-9]\d*:\d+$/);
        expect(c.memory).toBeGreaterThan(0);
        expect(c.memorySwap).toBe(c.memory);
        expect(Number(c.cpus)).toBeGreaterThan(0);
        expect(c.pidMode).toBeUndefined();
        expect(c.devices).toBeUndefined();
        for (const v of c.volumes ?? []) {
            expect(v.hostPath).toBeUndefined();
            expect(v.volumeName).toBeTruthy();
        }
        expect(JSON.stringify(c)).not.toContain("docker.sock");
        for (const options of Object.values<string>(c.tmpfs ?? {})) expect(options).toMatch(/noexec.*nosuid.*nodev/);
        expect(c.healthcheck.tests.length).toBeGreaterThan(0);
        expect(c.logOpts).toMatchObject({ "max-size": expect.any(String), "max-file": expect.any(String) });
        expect(c.ports).toBeUndefined();
    });

    it.each(SERVICE_CONTAINERS)("%s runs on its networks only (no host or shared network mode), restarting unless stopped", (name) => {
        const c = containerNamed(name);
        expect(c.networkMode).toBeUndefined();
        expect(c.networksAdvanced.length).toBeGreaterThan(0);
        expect(c.restart).toBe("unless-stopped");
        expect(c.mustRun).toBe(true);
    });

    it.each(CONFIG_WRITERS)("%s runs once with no network at all, never restarted", (name) => {
        const c = containerNamed(name);
        expect(c.networkMode).toBe("none");
        expect(c.networksAdvanced).toBeUndefined();
        expect(c.dns).toBeUndefined();
        expect(c).toMatchObject({ attach: true, mustRun: false, restart: "no" });
        expect(c.labels).toContainEqual({ label: "openclaw.role", value: "agent-config" });
    });

    it("has a pids limit applied by a command that targets it, when it is long-running", () => {
        const commands = byType(dev, TYPES.command).filter((cmd) => cmd.inputs.create.startsWith("docker update --pids-limit"));
        const config = parseStackConfig(devConfig());
        const expectedPids: Record<string, number> = { "openclaw-dev-key-proxy": config.keyProxy.resources.pids, "openclaw-dev-egress-gateway": config.egress.resources.pids };
        for (const agent of allocated) expectedPids[`openclaw-dev-agent-${agent.name}`] = agent.resources.pids;
        for (const c of allContainers().filter((r) => !CONFIG_WRITERS.includes(r.inputs.name))) {
            const command = commands.find((cmd) => cmd.inputs.create.endsWith(` ${c.name}-id`));
            expect(command?.inputs.create).toBe(`docker update --pids-limit ${expectedPids[c.inputs.name]} ${c.name}-id`);
        }
        // A one-shot writer has exited before any command could reach it: it gets none.
        expect(commands).toHaveLength(SERVICE_CONTAINERS.length);
    });
});

describe("the uplink", () => {
    it("keeps KeyProxy's and EgressGateway's fixed addresses out of the range Docker hands out", () => {
        const uplink = byType(dev, TYPES.network).find((n) => n.name === "uplink")!;
        expect(uplink.inputs.ipamConfigs).toEqual([{ subnet: "10.63.255.0/24", gateway: "10.63.255.1", ipRange: "10.63.255.128/25" }]);
    });
});

describe("agent networks", () => {
    it.each(allocated.map((a) => [a.name, a.subnet]))("%s: internal, its own subnet %s, bridge without a host address", (name, subnet) => {
        const network = byType(dev, TYPES.network).find((n) => n.inputs.name === `openclaw-dev-net-agent-${name}`)!;
        expect(network.inputs.internal).toBe(true);
        expect(network.inputs.ipamConfigs).toEqual([{ subnet, gateway: agentNetworkAddresses(subnet).gateway }]);
        expect(network.inputs.options).toMatchObject({ "com.docker.network.bridge.inhibit_ipv4": "true" });
    });

    it("each agent container sits on its own network only, at its fixed address, resolving through the sink", () => {
        for (const agent of allocated) {
            const c = containers().find((r) => r.inputs.name === `openclaw-dev-agent-${agent.name}`)!.inputs;
            const addresses = agentNetworkAddresses(agent.subnet);
            expect(c.networksAdvanced).toEqual([{ name: `openclaw-dev-net-agent-${agent.name}`, ipv4Address: addresses.agent }]);
            expect(c.dns).toEqual([addresses.egressGateway]);
        }
    });

    it("subnets differ between agents", () => {
        const subnets = byType(dev, TYPES.network).filter((n) => n.inputs.internal).map((n) => n.inputs.ipamConfigs[0].subnet);
        expect(subnets).toHaveLength(2);
        expect(new Set(subnets).size).toBe(subnets.length);
    });
});

describe("published ports (invariant 5)", () => {
    // The agent network has no host address, so no published port could reach an agent: its dashboard is forwarded
    // to 127.0.0.1 by `npm run bridge -- dashboard <agent>`, on the port its label names.
    it("none by default: each agent names its dashboard's local port in a label instead", () => {
        expect(allContainers().flatMap((c) => c.inputs.ports ?? [])).toEqual([]);
        expect(containers().map((c) => [c.inputs.name, labelOf(c, "openclaw.dashboard-port")]).sort()).toEqual([
            ["openclaw-dev-agent-bart", "18801"],
            ["openclaw-dev-agent-lisa", "18802"],
        ]);
    });

    it("none either when the stack opts into another address: the dashboard is still forwarded to loopback only", async () => {
        const resources = await runProgram({ ...devConfig(), network: { publishAddress: "10.9.8.7" } });
        expect(byType(resources, TYPES.container).flatMap((c) => c.inputs.ports ?? [])).toEqual([]);
        for (const stack of [resources, dev]) {
            expect(agentConfigUpload(stack, "bart").gateway.controlUi.allowedOrigins).toEqual(["http://127.0.0.1:18801", "http://localhost:18801"]);
        }
    });
});

describe("agent wiring", () => {
    const credentialOf = (agent: string): string => agentConfigUpload(dev, agent).models.providers.anthropic.apiKey;

    it("points both providers at KeyProxy on the agent's own network, with the agent's credential as key", () => {
        for (const agent of allocated) {
            const { keyProxy } = agentNetworkAddresses(agent.subnet);
            const config = agentConfigUpload(dev, agent.name);
            const credential = credentialOf(agent.name);
            expect(credential).toMatch(/^ocp_[A-Za-z0-9]{48}$/);
            expect(config.models.providers.anthropic).toMatchObject({ baseUrl: `http://${keyProxy}:8080/anthropic`, apiKey: credential });
            expect(config.models.providers.openai).toMatchObject({ baseUrl: `http://${keyProxy}:8080/openai/v1`, apiKey: credential });
            expect(config.gateway).toMatchObject({ bind: "lan", port: 18789, auth: { mode: "token" } });
            expect(config.agents.defaults.model.primary).toBe(agent.model);
        }
    });

    it("gives the agent its config read-only from the volume its writer fills, and its egress proxy in the environment", () => {
        for (const agent of allocated) {
            const c = containerNamed(`openclaw-dev-agent-${agent.name}`);
            const writer = containerNamed(`openclaw-dev-agent-${agent.name}-config-writer`);
            const volume = `openclaw-dev-agent-${agent.name}-config`;
            expect(c.volumes).toContainEqual({ volumeName: volume, containerPath: "/etc/openclaw", readOnly: true });
            expect(c.uploads).toBeUndefined();
            expect(writer.volumes).toEqual([{ volumeName: volume, containerPath: "/home/node", readOnly: false }]);
            expect(writer.uploads.map((u: { file: string; permissions: string }) => [u.file, u.permissions])).toEqual([["/home/node/.incoming.json", "0444"]]);
            expect(c.envs).toEqual(
                expect.arrayContaining([
                    "OPENCLAW_CONFIG_PATH=/etc/openclaw/openclaw.json",
                    "OPENCLAW_NO_AUTO_UPDATE=1",
                    "DO_NOT_TRACK=1",
                    `HTTPS_PROXY=http://${agentNetworkAddresses(agent.subnet).egressGateway}:3128`,
                ]),
            );
        }
    });

    it("keeps the credential out of every agent's environment: no key variable, no credential, nothing key-shaped", () => {
        for (const agent of allocated) {
            const envs: string[] = containerNamed(`openclaw-dev-agent-${agent.name}`).envs;
            const text = envs.join("\n");
            for (const other of allocated) expect(text).not.toContain(credentialOf(other.name));
            expect(text).not.toMatch(/ocp_/);
            expect(text).not.toMatch(KEY_SHAPE);
            expect(envs.filter((e) => /^[A-Z_]*(API_KEY|TOKEN|BASE_URL)=/i.test(e))).toEqual([]);
        }
    });

    it("keeps credentials and keys secret in the containers' inputs", () => {
        expect(isSecret(allContainers().find((c) => c.inputs.name === "openclaw-dev-key-proxy")!.inputs.envs)).toBe(true);
        const withUploads = allContainers().filter((c) => c.inputs.uploads);
        expect(withUploads.map((c) => c.inputs.name).sort()).toEqual(expect.arrayContaining(CONFIG_WRITERS));
        for (const c of withUploads) {
            const uploads = c.inputs.uploads;
            expect(isSecret(uploads) || isSecret(uploads[0]) || isSecret(uploads[0].content)).toBe(true);
        }
    });

    it("gives each agent a different credential", () => {
        const credentials = allocated.map((a) => credentialOf(a.name));
        expect(new Set(credentials).size).toBe(2);
    });
});

describe("no real key reaches an agent (invariant 1)", () => {
    it("no input of any resource but KeyProxy's container holds a real key, by value or by shape", () => {
        const others = dev.filter((r) => !(r.type === TYPES.container && r.inputs.name === "openclaw-dev-key-proxy"));
        expect(others.length).toBeGreaterThan(15);
        const text = JSON.stringify(others.map((r) => reveal(r.inputs)));
        for (const secret of Object.values(FAKE_SECRETS)) expect(text).not.toContain(secret);
        expect(text).not.toMatch(KEY_SHAPE);
    });

    it("KeyProxy's container holds both real keys, in its own variables", () => {
        const envs: string[] = reveal(allContainers().find((c) => c.inputs.name === "openclaw-dev-key-proxy")!.inputs.envs);
        expect(envs).toContain(`KEYPROXY_KEY_ANTHROPIC=${FAKE_SECRETS.anthropicApiKey}`);
        expect(envs).toContain(`KEYPROXY_KEY_OPENAI=${FAKE_SECRETS.openaiApiKey}`);
        const config = JSON.parse(envs.find((e) => e.startsWith("KEYPROXY_CONFIG="))!.slice("KEYPROXY_CONFIG=".length));
        expect(JSON.stringify(config)).not.toMatch(KEY_SHAPE);
    });
});

describe("bad config (invariant 9)", () => {
    it("fails before any resource is declared, naming the key", async () => {
        const raw = devConfig();
        (raw.agents as any[])[1].name = "Lisa";
        const resources: RecordedResource[] = [];
        await expect(runProgram(raw).then((r) => resources.push(...r))).rejects.toThrow(/^invalid config in Pulumi\.dev\.yaml:\n[\s\S]*openclaw:agents\[1\]\.name: must be a DNS label/);
        expect(resources).toEqual([]);
    });

    it("reports every problem at once", async () => {
        const raw = { ...devConfig(), anthropicApiKey: undefined, network: { addressPool: "172.18.0.0/16" } };
        await expect(runProgram(raw)).rejects.toThrow(/openclaw:network\.addressPool[\s\S]*openclaw:anthropicApiKey|openclaw:anthropicApiKey[\s\S]*openclaw:network\.addressPool/);
    });
});

function inputsByName(resources: RecordedResource[]) {
    return new Map(resources.map((r) => [`${r.type}::${r.name}`, reveal(r.inputs)]));
}

describe("changing one agent changes no other (invariant 8)", () => {
    it("adding a third agent adds only its resources and leaves every existing input identical", async () => {
        const raw = devConfig();
        (raw.agents as any[]).push({ name: "homer", image: "ghcr.io/openclaw/openclaw:2026.11.1", dashboardPort: 18803, budget: { dailyUsd: 1 } });
        const grown = await runProgram(raw);
        const before = inputsByName(dev);
        const after = inputsByName(grown);
        for (const [key, inputs] of before) expect(after.get(key), key).toEqual(inputs);
        const added = [...after.keys()].filter((key) => !before.has(key));
        expect(added.length).toBeGreaterThan(0);
        expect(added.sort()).toEqual(
            [
                `${TYPES.sandbox}::agent-homer`,
                `${TYPES.network}::agent-homer-network`,
                `${TYPES.volume}::agent-homer-state`,
                `${TYPES.volume}::agent-homer-config`,
                `${TYPES.password}::agent-homer-credential`,
                `${TYPES.password}::agent-homer-dashboard-token`,
                `${TYPES.container}::agent-homer-container`,
                `${TYPES.command}::agent-homer-pids-limit`,
                `${TYPES.container}::agent-homer-config-writer-container`,
                `${TYPES.command}::key-proxy-attach-homer`,
                `${TYPES.command}::key-proxy-register-homer`,
                `${TYPES.command}::egress-gateway-attach-homer`,
                `${TYPES.command}::egress-gateway-register-homer`,
            ].sort(),
        );
    });

    it("removing an agent removes only its resources", async () => {
        const raw = devConfig();
        raw.agents = (raw.agents as any[]).filter((a) => a.name !== "bart");
        const shrunk = inputsByName(await runProgram(raw));
        const before = inputsByName(dev);
        for (const [key, inputs] of shrunk) expect(before.get(key), key).toEqual(inputs);
        const removed = [...before.keys()].filter((key) => !shrunk.has(key));
        expect(removed.length).toBe(13);
        for (const key of removed) expect(key).toMatch(/::(agent-bart(-|$)|(key-proxy|egress-gateway)-(attach|register)-bart$)/);
    });

    // The agent container itself is untouched: only the writer of its config is replaced, and the gateway reloads the file.
    it("bumping one agent's credential epoch changes only that agent's credential and its dependents", async () => {
        const raw = devConfig();
        (raw.agents as any[])[0].credentialEpoch = 2;
        const rotated = inputsByName(await runProgram(raw));
        const before = inputsByName(dev);
        const changed = [...before.keys()].filter((key) => JSON.stringify(before.get(key)) !== JSON.stringify(rotated.get(key)));
        expect(changed.sort()).toEqual([
            `${TYPES.command}::key-proxy-register-bart`,
            `${TYPES.container}::agent-bart-config-writer-container`,
            `${TYPES.password}::agent-bart-credential`,
        ]);
    });
});
