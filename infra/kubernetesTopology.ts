// Names, labels and ports of the Kubernetes backend, in one place (the Docker backend's are in topology.ts).
import { PRIVATE_RANGES } from "./subnets";
import { LABELS, PORTS } from "./topology";

/** Object names inside the stack's namespace: one scheme, so operators and tools find things without guessing. */
export const k8sNames = {
    namespace: (stack: string) => `openclaw-${stack}`,
    agent: (agent: string) => `agent-${agent}`,
    agentConfig: (agent: string) => `agent-${agent}-config`,
    /** The per-agent Service in front of a shared service: the agent's own port on it (see agentPort). */
    agentEndpoint: (service: SharedServiceRole, agent: string) => `${service}-${agent}`,
    service: (service: SharedServiceRole) => service,
    serviceConfig: (service: SharedServiceRole) => `${service}-config`,
    /** The Secret each agent's registration is patched into, mounted as the service's registry directory. */
    registry: (service: SharedServiceRole) => `${service}-registry`,
    keyProxyKeys: "key-proxy-keys",
    /** The volume of a service that keeps state (KeyProxy's ledger, EgressGateway's audit stream). */
    serviceData: (service: SharedServiceRole) => `${service}-data`,
    egressDns: "egress-dns",
};

export type SharedServiceRole = "key-proxy" | "egress-gateway";

/** The name of the agents' state volume in their StatefulSet's claim template. */
export const AGENT_STATE_CLAIM = "state";

/** The label every namespace carries for its name (set by the API server); NetworkPolicies select namespaces by it. */
export const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";

/** Pod labels: the Docker backend's label keys, so tools read agents the same way on both backends. */
export function podLabels(stack: string, role: string, agent?: string): Record<string, string> {
    return { [LABELS.stack]: stack, [LABELS.role]: role, ...(agent !== undefined ? { [LABELS.agent]: agent } : {}) };
}

/**
 * The agent's port on KeyProxy and on EgressGateway. On Kubernetes an agent's address is not fixed, so identity
 * comes from the port a connection arrives on: a NetworkPolicy admits only this agent's pod to this port. The
 * number is the agent's dashboardPort: already unique in the stack, chosen by the operator, and stable when
 * other agents come and go.
 */
export function agentPort(agent: { dashboardPort: number }): number {
    return agent.dashboardPort;
}

/** Ports the services listen on themselves, which no agent's port may take. */
export const KUBERNETES_RESERVED_PORTS = [
    PORTS.keyProxy,
    PORTS.keyProxyMetrics,
    PORTS.keyProxyMetricsTls,
    PORTS.egressProxy,
    PORTS.egressDns,
    PORTS.egressMetrics,
    PORTS.egressMetricsTls,
] as const;

/**
 * IPv4 ranges the services may not dial (the cluster's own networks, link-local and cloud metadata among them);
 * the internet is the rest. EgressGateway also refuses them itself; this is the cluster's second line.
 */
export const NON_PUBLIC_IPV4: readonly string[] = [...PRIVATE_RANGES, "169.254.0.0/16"];
/** IPv6 the services may dial: global unicast only. */
export const GLOBAL_UNICAST_IPV6 = "2000::/3";

/** Pod Security Admission: the namespace enforces the `restricted` profile, so the cluster refuses a weaker pod too. */
export const POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
} as const;
