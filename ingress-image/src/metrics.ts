import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export function ingressMetrics() {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: "ingress_" });
    return {
        registry,
        requests: new Counter({ name: "ingress_requests_total", help: "Requests and upgrades let through, by user, agent and status class", labelNames: ["user", "agent", "status"], registers: [registry] }),
        refusals: new Counter({ name: "ingress_refusals_total", help: "Requests the Ingress answered itself, by reason", labelNames: ["reason"], registers: [registry] }),
        ruleHits: new Counter({ name: "ingress_rule_hits_total", help: "Prompt-injection rule hits, by rule and action", labelNames: ["rule", "action"], registers: [registry] }),
        active: new Gauge({ name: "ingress_active", help: "Requests and WebSocket connections open, by user", labelNames: ["user"], registers: [registry] }),
        auditFailures: new Counter({ name: "ingress_audit_write_failures_total", help: "Audit events lost to a failed write", registers: [registry] }),
        registeredUsers: new Gauge({ name: "ingress_registered_users", help: "Users in the registry", registers: [registry] }),
        registeredAgents: new Gauge({ name: "ingress_registered_agents", help: "Agents in the registry", registers: [registry] }),
    };
}

export type IngressMetrics = ReturnType<typeof ingressMetrics>;
