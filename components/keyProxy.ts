import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import type { AgentEntry, Budget, RuntimeConfigInput } from "../contracts/keyProxy";
import { type KeyProxyConfig, enabledProviders } from "../infra/config";
import { keyEnv } from "../providers/index";
import { ALIASES, KEY_PROXY_DATA_DIR, KEY_PROXY_ENTRY, PORTS, dockerNames } from "../infra/topology";
import type { Listen } from "../runtime/admin";
import { type RemoteMetrics, connectAgent, sharedServiceContainer } from "./sharedService";

/** What KeyProxy needs to know of one agent. */
export interface KeyProxyAgent {
    name: string;
    /** The agent's network (Docker name). */
    network: pulumi.Input<string>;
    subnet: string;
    /** KeyProxy's fixed address on that network. */
    address: string;
    /** The agent's credential (secret); KeyProxy is given only its sha256. */
    credential: pulumi.Input<string>;
    budget: Budget;
}

export interface KeyProxyArgs {
    stack: string;
    config: KeyProxyConfig;
    /** The real provider keys (Pulumi secrets); only this container receives them. */
    upstreamKeys: Record<string, pulumi.Input<string>>;
    /** The network with a route out, shared with EgressGateway. */
    uplinkNetwork: pulumi.Input<string>;
    /** KeyProxy's fixed address on the uplink. */
    uplinkAddress: string;
    dockerHost: string;
    agents: KeyProxyAgent[];
    /** The metrics endpoint for the monitoring host, when the stack has one. */
    remoteMetrics?: RemoteMetrics;
}

export const DRAIN_SECONDS = 30;

/** Pure: the KEYPROXY_CONFIG the service reads. No secrets in it: keys travel in their own variables. */
export function keyProxyRuntimeConfig(config: KeyProxyConfig, remoteAdmin?: Listen) {
    const upstreams = Object.fromEntries(
        enabledProviders(config).map((p) => [p.id, { kind: p.kind, baseUrl: p.baseUrl, ...(Object.keys(p.prices).length > 0 && { prices: p.prices }) }]),
    );
    return {
        listen: { host: "0.0.0.0", port: PORTS.keyProxy },
        admin: [{ host: "127.0.0.1", port: PORTS.keyProxyMetrics }, ...(remoteAdmin ? [remoteAdmin] : [])],
        upstreams,
        registryDir: `${KEY_PROXY_DATA_DIR}/agents`,
        auditDir: `${KEY_PROXY_DATA_DIR}/audit`,
        auditRotation: config.auditRotation,
        drainSeconds: DRAIN_SECONDS,
        agentProbe: { port: PORTS.agentDashboard, intervalMs: 1000 },
        ...(config.extraCaPem ? { extraCaPem: config.extraCaPem } : {}),
        metering: {
            ledgerFile: `${KEY_PROXY_DATA_DIR}/ledger.log`,
            timeZone: config.budgetTimeZone,
            defaultMaxOutputTokens: config.defaultMaxOutputTokens,
            leaseUsd: config.budgetLeaseUsd,
            prices: config.prices,
            ...(config.fallbackPrice ? { fallbackPrice: config.fallbackPrice } : {}),
        },
    } satisfies RuntimeConfigInput;
}

/** Pure: the registry entry for one agent, as `keyproxy register` reads it on stdin. */
export function registryEntry(agent: { name: string; subnet: string; budget: Budget }, credential: string): string {
    const entry: AgentEntry = { name: agent.name, credentialSha256: createHash("sha256").update(credential, "utf8").digest("hex"), subnet: agent.subnet, budget: agent.budget };
    return JSON.stringify(entry);
}

/**
 * KeyProxy: holds the real keys, and is the agents' only route to the LLM providers. Its container knows
 * nothing of the agents (see connectAgent): it sits on the uplink only, and each agent's credential digest
 * reaches the registry on the proxy's volume, which the proxy reloads live.
 */
export class KeyProxy extends pulumi.ComponentResource {
    public readonly container: docker.Container;
    public readonly containerName: string;

    constructor(name: string, args: KeyProxyArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:KeyProxy", name, {}, opts);
        const { stack, config } = args;
        this.containerName = dockerNames.keyProxyContainer(stack);

        const enabled = enabledProviders(config);
        const keyEnvs = enabled.map(({ id }) => {
            const key = args.upstreamKeys[id];
            if (key === undefined) throw new Error(`KeyProxy: provider ${id} is enabled but has no key`);
            return pulumi.interpolate`${keyEnv(id)}=${key}`;
        });

        const epochLabels = Object.fromEntries(enabled.map((p) => [`openclaw.key-epoch.${p.id}`, String(p.keyEpoch)]));
        const service = sharedServiceContainer(this, name, {
            stack,
            role: "key-proxy",
            containerName: this.containerName,
            volumeName: dockerNames.keyProxyVolume(stack),
            dataDir: KEY_PROXY_DATA_DIR,
            entry: KEY_PROXY_ENTRY,
            image: config.image,
            resources: config.resources,
            uplinkNetwork: args.uplinkNetwork,
            uplinkAddress: args.uplinkAddress,
            dockerHost: args.dockerHost,
            alias: ALIASES.keyProxy,
            runtimeConfig: { variable: "KEYPROXY_CONFIG", build: (remoteAdmin) => keyProxyRuntimeConfig(config, remoteAdmin) },
            envs: pulumi.secret(pulumi.all(keyEnvs)),
            metricsPort: PORTS.keyProxyMetricsTls,
            remoteMetrics: args.remoteMetrics,
            labels: epochLabels,
            stopTimeoutSeconds: DRAIN_SECONDS + 5,
        });
        this.container = service.container;
        for (const agent of args.agents) {
            connectAgent(this, name, service, agent, pulumi.output(agent.credential).apply((credential) => registryEntry(agent, credential)));
        }

        this.registerOutputs({ container: this.containerName });
    }
}
