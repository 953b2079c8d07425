// Invariant 2 on Kubernetes, as pure NetworkPolicy specs: the namespace denies everything, and each rule below opens
// exactly one path. Identity is the pod's labels (set by this program; agents have no API access to change them)
// and, at KeyProxy and EgressGateway, the agent's own port.
import type * as k8s from "@pulumi/kubernetes";
import { LABELS, PORTS } from "../../infra/topology";
import { GLOBAL_UNICAST_IPV6, NAMESPACE_NAME_LABEL, NON_PUBLIC_IPV4, type SharedServiceRole, podLabels } from "../../infra/kubernetesTopology";

type NetworkPolicySpec = k8s.types.input.networking.v1.NetworkPolicySpec;
type PolicyPort = { protocol: "TCP" | "UDP"; port: number };

const tcp = (port: number): PolicyPort => ({ protocol: "TCP", port });
const DNS_PORTS: PolicyPort[] = [{ protocol: "UDP", port: PORTS.egressDns }, tcp(PORTS.egressDns)];
const SERVICE_ROLES: SharedServiceRole[] = ["key-proxy", "egress-gateway"];

const servicePods = (stack: string, role: SharedServiceRole) => ({ matchLabels: podLabels(stack, role) });
const agentPods = (stack: string, agent?: string) => ({ matchLabels: podLabels(stack, "agent", agent) });
const bothServices = (stack: string) => ({
    matchLabels: { [LABELS.stack]: stack },
    matchExpressions: [{ key: LABELS.role, operator: "In", values: [...SERVICE_ROLES] }],
});

/** Every pod of the namespace: no ingress, no egress, unless another policy opens a path. */
export function defaultDeny(): NetworkPolicySpec {
    return { podSelector: {}, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] };
}

/**
 * One agent's pod: nothing comes in (the dashboard is reached through the API server's port-forward, which no
 * NetworkPolicy sees), and it may go out only to its own port on KeyProxy and EgressGateway, and to the DNS sink.
 */
export function agentPolicy(stack: string, agent: string, port: number): NetworkPolicySpec {
    return {
        podSelector: agentPods(stack, agent),
        policyTypes: ["Ingress", "Egress"],
        ingress: [],
        egress: [
            { to: [{ podSelector: servicePods(stack, "key-proxy") }], ports: [tcp(port)] },
            { to: [{ podSelector: servicePods(stack, "egress-gateway") }], ports: [tcp(port), ...DNS_PORTS] },
        ],
    };
}

/** A shared service admits one agent's pod, on that agent's port only: the port is the agent's identity there. */
export function serviceFromAgent(stack: string, role: SharedServiceRole, agent: string, port: number): NetworkPolicySpec {
    return {
        podSelector: servicePods(stack, role),
        policyTypes: ["Ingress"],
        ingress: [{ from: [{ podSelector: agentPods(stack, agent) }], ports: [tcp(port)] }],
    };
}

/** The DNS sink answers every agent of the stack (it refuses every name; it only logs who asked). */
export function dnsSinkFromAgents(stack: string): NetworkPolicySpec {
    return { podSelector: servicePods(stack, "egress-gateway"), policyTypes: ["Ingress"], ingress: [{ from: [{ podSelector: agentPods(stack) }], ports: DNS_PORTS }] };
}

/**
 * KeyProxy and EgressGateway go out to the internet (public addresses only) and ask the cluster DNS for upstream
 * names; `allowRanges` (EgressGateway's test stand-ins, empty by default) adds private ranges.
 */
export function servicesEgress(stack: string, clusterDns: { namespace: string; podLabels: Record<string, string> }, allowRanges: readonly string[]): NetworkPolicySpec {
    return {
        podSelector: bothServices(stack),
        policyTypes: ["Egress"],
        egress: [
            { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: [...NON_PUBLIC_IPV4] } }, { ipBlock: { cidr: GLOBAL_UNICAST_IPV6 } }, ...allowRanges.map((cidr) => ({ ipBlock: { cidr } }))] },
            { to: [{ namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: clusterDns.namespace } }, podSelector: { matchLabels: clusterDns.podLabels } }], ports: DNS_PORTS },
        ],
    };
}

/** Pods of the monitoring namespace, and nothing else, scrape the services' metrics listeners. */
export function monitoringScrape(stack: string, namespace: string): NetworkPolicySpec {
    return {
        podSelector: bothServices(stack),
        policyTypes: ["Ingress"],
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: namespace } } }], ports: [tcp(PORTS.keyProxyMetricsTls), tcp(PORTS.egressMetricsTls)] }],
    };
}
