import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { LABELS, SERVICE_NODE, SERVICE_USER, envEntries, serviceProcessEnv } from "../infra/topology";
import type { Listen } from "../runtime/admin";
import { type ContainerResources, type PublishedPort, hardenedContainer, publishAddressLabel } from "./hardening";

/**
 * The metrics endpoint the monitoring host scrapes across the internet: TLS with the program's own CA, a bearer
 * token, bound inside the container to its uplink address only (agent networks never see it), and published on
 * the agents' host at an address the stack opted into.
 */
export interface RemoteMetrics {
    publishAddress: string;
    hostPort: number;
    certPem: pulumi.Input<string>;
    keyPem: pulumi.Input<string>;
    bearerToken: pulumi.Input<string>;
}

/** A shared service (KeyProxy, EgressGateway, the Ingress) that every agent network gets attached to. */
export interface SharedService {
    /** Stable Docker name of the service's container. */
    containerName: string;
    container: docker.Container;
    /** The service's command line inside its container, e.g. ["/nodejs/bin/node", "/app/keyproxy.cjs"]. */
    cli: string[];
    alias: string;
    dockerHost: string;
}

export interface SharedServiceSpec {
    stack: string;
    role: string;
    containerName: string;
    volumeName: string;
    /** Where the named volume (the live registry) is mounted. */
    dataDir: string;
    /** The bundled entry point, e.g. /app/keyproxy.cjs. */
    entry: string;
    image: string;
    resources: ContainerResources;
    uplinkNetwork: pulumi.Input<string>;
    /** The service's fixed address on the uplink. */
    uplinkAddress: string;
    dockerHost: string;
    alias: string;
    /** The service's config variable, built with the remote admin listener when the stack is monitored. */
    runtimeConfig: { variable: string; build: (remoteAdmin?: Listen) => object };
    /** Environment besides the config (KeyProxy's keys). */
    envs?: pulumi.Input<pulumi.Input<string>[]>;
    /** The container port of the metrics endpoint for the monitoring host. */
    metricsPort: number;
    remoteMetrics?: RemoteMetrics;
    /** Ports the service itself serves on the host (the Ingress's listener). */
    published?: PublishedPort[];
    labels?: Record<string, string>;
    stopTimeoutSeconds?: number;
    sysctls?: Record<string, string>;
}

/**
 * A shared service's volume (`${name}-data`) and hardened container: on the uplink only, healthy by its own
 * `healthcheck` subcommand, its registry on the named volume.
 */
export function sharedServiceContainer(parent: pulumi.Resource, name: string, spec: SharedServiceSpec): SharedService {
    const data = new docker.Volume(`${name}-data`, { name: spec.volumeName, labels: [{ label: LABELS.stack, value: spec.stack }] }, { parent });
    const published: PublishedPort[] = [
        ...(spec.published ?? []),
        ...(spec.remoteMetrics ? [{ internal: spec.metricsPort, external: spec.remoteMetrics.hostPort, ip: spec.remoteMetrics.publishAddress }] : []),
    ];
    const config = serviceConfigEnv(spec.runtimeConfig.variable, spec.runtimeConfig.build, { host: spec.uplinkAddress, port: spec.metricsPort }, spec.remoteMetrics);
    const { container } = hardenedContainer(
        name,
        {
            containerName: spec.containerName,
            image: spec.image,
            user: SERVICE_USER,
            resources: spec.resources,
            labels: { [LABELS.stack]: spec.stack, [LABELS.role]: spec.role, ...publishAddressLabel(published), ...spec.labels },
            healthcheck: { tests: ["CMD", SERVICE_NODE, spec.entry, "healthcheck"], interval: "15s", startPeriod: "10s" },
            networks: [{ name: spec.uplinkNetwork, ipv4Address: spec.uplinkAddress }],
            ports: published.length > 0 ? published : undefined,
            envs: pulumi.all([config, pulumi.output(spec.envs ?? [])]).apply(([configEnv, envs]) => [...envEntries(serviceProcessEnv(spec.resources.memoryMb)), configEnv, ...envs]),
            volumes: [{ volumeName: data.name, containerPath: spec.dataDir }],
            tmpfs: { "/tmp": "16m" },
            stopTimeoutSeconds: spec.stopTimeoutSeconds,
            sysctls: spec.sysctls,
        },
        spec.dockerHost,
        { parent },
    );
    return { containerName: spec.containerName, container, cli: [SERVICE_NODE, spec.entry], alias: spec.alias, dockerHost: spec.dockerHost };
}

/**
 * A service's config variable, built with its remote admin listener when it is monitored (then secret: it
 * carries the endpoint's private key and token).
 */
function serviceConfigEnv(
    variable: string,
    build: (remoteAdmin?: Listen) => object,
    listen: { host: string; port: number },
    remote: RemoteMetrics | undefined,
): pulumi.Output<string> {
    if (!remote) return pulumi.output(`${variable}=${JSON.stringify(build())}`);
    return pulumi.secret(
        pulumi
            .all([remote.certPem, remote.keyPem, remote.bearerToken])
            .apply(([certPem, keyPem, bearerToken]) => `${variable}=${JSON.stringify(build({ ...listen, tls: { certPem, keyPem }, bearerToken }))}`),
    );
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
 * Connects a running shared service to one agent: attaches it to the agent's network at its fixed address
 * (`${name}-attach-${agent}`), and registers the agent in the service's live registry (`${name}-register-${agent}`).
 * pulumi-docker replaces a container whenever its networksAdvanced, env or uploads change (pulumi-docker#242);
 * doing both with commands leaves the service's container untouched when agents come, go or rotate.
 */
export function connectAgent(
    parent: pulumi.Resource,
    name: string,
    service: SharedService,
    agent: { name: string; network: pulumi.Input<string>; address: string },
    registration: pulumi.Input<string>,
): command.local.Command {
    const environment = { DOCKER_HOST: service.dockerHost };
    const commands = pulumi.output(agent.network).apply((network) => attachCommands(service.containerName, network, agent.address, service.alias));
    const attach = new command.local.Command(
        `${name}-attach-${agent.name}`,
        { create: commands.create, delete: commands.delete, environment, triggers: [service.container.id] },
        { parent, dependsOn: [service.container], deleteBeforeReplace: true },
    );
    return registryCommand(parent, `${name}-register-${agent.name}`, service, { register: "register", unregister: `unregister ${agent.name}` }, registration, [attach]);
}

/**
 * Writes one entry into a running service's live registry (`register` subcommand, the entry on stdin) and removes it
 * again when the resource goes (`unregister` subcommand).
 */
export function registryCommand(
    parent: pulumi.Resource,
    name: string,
    service: SharedService,
    subcommands: { register: string; unregister: string },
    entry: pulumi.Input<string>,
    dependsOn: pulumi.Resource[] = [],
): command.local.Command {
    const cli = [service.containerName, ...service.cli].join(" ");
    return new command.local.Command(
        name,
        {
            create: `docker exec -i ${cli} ${subcommands.register}`,
            update: `docker exec -i ${cli} ${subcommands.register}`,
            delete: `docker exec ${cli} ${subcommands.unregister}`,
            stdin: entry,
            environment: { DOCKER_HOST: service.dockerHost },
        },
        { parent, dependsOn: [service.container, ...dependsOn] },
    );
}
