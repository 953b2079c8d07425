import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export function egressMetrics() {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: "egress_" });
    return {
        registry,
        decisions: new Counter({ name: "egress_decisions_total", help: "Egress decisions by agent, decision and reason", labelNames: ["agent", "decision", "reason"], registers: [registry] }),
        activeTunnels: new Gauge({ name: "egress_active_tunnels", help: "Tunnels and plain-HTTP exchanges holding an agent's slot: resolving, dialling or open", labelNames: ["agent"], registers: [registry] }),
        bytes: new Counter({ name: "egress_bytes_total", help: "Bytes relayed, by agent and direction", labelNames: ["agent", "direction"], registers: [registry] }),
        dnsQueries: new Counter({ name: "egress_dns_queries_total", help: "Queries the DNS sink refused, by agent", labelNames: ["agent"], registers: [registry] }),
        auditEvents: new Counter({ name: "egress_audit_events_total", help: "Security events given to the audit stream, by type", labelNames: ["type"], registers: [registry] }),
        auditUnaudited: new Counter({ name: "egress_audit_unaudited_total", help: "Security events left out of the audit stream past an agent's audit budget, by type", labelNames: ["type"], registers: [registry] }),
        auditFailures: new Counter({ name: "egress_audit_write_failures_total", help: "Audit events lost to a failed write", registers: [registry] }),
        registeredAgents: new Gauge({ name: "egress_registered_agents", help: "Agents in the registry", registers: [registry] }),
    };
}

export type EgressMetrics = ReturnType<typeof egressMetrics>;
