import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { Budget } from "../../contracts/keyProxy";
import { type EgressConfig, type EgressRule, type KeyProxyConfig, enabledProviders } from "../../infra/config";
import { keyEnv } from "../../providers/index";
import { k8sNames, podLabels } from "../../infra/kubernetesTopology";
import { EGRESS_DATA_DIR, EGRESS_ENTRY, KEY_PROXY_DATA_DIR, KEY_PROXY_ENTRY, PORTS } from "../../infra/topology";
import { egressRegistryEntry, egressRuntimeConfig } from "../egressGateway";
import { DRAIN_SECONDS, keyProxyRuntimeConfig, registryEntry } from "../keyProxy";
import { type KubernetesService, type Placement, type ServiceAgent, agentEndpoint, kubernetesService, metadata, portIdentityEntry, registerAgent } from "./sharedService";

export interface KubernetesKeyProxyArgs extends Placement {
    config: KeyProxyConfig;
    /** The real provider keys (Pulumi secrets); only KeyProxy's keys Secret holds them. */
    upstreamKeys: Record<string, pulumi.Input<string>>;
    /** Every agent's port; the Deployment itself names none. */
    agents: ServiceAgent[];
    sizeGi: number;
    storageClassName?: string;
    /** The bearer token the monitoring namespace scrapes with, when there is one. */
    metricsToken?: pulumi.Input<string>;
}

/** What KeyProxy registers of an agent once its credential exists. */
export interface KeyProxyRegistration extends ServiceAgent {
    subnet: string;
    budget: Budget;
    credential: pulumi.Input<string>;
}

/** A shared service with a Service of its own per agent: what the program hands each agent is that Service's address. */
abstract class AgentFacingService extends pulumi.ComponentResource {
    protected readonly endpoints = new Map<string, pulumi.Output<string>>();
    protected abstract readonly service: KubernetesService;

    /** The address an agent is given for this service (its own Service's cluster IP). */
    endpoint(agent: string): pulumi.Output<string> {
        const address = this.endpoints.get(agent);
        if (!address) throw new Error(`${this.service.role} has no endpoint for agent ${agent}`);
        return address;
    }

    get deploymentName(): pulumi.Output<string> {
        return this.service.deployment.metadata.name;
    }
}

/** KeyProxy on Kubernetes: the keys in their own Secret, the ledger on a volume with exactly one writer. */
export class KubernetesKeyProxy extends AgentFacingService {
    protected readonly service: KubernetesService;

    constructor(private readonly resourceName: string, args: KubernetesKeyProxyArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:kubernetes:KeyProxy", resourceName, {}, opts);
        const enabled = enabledProviders(args.config);
        const keyData: Record<string, pulumi.Output<string>> = {};
        for (const { id } of enabled) {
            const key = args.upstreamKeys[id];
            if (key === undefined) throw new Error(`KeyProxy: provider ${id} is enabled but has no key`);
            keyData[keyEnv(id)] = pulumi.secret(key);
        }
        const keys = new k8s.core.v1.Secret(
            `${resourceName}-keys`,
            { metadata: metadata(args, k8sNames.keyProxyKeys, podLabels(args.stack, "key-proxy")), type: "Opaque", stringData: keyData },
            { parent: this },
        );
        this.service = kubernetesService(this, resourceName, {
            ...args,
            role: "key-proxy",
            image: args.config.image,
            resources: args.config.resources,
            entry: KEY_PROXY_ENTRY,
            servicePort: PORTS.keyProxy,
            runtimeConfig: { variable: "KEYPROXY_CONFIG", build: (remoteAdmin) => keyProxyRuntimeConfig(args.config, remoteAdmin) },
            metrics: args.metricsToken === undefined ? undefined : { port: PORTS.keyProxyMetricsTls, bearerToken: args.metricsToken },
            secretEnv: enabled.map(({ id }) => ({ name: keyEnv(id), secret: keys.metadata.name, key: keyEnv(id) })),
            persistentData: { path: KEY_PROXY_DATA_DIR, sizeGi: args.sizeGi, storageClassName: args.storageClassName },
            restartOn: Object.fromEntries(enabled.map((p) => [`key-epoch.${p.id}`, String(p.keyEpoch)])),
            terminationGracePeriodSeconds: DRAIN_SECONDS + 5,
        });
        for (const agent of args.agents) this.endpoints.set(agent.name, agentEndpoint(this, resourceName, this.service, agent));
        this.registerOutputs({ deployment: this.service.deployment.metadata.name });
    }

    /** Registers an agent's credential digest and budget (`${name}-register-${agent}`). */
    register(agent: KeyProxyRegistration): void {
        const entry = pulumi.output(agent.credential).apply((credential) => portIdentityEntry(registryEntry(agent, credential), agent));
        registerAgent(this, this.resourceName, this.service, agent, entry);
    }
}

export interface KubernetesEgressGatewayArgs extends Placement {
    config: EgressConfig;
    agents: (ServiceAgent & { subnet: string; mode: "enforce" | "report"; allow: EgressRule[] })[];
    metricsToken?: pulumi.Input<string>;
    /** The audit stream's volume. */
    auditSizeGi: number;
    storageClassName?: string;
}

/** EgressGateway on Kubernetes: the agents' only way out, and their DNS sink behind one Service on port 53. */
export class KubernetesEgressGateway extends AgentFacingService {
    /** The DNS sink's address: every agent pod's only nameserver. */
    public readonly dnsAddress: pulumi.Output<string>;
    protected readonly service: KubernetesService;

    constructor(name: string, args: KubernetesEgressGatewayArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:kubernetes:EgressGateway", name, {}, opts);
        this.service = kubernetesService(this, name, {
            ...args,
            role: "egress-gateway",
            image: args.config.image,
            resources: args.config.resources,
            entry: EGRESS_ENTRY,
            servicePort: PORTS.egressProxy,
            runtimeConfig: { variable: "EGRESS_CONFIG", build: (remoteAdmin) => egressRuntimeConfig(args.config, remoteAdmin) },
            metrics: args.metricsToken === undefined ? undefined : { port: PORTS.egressMetricsTls, bearerToken: args.metricsToken },
            persistentData: { path: `${EGRESS_DATA_DIR}/audit`, sizeGi: args.auditSizeGi, storageClassName: args.storageClassName },
            // The DNS sink listens on 53 without any capability: this lowers the privileged-port bound in the pod's own network namespace.
            sysctls: { "net.ipv4.ip_unprivileged_port_start": String(PORTS.egressDns) },
        });
        const labels = podLabels(args.stack, "egress-gateway");
        const dns = new k8s.core.v1.Service(
            `${name}-dns`,
            {
                metadata: metadata(args, k8sNames.egressDns, labels),
                spec: {
                    type: "ClusterIP",
                    selector: labels,
                    ports: [
                        { name: "dns-udp", protocol: "UDP", port: PORTS.egressDns, targetPort: PORTS.egressDns },
                        { name: "dns-tcp", protocol: "TCP", port: PORTS.egressDns, targetPort: PORTS.egressDns },
                    ],
                },
            },
            { parent: this },
        );
        this.dnsAddress = dns.spec.clusterIP;
        for (const agent of args.agents) {
            this.endpoints.set(agent.name, agentEndpoint(this, name, this.service, agent));
            registerAgent(this, name, this.service, agent, portIdentityEntry(egressRegistryEntry(agent, args.config), agent));
        }
        this.registerOutputs({ deployment: this.service.deployment.metadata.name, dnsAddress: this.dnsAddress });
    }
}
