// The semantics of Kubernetes NetworkPolicy (networking.k8s.io/v1), small enough to read: which connections the
// declared policies admit. A pod is isolated in a direction as soon as one policy of its namespace selects it with
// that policy type; then only a rule of such a policy admits traffic. A connection needs both ends to admit it.
import ipaddr from "ipaddr.js";

export interface Endpoint {
    /** A pod (namespace and labels), or an address outside the cluster's pods. */
    namespace?: string;
    labels?: Record<string, string>;
    ip?: string;
}

export interface Policy {
    namespace: string;
    spec: any;
}

type Selector = { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] };

export function selects(selector: Selector, labels: Record<string, string>): boolean {
    for (const [key, value] of Object.entries(selector.matchLabels ?? {})) if (labels[key] !== value) return false;
    for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
        const ok =
            operator === "In" ? key in labels && values.includes(labels[key]) :
            operator === "NotIn" ? !(key in labels) || !values.includes(labels[key]) :
            operator === "Exists" ? key in labels :
            operator === "DoesNotExist" ? !(key in labels) :
            false;
        if (!ok) return false;
    }
    return true;
}

function inBlock(ip: string, block: { cidr: string; except?: string[] }): boolean {
    const address = ipaddr.parse(ip);
    const within = (cidr: string) => {
        const [range, bits] = ipaddr.parseCIDR(cidr);
        return range.kind() === address.kind() && address.match(range, bits);
    };
    return within(block.cidr) && !(block.except ?? []).some(within);
}

/** Does a rule's peer list name this endpoint? `policyNamespace` is where podSelector-only peers live. */
function peerMatches(peers: any[] | undefined, endpoint: Endpoint, policyNamespace: string, namespaceLabels: (ns: string) => Record<string, string>): boolean {
    if (peers === undefined || peers.length === 0) return true;
    return peers.some((peer) => {
        if (peer.ipBlock) return endpoint.ip !== undefined && inBlock(endpoint.ip, peer.ipBlock);
        if (endpoint.namespace === undefined) return false;
        const namespaceOk = peer.namespaceSelector ? selects(peer.namespaceSelector, namespaceLabels(endpoint.namespace)) : endpoint.namespace === policyNamespace;
        const podOk = peer.podSelector ? selects(peer.podSelector, endpoint.labels ?? {}) : true;
        return namespaceOk && podOk;
    });
}

const portMatches = (ports: any[] | undefined, port: number, protocol: string) =>
    ports === undefined || ports.length === 0 || ports.some((p) => (p.protocol ?? "TCP") === protocol && (p.port === undefined || p.port === port));

function admits(direction: "Ingress" | "Egress", policies: readonly Policy[], subject: Endpoint, peer: Endpoint, port: number, protocol: string, namespaceLabels: (ns: string) => Record<string, string>): boolean {
    if (subject.namespace === undefined) return true; // not a pod: no NetworkPolicy applies to it
    const applicable = policies.filter((p) => p.namespace === subject.namespace && (p.spec.policyTypes ?? ["Ingress"]).includes(direction) && selects(p.spec.podSelector ?? {}, subject.labels ?? {}));
    if (applicable.length === 0) return true;
    const rulesKey = direction === "Ingress" ? "ingress" : "egress";
    const peersKey = direction === "Ingress" ? "from" : "to";
    return applicable.some((p) => (p.spec[rulesKey] ?? []).some((rule: any) => peerMatches(rule[peersKey], peer, p.namespace, namespaceLabels) && portMatches(rule.ports, port, protocol)));
}

/** Whether `from` may open a connection to `to` on `port`/`protocol` under these policies. */
export function allowed(policies: readonly Policy[], from: Endpoint, to: Endpoint, port: number, protocol: "TCP" | "UDP" = "TCP"): boolean {
    const namespaceLabels = (ns: string) => ({ "kubernetes.io/metadata.name": ns });
    return admits("Egress", policies, from, to, port, protocol, namespaceLabels) && admits("Ingress", policies, to, from, port, protocol, namespaceLabels);
}
