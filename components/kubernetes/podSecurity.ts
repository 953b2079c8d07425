import type * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";
import { isNamespacedSysctl, numericNonRootUser } from "../../infra/securityRules";
import type { ContainerResources } from "../hardening";

type PodSpec = k8s.types.input.core.v1.PodSpec;
type EnvVar = k8s.types.input.core.v1.EnvVar;
type Volume = k8s.types.input.core.v1.Volume;
type VolumeMount = k8s.types.input.core.v1.VolumeMount;

/**
 * The Kubernetes form of invariant 4, the one place for it (components/hardening.ts is the Docker form): read-only
 * root, every capability dropped, no privilege escalation (no-new-privileges), not privileged, the runtime's default
 * seccomp profile, a numeric non-root user. Nothing here is optional.
 */
export const CONTAINER_SECURITY_CONTEXT = {
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ["ALL"] },
    runAsNonRoot: true,
    seccompProfile: { type: "RuntimeDefault" },
} as const;

export interface HardenedPodSpec {
    /** Container name (one container per pod). */
    name: string;
    image: pulumi.Input<string>;
    /** uid:gid, numeric, never root. */
    user: string;
    resources: ContainerResources;
    env?: pulumi.Input<EnvVar>[];
    command?: string[];
    ports?: { name: string; containerPort: number; protocol?: "TCP" | "UDP" }[];
    /** Exec health check, as the Docker backend's healthcheck command (without its "CMD"). */
    probe: { command: string[]; initialDelaySeconds: number; periodSeconds: number };
    /** Persistent or Secret volumes with where they are mounted. */
    volumes?: { volume: pulumi.Input<Volume>; mountPath: string; readOnly: boolean }[];
    /** Writable scratch paths and their size in the Docker form, e.g. { "/tmp": "64m" }: memory-backed emptyDirs. */
    tmpfs?: Record<string, string>;
    /** Only resolver of the pod (the DNS sink); without it the pod gets no cluster DNS either. */
    nameserver?: pulumi.Input<string>;
    runtimeClassName?: string;
    /** Namespaced (net.*) sysctls only. */
    sysctls?: Record<string, string>;
    terminationGracePeriodSeconds?: number;
}

const SIZE = /^(\d+)([kmg])$/;

/** Docker's tmpfs size ("256m") as a Kubernetes quantity ("256Mi"). */
export function quantityOfSize(size: string): string {
    const match = SIZE.exec(size);
    if (!match) throw new Error(`size '${size}' must be a number with k, m or g`);
    return `${match[1]}${match[2].toUpperCase()}i`;
}

/** Pure: a pod spec with the hardening of every pod of this project. */
export function hardenedPodSpec(spec: HardenedPodSpec): PodSpec {
    const user = numericNonRootUser(spec.user);
    if (!user) throw new Error(`pod ${spec.name}: user must be a numeric non-root uid:gid, got '${spec.user}'`);
    for (const name of Object.keys(spec.sysctls ?? {})) {
        if (!isNamespacedSysctl(name)) throw new Error(`pod ${spec.name}: sysctl ${name} is not namespaced (net.* only)`);
    }
    const { uid, gid } = user;
    const scratch = Object.entries(spec.tmpfs ?? {}).map(([path, size], i) => ({
        volume: { name: `scratch-${i}`, emptyDir: { medium: "Memory", sizeLimit: quantityOfSize(size) } },
        mountPath: path,
        readOnly: false,
    }));
    const mounted = [...(spec.volumes ?? []), ...scratch];
    const limits = { memory: `${spec.resources.memoryMb}Mi`, cpu: `${Math.round(spec.resources.cpus * 1000)}m` };
    const probe = { exec: { command: spec.probe.command }, initialDelaySeconds: spec.probe.initialDelaySeconds, periodSeconds: spec.probe.periodSeconds, timeoutSeconds: 5, failureThreshold: 3 };
    return {
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        hostNetwork: false,
        hostPID: false,
        hostIPC: false,
        shareProcessNamespace: false,
        ...(spec.runtimeClassName !== undefined ? { runtimeClassName: spec.runtimeClassName } : {}),
        ...(spec.nameserver !== undefined
            ? { dnsPolicy: "None", dnsConfig: { nameservers: [spec.nameserver], searches: [], options: [{ name: "ndots", value: "1" }] } }
            : {}),
        securityContext: {
            runAsNonRoot: true,
            runAsUser: uid,
            runAsGroup: gid,
            fsGroup: gid,
            fsGroupChangePolicy: "OnRootMismatch",
            seccompProfile: { type: "RuntimeDefault" },
            ...(spec.sysctls ? { sysctls: Object.entries(spec.sysctls).map(([name, value]) => ({ name, value })) } : {}),
        },
        ...(spec.terminationGracePeriodSeconds !== undefined ? { terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds } : {}),
        containers: [
            {
                name: spec.name,
                image: spec.image,
                imagePullPolicy: "IfNotPresent",
                ...(spec.command ? { command: spec.command } : {}),
                env: spec.env ?? [],
                ports: (spec.ports ?? []).map((p) => ({ name: p.name, containerPort: p.containerPort, protocol: p.protocol ?? "TCP" })),
                resources: { limits, requests: limits },
                securityContext: { ...CONTAINER_SECURITY_CONTEXT, runAsUser: uid, runAsGroup: gid, capabilities: { drop: [...CONTAINER_SECURITY_CONTEXT.capabilities.drop] }, seccompProfile: { ...CONTAINER_SECURITY_CONTEXT.seccompProfile } },
                livenessProbe: probe,
                readinessProbe: probe,
                volumeMounts: mounted.map((m): VolumeMount => ({ name: volumeName(m.volume), mountPath: m.mountPath, readOnly: m.readOnly })),
            },
        ],
        volumes: mounted.map((m) => m.volume),
    };
}

function volumeName(volume: pulumi.Input<Volume>): string {
    const name = (volume as Volume).name;
    if (typeof name !== "string") throw new Error("volumes must be declared with a plain name");
    return name;
}

/** Environment entries in the Docker form ("NAME=value") as Kubernetes env vars. */
export function envVars(entries: readonly string[]): EnvVar[] {
    return entries.map((entry) => ({ name: entry.slice(0, entry.indexOf("=")), value: entry.slice(entry.indexOf("=") + 1) }));
}
