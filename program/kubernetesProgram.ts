import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { KubernetesAgentSandbox } from "../components/kubernetes/agentSandbox";
import { defaultDeny, dnsSinkFromAgents, monitoringScrape, servicesEgress } from "../components/kubernetes/networkPolicies";
import { KubernetesEgressGateway, KubernetesKeyProxy } from "../components/kubernetes/services";
import { type StackConfig, enabledProviders } from "../infra/config";
import { POD_SECURITY_LABELS, k8sNames } from "../infra/kubernetesTopology";
import { LABELS, PORTS } from "../infra/topology";

export interface KubernetesStackOutputs {
    namespace: pulumi.Output<string>;
    agents: Record<string, { statefulSet: pulumi.Output<string>; dashboardUrl: string }>;
    keyProxy: { deployment: pulumi.Output<string> };
    egressGateway: { deployment: pulumi.Output<string> };
    /** The bearer token the monitoring namespace's Prometheus presents, when the stack has one. */
    metricsToken?: pulumi.Output<string>;
}

/** The real provider keys of the enabled providers, as Pulumi secrets. */
export function upstreamKeysOf(config: StackConfig): Record<string, pulumi.Output<string>> {
    return Object.fromEntries(Object.entries(config.providerKeys).map(([id, key]) => [id, pulumi.secret(key)]));
}

/**
 * The stack on Kubernetes (docs/kubernetes.md): a namespace that enforces the restricted Pod Security profile and
 * denies all traffic by default, KeyProxy and EgressGateway as Deployments, each agent as a StatefulSet, and the
 * NetworkPolicies that open exactly the paths the Docker backend's networks allow.
 */
export function defineKubernetesStack(config: StackConfig, stack: string): KubernetesStackOutputs {
    const k = config.kubernetes;
    const cluster = new k8s.Provider("cluster", { ...(k.context ? { context: k.context } : {}), enableServerSideApply: true });
    const namespace = new k8s.core.v1.Namespace(
        "namespace",
        { metadata: { name: k.namespace ?? k8sNames.namespace(stack), labels: { [LABELS.stack]: stack, ...POD_SECURITY_LABELS } } },
        { provider: cluster },
    );
    const inCluster = { provider: cluster, dependsOn: [namespace] };
    const placement = { stack, namespace: namespace.metadata.name };
    const stackLabels = { [LABELS.stack]: stack };
    const policy = (name: string, spec: k8s.types.input.networking.v1.NetworkPolicySpec) =>
        new k8s.networking.v1.NetworkPolicy(name, { metadata: { name, namespace: placement.namespace, labels: stackLabels }, spec }, inCluster);

    policy("default-deny", defaultDeny());
    policy("egress-dns-from-agents", dnsSinkFromAgents(stack));
    policy("services-egress", servicesEgress(stack, k.clusterDns, config.egress.allowPrivateRanges));
    const metricsToken = k.monitoringNamespace
        ? pulumi.secret(new random.RandomPassword("metrics-token", { length: 48, special: false }).result)
        : undefined;
    if (k.monitoringNamespace) policy("monitoring-scrape", monitoringScrape(stack, k.monitoringNamespace));

    const egressGateway = new KubernetesEgressGateway(
        "egress-gateway",
        {
            ...placement,
            config: config.egress,
            metricsToken,
            auditSizeGi: k.egressAuditStorageGi,
            storageClassName: k.storageClassName,
            agents: config.agents.map((agent) => ({ ...agent, mode: agent.egress.mode, allow: agent.egress.allow })),
        },
        inCluster,
    );
    const keyProxy = new KubernetesKeyProxy(
        "key-proxy",
        {
            ...placement,
            config: config.keyProxy,
            upstreamKeys: upstreamKeysOf(config),
            agents: config.agents,
            sizeGi: k.keyProxyStorageGi,
            storageClassName: k.storageClassName,
            metricsToken,
        },
        inCluster,
    );

    const agents: KubernetesStackOutputs["agents"] = {};
    for (const agent of config.agents) {
        const sandbox = new KubernetesAgentSandbox(
            `agent-${agent.name}`,
            {
                ...placement,
                agent,
                providers: enabledProviders(config.keyProxy),
                keyProxy: { address: keyProxy.endpoint(agent.name), port: PORTS.keyProxy },
                egressGateway: { address: egressGateway.endpoint(agent.name), port: PORTS.egressProxy },
                dnsServer: egressGateway.dnsAddress,
                runtimeClassName: agent.runtime ?? k.runtimeClassName,
                storageGi: k.agentStorageGi,
                storageClassName: k.storageClassName,
            },
            inCluster,
        );
        keyProxy.register({ ...agent, credential: sandbox.credential });
        agents[agent.name] = { statefulSet: sandbox.statefulSet.metadata.name, dashboardUrl: sandbox.dashboardUrl };
    }

    return {
        namespace: namespace.metadata.name,
        agents,
        keyProxy: { deployment: keyProxy.deploymentName },
        egressGateway: { deployment: egressGateway.deploymentName },
        ...(metricsToken ? { metricsToken } : {}),
    };
}
