import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { EgressAgent, EgressConfigInput } from "../contracts/egressGateway";
import { type EgressConfig, type EgressRule, effectiveAllowRules } from "../infra/config";
import { ALIASES, EGRESS_DATA_DIR, EGRESS_ENTRY, PORTS, dockerNames } from "../infra/topology";
import type { Listen } from "../runtime/admin";
import { type RemoteMetrics, connectAgent, sharedServiceContainer } from "./sharedService";

/** What EgressGateway needs to know of one agent. */
export interface EgressGatewayAgent {
    name: string;
    network: pulumi.Input<string>;
    subnet: string;
    /** The gateway's fixed address on that network: the agent's HTTP proxy and DNS server. */
    address: string;
    mode: "enforce" | "report";
    allow: EgressRule[];
}

export interface EgressGatewayArgs {
    stack: string;
    config: EgressConfig;
    uplinkNetwork: pulumi.Input<string>;
    /** EgressGateway's fixed address on the uplink. */
    uplinkAddress: string;
    dockerHost: string;
    agents: EgressGatewayAgent[];
    /** The metrics endpoint for the monitoring host, when the stack has one. */
    remoteMetrics?: RemoteMetrics;
}

/** Pure: the EGRESS_CONFIG the service reads. */
export function egressRuntimeConfig(config: Pick<EgressConfig, "allowPrivateRanges" | "auditRotation">, remoteAdmin?: Listen) {
    return {
        listen: { host: "0.0.0.0", port: PORTS.egressProxy },
        dns: { host: "0.0.0.0", port: PORTS.egressDns },
        admin: [{ host: "127.0.0.1", port: PORTS.egressMetrics }, ...(remoteAdmin ? [remoteAdmin] : [])],
        registryDir: `${EGRESS_DATA_DIR}/agents`,
        auditDir: `${EGRESS_DATA_DIR}/audit`,
        auditRotation: config.auditRotation,
        ...(config.allowPrivateRanges.length > 0 ? { allowRanges: config.allowPrivateRanges } : {}),
    } satisfies EgressConfigInput;
}

/** Pure: an agent's registry entry: its own rules plus the stack-wide ones, default ports filled in. */
export function egressRegistryEntry(agent: Pick<EgressGatewayAgent, "name" | "subnet" | "mode" | "allow">, config: Pick<EgressConfig, "defaultPorts" | "allowForAll">): string {
    const entry: EgressAgent = { name: agent.name, subnet: agent.subnet, mode: agent.mode, allow: effectiveAllowRules(agent.allow, config) };
    return JSON.stringify(entry);
}

/**
 * EgressGateway: the agents' only way to the web (allowlisted CONNECT and plain HTTP, SSRF-safe) and their DNS
 * sink. Like KeyProxy, its container knows nothing of the agents; each one is attached and registered by commands.
 */
export class EgressGateway extends pulumi.ComponentResource {
    public readonly container: docker.Container;
    public readonly containerName: string;

    constructor(name: string, args: EgressGatewayArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:EgressGateway", name, {}, opts);
        const { stack, config } = args;
        this.containerName = dockerNames.egressContainer(stack);
        const service = sharedServiceContainer(this, name, {
            stack,
            role: "egress-gateway",
            containerName: this.containerName,
            volumeName: dockerNames.egressVolume(stack),
            dataDir: EGRESS_DATA_DIR,
            entry: EGRESS_ENTRY,
            image: config.image,
            resources: config.resources,
            uplinkNetwork: args.uplinkNetwork,
            uplinkAddress: args.uplinkAddress,
            dockerHost: args.dockerHost,
            alias: ALIASES.egressGateway,
            runtimeConfig: { variable: "EGRESS_CONFIG", build: (remoteAdmin) => egressRuntimeConfig(config, remoteAdmin) },
            metricsPort: PORTS.egressMetricsTls,
            remoteMetrics: args.remoteMetrics,
            // The DNS sink listens on 53 without any capability: this lowers the privileged-port bound in
            // the container's own network namespace only.
            sysctls: { "net.ipv4.ip_unprivileged_port_start": String(PORTS.egressDns) },
        });
        this.container = service.container;

        for (const agent of args.agents) connectAgent(this, name, service, agent, egressRegistryEntry(agent, config));

        this.registerOutputs({ container: this.containerName });
    }
}
