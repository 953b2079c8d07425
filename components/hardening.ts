import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { RelaxablePolicy } from "../infra/config";
import { isNamespacedSysctl, numericNonRootUser, publishesOnEveryAddress } from "../infra/securityRules";
import { EXCEPTION_LABELS } from "../infra/topology";

/**
 * The hardening every container of this project carries (invariant 4). Nothing here is optional: a
 * container that needs an exception must say so where it is declared, and the policy pack reports it.
 */
export const CONTAINER_HARDENING = {
    readOnly: true,
    privileged: false,
    capabilities: { drops: ["ALL"] },
    securityOpts: ["no-new-privileges:true"],
    ipcMode: "private",
    restart: "unless-stopped",
    logDriver: "json-file",
    logOpts: { "max-size": "10m", "max-file": "3" },
} as const;

/** Mount options for every tmpfs: scratch space that can hold no executables or device nodes. */
export const TMPFS_OPTIONS = "rw,noexec,nosuid,nodev";

export interface ContainerResources {
    memoryMb: number;
    cpus: number;
    pids: number;
}

export interface NetworkAttachment {
    name: pulumi.Input<string>;
    ipv4Address?: pulumi.Input<string>;
    aliases?: pulumi.Input<string>[];
}

export interface PublishedPort {
    internal: number;
    external: number;
    /** Host address; the stack's publish address, 127.0.0.1 unless the stack opts into another. */
    ip: string;
}

/**
 * The label by which a container declares the host address its ports are published on, when that is not loopback:
 * a stack that publishes beyond loopback says so on the container, where policy and preview see it.
 */
export function publishAddressLabel(ports: readonly PublishedPort[]): Record<string, string> {
    const address = ports.find((port) => port.ip !== "127.0.0.1")?.ip;
    return address ? { [EXCEPTION_LABELS.publishAddress]: address } : {};
}

export interface HardenedContainerSpec {
    /** The Docker container name. */
    containerName: string;
    image: pulumi.Input<string>;
    /** uid:gid; never root. */
    user: string;
    resources: ContainerResources;
    labels: Record<string, pulumi.Input<string>>;
    healthcheck: { tests: string[]; interval?: string; timeout?: string; startPeriod?: string; retries?: number };
    networks: NetworkAttachment[];
    envs?: pulumi.Input<pulumi.Input<string>[]>;
    command?: string[];
    ports?: PublishedPort[];
    /** Named volumes only: this project mounts no host paths. */
    volumes?: { volumeName: pulumi.Input<string>; containerPath: string; readOnly?: boolean }[];
    /** Writable scratch paths and their size, e.g. { "/tmp": "64m" }. */
    tmpfs?: Record<string, string>;
    uploads?: { file: string; content: pulumi.Input<string>; permissions?: string }[];
    dns?: pulumi.Input<string>[];
    hostname?: string;
    stopTimeoutSeconds?: number;
    /** Namespaced (net.*) sysctls only; they change this container's network namespace, not the host. */
    sysctls?: Record<string, string>;
    /** Hardening the image cannot take, each with its reason: relaxed here, labelled, and reported by the policy pack. */
    exceptions?: Partial<Record<RelaxablePolicy, string>>;
    /** An OCI runtime other than the engine's default, e.g. `runsc` (gVisor). */
    runtime?: string;
    /** A one-shot job with no network: the provider waits for it to exit, and it is never restarted. */
    runOnce?: boolean;
}

/** What each relaxable policy's exception changes in the container's inputs. */
const RELAXATIONS = {
    "container-read-only": { readOnly: false },
} as const satisfies Record<RelaxablePolicy, Partial<docker.ContainerArgs>>;

/** Pure: the full docker.Container inputs for a spec, hardening included. */
export function hardenedContainerArgs(spec: HardenedContainerSpec): docker.ContainerArgs {
    if (numericNonRootUser(spec.user) === undefined) {
        throw new Error(`container ${spec.containerName}: user must be a numeric non-root uid:gid, got '${spec.user}'`);
    }
    for (const name of Object.keys(spec.sysctls ?? {})) {
        if (!isNamespacedSysctl(name)) throw new Error(`container ${spec.containerName}: sysctl ${name} is not namespaced (net.* only)`);
    }
    for (const port of spec.ports ?? []) {
        if (publishesOnEveryAddress(port.ip)) {
            throw new Error(`container ${spec.containerName}: port ${port.external} must be published on one address, not all`);
        }
    }
    const exceptions = Object.entries(spec.exceptions ?? {}) as [RelaxablePolicy, string][];
    const labels: Record<string, pulumi.Input<string>> = { ...spec.labels };
    if (exceptions.length > 0) {
        for (const [policy, reason] of exceptions) {
            if (/[;]/.test(reason)) throw new Error(`container ${spec.containerName}: the reason for ${policy} may not contain ';'`);
        }
        labels[EXCEPTION_LABELS.hardeningExceptions] = exceptions.map(([policy, reason]) => `${policy}: ${reason}`).join("; ");
    }
    return {
        name: spec.containerName,
        image: spec.image,
        user: spec.user,
        ...CONTAINER_HARDENING,
        ...Object.assign({}, ...exceptions.map(([policy]) => RELAXATIONS[policy])),
        capabilities: { drops: [...CONTAINER_HARDENING.capabilities.drops] },
        securityOpts: [...CONTAINER_HARDENING.securityOpts],
        logOpts: { ...CONTAINER_HARDENING.logOpts },
        memory: spec.resources.memoryMb,
        memorySwap: spec.resources.memoryMb,
        cpus: String(spec.resources.cpus),
        labels: Object.entries(labels).map(([label, value]) => ({ label, value })),
        healthcheck: {
            tests: spec.healthcheck.tests,
            interval: spec.healthcheck.interval ?? "30s",
            timeout: spec.healthcheck.timeout ?? "5s",
            startPeriod: spec.healthcheck.startPeriod ?? "20s",
            retries: spec.healthcheck.retries ?? 3,
        },
        networksAdvanced: spec.networks.length > 0 ? spec.networks : undefined,
        networkMode: spec.networks.length > 0 ? undefined : "none",
        envs: spec.envs,
        command: spec.command,
        ports: spec.ports?.map((p) => ({ internal: p.internal, external: p.external, ip: p.ip, protocol: "tcp" })),
        volumes: spec.volumes?.map((v) => ({ volumeName: v.volumeName, containerPath: v.containerPath, readOnly: v.readOnly ?? false })),
        tmpfs: Object.fromEntries(Object.entries(spec.tmpfs ?? {}).map(([path, sizeLimit]) => [path, `${TMPFS_OPTIONS},size=${sizeLimit}`])),
        uploads: spec.uploads,
        dns: spec.dns,
        hostname: spec.hostname,
        stopTimeout: spec.stopTimeoutSeconds,
        sysctls: spec.sysctls,
        runtime: spec.runtime,
        ...(spec.runOnce ? { attach: true, mustRun: false, restart: "no" } : { mustRun: true }),
    };
}

/**
 * The pids cgroup limit as a command: the Docker provider has no pids_limit input, and `docker update`
 * sets it on the running container without restarting it. It re-runs whenever the container is replaced.
 */
export function pidsLimitCommand(containerId: pulumi.Input<string>, pids: number, dockerHost: string) {
    return {
        create: pulumi.interpolate`docker update --pids-limit ${pids} ${containerId}`,
        environment: { DOCKER_HOST: dockerHost },
        triggers: [containerId, pids],
    };
}

export interface HardenedContainer {
    container: docker.Container;
    /** None for a one-shot job: the provider starts it and waits for its exit before a command could set the limit. */
    pidsLimit?: command.local.Command;
}

/**
 * Declares a hardened container `${name}-container` and, for a long-running one, its pids limit `${name}-pids-limit`.
 * A one-shot job runs with no network under its memory and CPU limits until it exits, within a second.
 */
export function hardenedContainer(
    name: string,
    spec: HardenedContainerSpec,
    dockerHost: string,
    opts: pulumi.CustomResourceOptions,
): HardenedContainer {
    // Containers have fixed Docker names (tools and commands address them by name): a replacement must delete
    // the old one first, or Docker refuses the new one's name.
    const container = new docker.Container(`${name}-container`, hardenedContainerArgs(spec), { ...opts, deleteBeforeReplace: true });
    if (spec.runOnce) return { container };
    // The command runs locally against `dockerHost`: it takes the container's parent, not its Docker provider.
    const pidsLimit = new command.local.Command(`${name}-pids-limit`, pidsLimitCommand(container.id, spec.resources.pids, dockerHost), {
        parent: opts.parent,
        dependsOn: [container],
    });
    return { container, pidsLimit };
}
