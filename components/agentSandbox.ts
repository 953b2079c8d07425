import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { AgentConfig } from "../infra/config";
import { AGENT_HOME, AGENT_USER, ALIASES, LABELS, PORTS, agentNetworkAddresses, dockerNames } from "../infra/topology";
import { type PublishedPort, hardenedContainer, publishAddressLabel } from "./hardening";
import { AGENT_CREDENTIAL } from "../runtime/registry";

export interface ServiceEndpoint {
    address: pulumi.Input<string>;
    port: number;
}

export interface AgentSandboxArgs {
    stack: string;
    agent: AgentConfig;
    /** Host address the dashboard is published on (127.0.0.1 unless the stack opts into another). */
    publishAddress: string;
    /** The Docker host, for the commands that finish what the provider cannot express. */
    dockerHost: string;
    /** KeyProxy on this agent's network. */
    keyProxy: ServiceEndpoint;
    /** EgressGateway's HTTP proxy on this agent's network. */
    egressGateway: ServiceEndpoint;
    /** The only resolver the agent's container may use: EgressGateway's DNS sink on this network. */
    dnsServer: pulumi.Input<string>;
}

/**
 * Bridge options of every agent network. `internal` removes the route out; `inhibit_ipv4` leaves the bridge
 * without an address, so the host does not answer on a gateway address either (measured on Docker 20.10:
 * an internal network alone still reaches host listeners on 0.0.0.0 through the gateway).
 */
export const AGENT_NETWORK_OPTIONS: Record<string, string> = {
    "com.docker.network.bridge.inhibit_ipv4": "true",
    "com.docker.network.bridge.enable_ip_masquerade": "false",
    "com.docker.network.bridge.enable_icc": "true",
};

/**
 * Where the operator-managed OpenClaw config lives (OPENCLAW_CONFIG_PATH points there). Uploads go into a
 * directory that exists when the container is created: a read-only root refuses them everywhere but in a
 * volume, and the provider copies into the file's directory. So: the top of the state volume.
 */
export const OPENCLAW_CONFIG_PATH = `${AGENT_HOME}/openclaw-managed.json`;

export interface OpenClawConfigInput {
    agent: AgentConfig;
    keyProxyUrl: string;
    credential: string;
    dashboardToken: string;
}

/** The agent's OpenClaw config: both providers point at KeyProxy, with the agent's credential as their key. */
export function openClawConfig({ agent, keyProxyUrl, credential, dashboardToken }: OpenClawConfigInput): string {
    return JSON.stringify(
        {
            gateway: { mode: "local", bind: "lan", port: PORTS.agentDashboard, auth: { mode: "token", token: dashboardToken } },
            models: {
                mode: "merge",
                providers: {
                    anthropic: { baseUrl: `${keyProxyUrl}/anthropic`, apiKey: credential, api: "anthropic-messages" },
                    openai: { baseUrl: `${keyProxyUrl}/openai/v1`, apiKey: credential, api: "openai-completions" },
                },
            },
            agents: { defaults: { model: { primary: agent.model } } },
        },
        null,
        2,
    );
}

export function agentEnvironment(keyProxyUrl: string, egressProxyUrl: string, keyProxyAddress: string, credential: string): string[] {
    const noProxy = [keyProxyAddress, ALIASES.keyProxy, "localhost", "127.0.0.1"].join(",");
    return [
        `HOME=${AGENT_HOME}`,
        `OPENCLAW_CONFIG_PATH=${OPENCLAW_CONFIG_PATH}`,
        `ANTHROPIC_BASE_URL=${keyProxyUrl}/anthropic`,
        `OPENAI_BASE_URL=${keyProxyUrl}/openai/v1`,
        `ANTHROPIC_API_KEY=${credential}`,
        `OPENAI_API_KEY=${credential}`,
        `HTTP_PROXY=${egressProxyUrl}`,
        `HTTPS_PROXY=${egressProxyUrl}`,
        `http_proxy=${egressProxyUrl}`,
        `https_proxy=${egressProxyUrl}`,
        `NO_PROXY=${noProxy}`,
        `no_proxy=${noProxy}`,
    ];
}

/** Health: the dashboard port accepts connections. Uses the image's node, since it has no curl. */
export const AGENT_HEALTHCHECK = [
    "CMD",
    "node",
    "-e",
    `require("net").connect(${PORTS.agentDashboard},"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))`,
];

/**
 * One OpenClaw agent: its internal network with its own subnet, its hardened container, its state volume,
 * its loopback-only dashboard, and its credential for KeyProxy (never a real provider key).
 */
export class AgentSandbox extends pulumi.ComponentResource {
    public readonly agent: AgentConfig;
    public readonly network: docker.Network;
    public readonly container: docker.Container;
    public readonly addresses: ReturnType<typeof agentNetworkAddresses>;
    /** The agent's KeyProxy credential (secret). Rotates when the agent's credentialEpoch changes. */
    public readonly credential: pulumi.Output<string>;
    public readonly dashboardToken: pulumi.Output<string>;
    public readonly dashboardUrl: string;
    /** How a shared service reaches this agent: the agent's network and the service's fixed address on it. */
    public readonly link: (service: "keyProxy" | "egressGateway") => { name: string; network: pulumi.Output<string>; subnet: string; address: string };

    constructor(name: string, args: AgentSandboxArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:AgentSandbox", name, {}, opts);
        const { agent, stack } = args;
        this.agent = agent;
        this.addresses = agentNetworkAddresses(agent.subnet);

        this.network = new docker.Network(
            `${name}-network`,
            {
                name: dockerNames.agentNetwork(stack, agent.name),
                driver: "bridge",
                internal: true,
                ipamConfigs: [{ subnet: agent.subnet, gateway: this.addresses.gateway }],
                options: AGENT_NETWORK_OPTIONS,
                labels: [
                    { label: LABELS.stack, value: stack },
                    { label: LABELS.agent, value: agent.name },
                ],
            },
            { parent: this, deleteBeforeReplace: true },
        );

        const state = new docker.Volume(
            `${name}-state`,
            { name: dockerNames.agentStateVolume(stack, agent.name), labels: [{ label: LABELS.agent, value: agent.name }] },
            { parent: this },
        );

        const credential = new random.RandomPassword(
            `${name}-credential`,
            { length: AGENT_CREDENTIAL.randomChars, special: false, keepers: { agent: agent.name, epoch: String(agent.credentialEpoch) } },
            { parent: this },
        );
        this.credential = pulumi.secret(pulumi.interpolate`${AGENT_CREDENTIAL.prefix}${credential.result}`);
        const dashboardToken = new random.RandomPassword(
            `${name}-dashboard-token`,
            { length: 40, special: false, keepers: { agent: agent.name } },
            { parent: this },
        );
        this.dashboardToken = pulumi.secret(dashboardToken.result);

        const keyProxyUrl = pulumi.interpolate`http://${args.keyProxy.address}:${args.keyProxy.port}`;
        const egressProxyUrl = pulumi.interpolate`http://${args.egressGateway.address}:${args.egressGateway.port}`;
        const config = pulumi
            .all([keyProxyUrl, this.credential, this.dashboardToken])
            .apply(([url, cred, token]) => openClawConfig({ agent, keyProxyUrl: url, credential: cred, dashboardToken: token }));
        const envs = pulumi
            .all([keyProxyUrl, egressProxyUrl, args.keyProxy.address, this.credential])
            .apply(([url, egress, address, cred]) => agentEnvironment(url, egress, address, cred));

        // The dashboard, on loopback unless the stack opted into another address.
        const ports: PublishedPort[] = [{ internal: PORTS.agentDashboard, external: agent.dashboardPort, ip: args.publishAddress }];
        const { container } = hardenedContainer(
            name,
            {
                containerName: dockerNames.agentContainer(stack, agent.name),
                image: agent.image,
                user: AGENT_USER,
                resources: agent.resources,
                labels: {
                    [LABELS.stack]: stack,
                    [LABELS.role]: "agent",
                    [LABELS.agent]: agent.name,
                    ...publishAddressLabel(ports),
                },
                healthcheck: { tests: AGENT_HEALTHCHECK, startPeriod: "60s" },
                networks: [{ name: this.network.name, ipv4Address: this.addresses.agent }],
                envs: pulumi.secret(envs),
                ports,
                volumes: [{ volumeName: state.name, containerPath: AGENT_HOME }],
                tmpfs: { "/tmp": "256m" },
                uploads: [{ file: OPENCLAW_CONFIG_PATH, content: pulumi.secret(config), permissions: "0644" }],
                dns: [args.dnsServer],
                hostname: agent.name,
            },
            args.dockerHost,
            { parent: this },
        );
        this.container = container;
        this.dashboardUrl = `http://${args.publishAddress}:${agent.dashboardPort}/`;

        this.link = (service) => ({ name: agent.name, network: this.network.name, subnet: agent.subnet, address: this.addresses[service] });

        this.registerOutputs({
            network: this.network.name,
            subnet: agent.subnet,
            container: this.container.name,
            dashboardUrl: this.dashboardUrl,
        });
    }
}
