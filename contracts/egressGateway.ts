// What the deployment hands EgressGateway and EgressGateway parses: its runtime config (EGRESS_CONFIG) and an agent's
// registry entry (`egress register`). The component that produces them and the image that reads them both import
// this module, so the type checker and unit tests catch any drift without Docker.
import { Resolver } from "node:dns";
import ipaddr from "ipaddr.js";
import { z } from "zod";
import { adminListenSchema, listenSchema } from "../runtime/admin";
import { auditRotationSchema } from "../runtime/audit";
import { type AgentIdentity, agentEntrySchema } from "../runtime/registry";

export interface AllowRule {
    /** Canonical host or `*.suffix` glob. */
    host: string;
    ports: number[];
}

export type EgressAgent = AgentIdentity & {
    mode: "enforce" | "report";
    allow: AllowRule[];
};

/** As Node's resolver reads a server: `ip`, `ip:port` or `[ipv6]:port`. */
function isDnsServer(server: string): boolean {
    try {
        new Resolver().setServers([server]);
        return true;
    } catch {
        return false;
    }
}

export const egressConfigSchema = z.strictObject({
    listen: listenSchema.default({ host: "0.0.0.0", port: 3128 }),
    dns: listenSchema.default({ host: "0.0.0.0", port: 53 }),
    admin: z.array(adminListenSchema).min(1).default([{ host: "127.0.0.1", port: 9465 }]),
    registryDir: z.string().default("/var/lib/egress/agents"),
    /** The audit stream's directory (`egress.audit.jsonl` and its segments, docs/audit.md). */
    auditDir: z.string().default("/var/lib/egress/audit"),
    /** When the live audit file becomes a segment, and how many segments are kept (docs/audit.md). */
    auditRotation: auditRotationSchema.prefault({}),
    /** Exempt from the private-range denial. Off (empty) by default: exists so tests can reach loopback servers. */
    allowRanges: z.array(z.string().refine((cidr) => ipaddr.isValidCIDR(cidr), "must be a CIDR range")).default([]),
    /**
     * DNS servers the gateway asks (`ip` or `ip:port`). Empty by default: those /etc/resolv.conf names, in the
     * container Docker's embedded DNS, which is what answers network aliases.
     */
    resolvers: z.array(z.string().refine(isDnsServer, "must be ip or ip:port")).default([]),
    /** Names answered from this table instead of DNS; the answers are vetted like any other. Empty by default. */
    staticHosts: z.record(z.string(), z.array(z.string()).min(1)).default({}),
    limits: z
        .strictObject({
            /** Bound on each name resolution: a lookup that never answers costs its client a 504, not its connection. */
            resolveTimeoutMs: z.number().int().positive().default(5_000),
            connectTimeoutMs: z.number().int().positive().default(10_000),
            idleTimeoutMs: z.number().int().positive().default(300_000),
            /** Time a client has to send its request head (slow-client protection). */
            requestHeadTimeoutMs: z.number().int().positive().default(10_000),
            maxTunnelsPerAgent: z.number().int().positive().default(64),
            /**
             * Denials and DNS-sink hits audited per agent (per source address for an unknown one), each kind its own
             * bucket of this rate and burst. Past it they are still refused, logged and counted, and the next audited
             * one says how many went unwritten (a flood cannot fill the volume).
             */
            auditedDenialsPerSecond: z.number().positive().default(1),
            auditedDenialsBurst: z.number().int().positive().default(20),
        })
        .prefault({}),
});

export type EgressConfig = z.output<typeof egressConfigSchema>;
/** EGRESS_CONFIG as the deployment writes it (defaults may be left out). */
export type EgressConfigInput = z.input<typeof egressConfigSchema>;

const port = z.number().int().min(1).max(65535);

/** The ports the gateway listens on itself: no agent may be registered on one. */
export function ownPorts(config: Pick<EgressConfig, "listen" | "dns" | "admin">): number[] {
    return [config.listen.port, config.dns.port, ...config.admin.map((a) => a.port)];
}

/** One agent's registry entry, as the deployment writes it. `ownPorts`: the gateway's own listeners (see `ownPorts`). */
export function egressAgentSchema(ownPorts: readonly number[]): z.ZodType<EgressAgent> {
    return agentEntrySchema(ownPorts, {
        mode: z.enum(["enforce", "report"]),
        allow: z.array(z.strictObject({ host: z.string().min(1), ports: z.array(port).min(1) })),
    });
}
