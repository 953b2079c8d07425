import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { type SharedServiceRole, agentPort, k8sNames, podLabels } from "../../infra/kubernetesTopology";
import { SERVICE_NODE, SERVICE_USER, envEntries, serviceProcessEnv } from "../../infra/topology";
import type { Listen } from "../../runtime/admin";
import type { ContainerResources } from "../hardening";
import { serviceFromAgent } from "./networkPolicies";
import { envVars, hardenedPodSpec } from "./podSecurity";

/** Where a resource lives: the stack's namespace, through the cluster's provider. */
export interface Placement {
    stack: string;
    namespace: pulumi.Input<string>;
}

/** An agent as a shared service sees it on Kubernetes: its name, and its port (its identity there). */
export interface ServiceAgent {
    name: string;
    dashboardPort: number;
}

export interface KubernetesServiceSpec extends Placement {
    role: SharedServiceRole;
    image: string;
    resources: ContainerResources;
    entry: string;
    /** The port agents reach through their per-agent Services (the container listens on each agent's port instead). */
    servicePort: number;
    /** The service's config variable and its runtime config, built with the metrics listener when the stack is monitored. */
    runtimeConfig: { variable: string; build: (remoteAdmin?: Listen) => { registryDir: string } };
    /** The metrics listener for the monitoring namespace, when there is one. */
    metrics?: { port: number; bearerToken: pulumi.Input<string> };
    /** Variables taken from Secrets (KeyProxy's keys). */
    secretEnv?: { name: string; secret: pulumi.Input<string>; key: string }[];
    /** A persistent volume at this path (KeyProxy's ledger, EgressGateway's audit stream); its single writer makes the Deployment Recreate. */
    persistentData?: { path: string; sizeGi: number; storageClassName?: string };
    /** Changes that must restart the pod although its spec does not show them (key epochs). */
    restartOn?: Record<string, string>;
    sysctls?: Record<string, string>;
    terminationGracePeriodSeconds?: number;
}

export interface KubernetesService {
    role: SharedServiceRole;
    deployment: k8s.apps.v1.Deployment;
    registry: k8s.core.v1.Secret;
    placement: Placement;
    servicePort: number;
}

const REGISTRY_FILE_MODE = 0o440;
const opts = (parent: pulumi.Resource, dependsOn?: pulumi.Input<pulumi.Resource>[]) => ({ parent, ...(dependsOn ? { dependsOn } : {}) });
export const metadata = (placement: Placement, name: string, labels: Record<string, string>) => ({ name, namespace: placement.namespace, labels });

/**
 * A shared service (KeyProxy, EgressGateway) on Kubernetes: one hardened pod in a Deployment, its config in a
 * Secret, and its registry: a Secret every agent's registration is patched into, mounted read-only where the
 * service reloads it. The Deployment names no agent, so agents coming, going or rotating never restart it.
 */
export function kubernetesService(parent: pulumi.Resource, name: string, spec: KubernetesServiceSpec): KubernetesService {
    const labels = podLabels(spec.stack, spec.role);
    const remoteAdmin = spec.metrics && pulumi.output(spec.metrics.bearerToken).apply((bearerToken) => ({ host: "0.0.0.0", port: spec.metrics!.port, bearerToken }));
    const runtimeConfig = pulumi.output(remoteAdmin).apply((admin) => spec.runtimeConfig.build(admin));
    const configJson = runtimeConfig.apply((config) => JSON.stringify(config));
    const config = new k8s.core.v1.Secret(
        `${name}-config`,
        { metadata: metadata(spec, k8sNames.serviceConfig(spec.role), labels), type: "Opaque", stringData: { config: pulumi.secret(configJson) } },
        opts(parent),
    );
    const registry = new k8s.core.v1.Secret(`${name}-registry`, { metadata: metadata(spec, k8sNames.registry(spec.role), labels), type: "Opaque", data: {} }, opts(parent));
    const data =
        spec.persistentData &&
        new k8s.core.v1.PersistentVolumeClaim(
            `${name}-data`,
            {
                metadata: metadata(spec, k8sNames.serviceData(spec.role), labels),
                spec: {
                    accessModes: ["ReadWriteOnce"],
                    resources: { requests: { storage: `${spec.persistentData.sizeGi}Gi` } },
                    ...(spec.persistentData.storageClassName ? { storageClassName: spec.persistentData.storageClassName } : {}),
                },
            },
            opts(parent),
        );

    // The pod reads its config from env; a changed config (or key epoch) must restart it, so their digest is on the template.
    const restartDigest = pulumi.all([configJson, spec.restartOn ?? {}]).apply(([json, extra]) => createHash("sha256").update(JSON.stringify([json, extra])).digest("hex"));
    const podSpec = pulumi.all([runtimeConfig]).apply(([built]) =>
        hardenedPodSpec({
            name: spec.role,
            image: spec.image,
            user: SERVICE_USER,
            resources: spec.resources,
            env: [
                ...envVars(envEntries(serviceProcessEnv(spec.resources.memoryMb))),
                { name: spec.runtimeConfig.variable, valueFrom: { secretKeyRef: { name: k8sNames.serviceConfig(spec.role), key: "config" } } },
                ...(spec.secretEnv ?? []).map((v) => ({ name: v.name, valueFrom: { secretKeyRef: { name: v.secret, key: v.key } } })),
            ],
            ports: spec.metrics ? [{ name: "metrics", containerPort: spec.metrics.port }] : [],
            probe: { command: [SERVICE_NODE, spec.entry, "healthcheck"], initialDelaySeconds: 10, periodSeconds: 15 },
            volumes: [
                ...(data ? [{ volume: { name: "data", persistentVolumeClaim: { claimName: k8sNames.serviceData(spec.role) } }, mountPath: spec.persistentData!.path, readOnly: false }] : []),
                { volume: { name: "registry", secret: { secretName: k8sNames.registry(spec.role), defaultMode: REGISTRY_FILE_MODE } }, mountPath: built.registryDir, readOnly: true },
            ],
            tmpfs: { "/tmp": "16m" },
            sysctls: spec.sysctls,
            terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds,
        }),
    );
    const deployment = new k8s.apps.v1.Deployment(
        name,
        {
            metadata: metadata(spec, k8sNames.service(spec.role), labels),
            spec: {
                // Never two pods at once: KeyProxy's ledger has exactly one writer, and each agent's limits (budget,
                // concurrent requests, tunnels) are counted in one process.
                replicas: 1,
                strategy: { type: "Recreate" },
                selector: { matchLabels: labels },
                template: { metadata: { labels, annotations: { "openclaw.restart-digest": restartDigest } }, spec: podSpec },
            },
        },
        opts(parent, [config, registry, ...(data ? [data] : [])]),
    );
    return { role: spec.role, deployment, registry, placement: { stack: spec.stack, namespace: spec.namespace }, servicePort: spec.servicePort };
}

/**
 * An agent's way to a shared service: a Service of its own (`${name}-${agent}`) that maps the service's usual port
 * to the agent's port on the service's pod, and the NetworkPolicy that admits only that agent's pod to that port.
 * Returns the address the agent is given (the Service's cluster IP: agents resolve no names).
 */
export function agentEndpoint(parent: pulumi.Resource, name: string, service: KubernetesService, agent: ServiceAgent): pulumi.Output<string> {
    const { placement, role } = service;
    const port = agentPort(agent);
    const labels = podLabels(placement.stack, role, agent.name);
    const endpoint = new k8s.core.v1.Service(
        `${name}-${agent.name}`,
        {
            metadata: metadata(placement, k8sNames.agentEndpoint(role, agent.name), labels),
            spec: { type: "ClusterIP", selector: podLabels(placement.stack, role), ports: [{ name: "agent", protocol: "TCP", port: service.servicePort, targetPort: port }] },
        },
        opts(parent),
    );
    new k8s.networking.v1.NetworkPolicy(
        `${name}-from-${agent.name}`,
        { metadata: metadata(placement, `${role}-from-${agent.name}`, labels), spec: serviceFromAgent(placement.stack, role, agent.name, port) },
        opts(parent),
    );
    return endpoint.spec.clusterIP;
}

/**
 * Pure: an agent's registry entry for Kubernetes: the Docker entry with its network identity (the subnet) replaced
 * by its port. Services that predate port identity reject such an entry (their schema is strict), so they refuse
 * the agent: fail closed (docs/kubernetes.md, "Identity").
 */
export function portIdentityEntry(dockerEntry: string, agent: ServiceAgent): string {
    const { subnet: _subnet, ...rest } = JSON.parse(dockerEntry) as Record<string, unknown>;
    return JSON.stringify({ ...rest, port: agentPort(agent) });
}

/** Registers one agent with a shared service: its entry, patched into the service's registry Secret as `<agent>.json`. */
export function registerAgent(parent: pulumi.Resource, name: string, service: KubernetesService, agent: ServiceAgent, entry: pulumi.Input<string>): k8s.core.v1.SecretPatch {
    const { placement, role } = service;
    return new k8s.core.v1.SecretPatch(
        `${name}-register-${agent.name}`,
        {
            metadata: { name: k8sNames.registry(role), namespace: placement.namespace },
            data: { [`${agent.name}.json`]: pulumi.secret(pulumi.output(entry).apply((json) => Buffer.from(json, "utf8").toString("base64"))) },
        },
        opts(parent, [service.registry]),
    );
}
