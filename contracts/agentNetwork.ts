// The fixed layout of one agent's network, which the deployment builds and the services rely on (KeyProxy probes
// the agent at its address). Docker's IPAM keeps the first host address as the gateway even when the bridge
// carries no address (inhibit_ipv4), so ours start after it.
import ipaddr from "ipaddr.js";

export interface AgentNetworkAddresses {
    subnet: string;
    gateway: string;
    keyProxy: string;
    egressGateway: string;
    agent: string;
    /** The Ingress, which reaches the agent's gateway from here. */
    ingress: string;
}

export const MIN_AGENT_PREFIX = 24;
export const MAX_AGENT_PREFIX = 29;

export function agentNetworkAddresses(subnet: string): AgentNetworkAddresses {
    const [address, prefix] = ipaddr.IPv4.parseCIDR(subnet);
    if (prefix < MIN_AGENT_PREFIX || prefix > MAX_AGENT_PREFIX) {
        throw new Error(`agent subnet ${subnet} must be between /${MIN_AGENT_PREFIX} and /${MAX_AGENT_PREFIX}`);
    }
    const base = address.toByteArray().reduce((value, octet) => value * 256 + octet, 0);
    if (base % 2 ** (32 - prefix) !== 0) throw new Error(`agent subnet ${subnet} has host bits set`);
    const host = (offset: number) => ipaddr.fromByteArray([24, 16, 8, 0].map((shift) => Math.floor((base + offset) / 2 ** shift) % 256)).toString();
    return { subnet, gateway: host(1), keyProxy: host(2), egressGateway: host(3), agent: host(4), ingress: host(5) };
}
