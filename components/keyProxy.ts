import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { type KeyProxyConfig, PROVIDERS, type ProviderId } from "../infra/config";
import { ALIASES, KEY_PROXY_DATA_DIR, KEY_PROXY_ENTRY, LABELS, PORTS, SERVICE_NODE, SERVICE_USER, dockerNames } from "../infra/topology";
import { hardenedContainer } from "./hardening";

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
}

export interface KeyProxyArgs {
    stack: string;
    config: KeyProxyConfig;
    /** The real provider keys (Pulumi secrets); only this container receives them. */
    upstreamKeys: Partial<Record<ProviderId, pulumi.Input<string>>>;
    /** The network with a route out, shared with EgressGateway. */
    uplinkNetwork: pulumi.Input<string>;
    dockerHost: string;
    agents: KeyProxyAgent[];
}

export const DRAIN_SECONDS = 30;

/** Pure: the KEYPROXY_CONFIG the service reads. No secrets in it: keys travel in their own variables. */
export function keyProxyRuntimeConfig(config: KeyProxyConfig) {
    const upstreams: Partial<Record<ProviderId, { baseUrl: string }>> = {};
    for (const id of PROVIDERS) {
        const provider = config.providers[id];
        if (provider) upstreams[id] = { baseUrl: provider.baseUrl };
    }
    return {
        listen: { host: "0.0.0.0", port: PORTS.keyProxy },
        admin: [{ host: "127.0.0.1", port: PORTS.keyProxyMetrics }],
        upstreams,
        registryDir: `${KEY_PROXY_DATA_DIR}/agents`,
        drainSeconds: DRAIN_SECONDS,
    };
}

/** Pure: the registry entry for one agent, as `keyproxy register` reads it on stdin. */
export function registryEntry(agent: { name: string; subnet: string }, credential: string): string {
    return JSON.stringify({ name: agent.name, credentialSha256: createHash("sha256").update(credential, "utf8").digest("hex"), subnet: agent.subnet });
}

/** Pure: commands that attach a running container to an agent network at a fixed address, and detach it. */
export function attachCommands(container: string, network: string, address: string, alias: string) {
    const detach = `docker network disconnect --force ${network} ${container} >/dev/null 2>&1 || true`;
    return {
        create: `${detach}; docker network connect --ip ${address} --alias ${alias} ${network} ${container}`,
        delete: detach,
    };
}

/**
 * KeyProxy: holds the real keys, and is the agents' only route to the LLM providers.
 *
 * pulumi-docker replaces a container whenever its networksAdvanced change (pulumi-docker#242), so the
 * container itself knows nothing of the agents: it sits on the uplink only, and each agent adds two commands,
 * one that attaches the running container to the agent's network (`docker network connect`), one that
 * registers the agent's credential digest in the registry on the proxy's volume (`docker exec ... register`),
 * which the proxy reloads live. Adding, removing or rotating an agent changes only those commands.
 */
export class KeyProxy extends pulumi.ComponentResource {
    public readonly container: docker.Container;
    public readonly containerName: string;

    constructor(name: string, args: KeyProxyArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:KeyProxy", name, {}, opts);
        const { stack, config } = args;
        this.containerName = dockerNames.keyProxyContainer(stack);

        const data = new docker.Volume(`${name}-data`, { name: dockerNames.keyProxyVolume(stack), labels: [{ label: LABELS.stack, value: stack }] }, { parent: this });

        const keyEnvs = PROVIDERS.filter((id) => config.providers[id] !== undefined).map((id) => {
            const key = args.upstreamKeys[id];
            if (key === undefined) throw new Error(`KeyProxy: provider ${id} is enabled but has no key`);
            return pulumi.interpolate`KEYPROXY_KEY_${id.toUpperCase()}=${key}`;
        });
        const envs = pulumi.secret(pulumi.all([`KEYPROXY_CONFIG=${JSON.stringify(keyProxyRuntimeConfig(config))}`, ...keyEnvs]));

        const epochLabels = Object.fromEntries(
            PROVIDERS.filter((id) => config.providers[id] !== undefined).map((id) => [`openclaw.key-epoch.${id}`, String(config.providers[id]!.keyEpoch)]),
        );
        const { container } = hardenedContainer(
            name,
            {
                containerName: this.containerName,
                image: config.image,
                user: SERVICE_USER,
                resources: config.resources,
                labels: { [LABELS.stack]: stack, [LABELS.role]: "key-proxy", ...epochLabels },
                healthcheck: { tests: ["CMD", SERVICE_NODE, KEY_PROXY_ENTRY, "healthcheck"], interval: "15s", startPeriod: "10s" },
                networks: [{ name: args.uplinkNetwork }],
                envs,
                volumes: [{ volumeName: data.name, containerPath: KEY_PROXY_DATA_DIR }],
                tmpfs: { "/tmp": "16m" },
                stopTimeoutSeconds: DRAIN_SECONDS + 5,
            },
            args.dockerHost,
            { parent: this },
        );
        this.container = container;

        const environment = { DOCKER_HOST: args.dockerHost };
        for (const agent of args.agents) {
            const commands = pulumi.output(agent.network).apply((network) => attachCommands(this.containerName, network, agent.address, ALIASES.keyProxy));
            const attach = new command.local.Command(
                `${name}-attach-${agent.name}`,
                { create: commands.create, delete: commands.delete, environment, triggers: [container.id] },
                { parent: this, dependsOn: [container], deleteBeforeReplace: true },
            );
            const register = `docker exec -i ${this.containerName} ${SERVICE_NODE} ${KEY_PROXY_ENTRY} register`;
            new command.local.Command(
                `${name}-register-${agent.name}`,
                {
                    create: register,
                    update: register,
                    delete: `docker exec ${this.containerName} ${SERVICE_NODE} ${KEY_PROXY_ENTRY} unregister ${agent.name}`,
                    stdin: pulumi.output(agent.credential).apply((credential) => registryEntry(agent, credential)),
                    environment,
                },
                { parent: this, dependsOn: [container, attach] },
            );
        }

        this.registerOutputs({ container: this.containerName });
    }
}
