import { z } from "zod";
import { adminListenSchema, listenSchema } from "../../runtime/admin";
import { AGENT_NAME } from "../../runtime/registry";
import type { IngressAgent, IngressUser } from "./policy";
import { DEFAULT_RULES, ruleSchema } from "./rules";

/** Each user's limits: also what the stack config takes (infra/config.ts). */
export const userLimits = {
    /** Each user's sustained request rate, and the burst above it. */
    ratePerSecond: z.number().positive().default(5),
    burst: z.number().int().positive().default(20),
    /** Requests and WebSocket connections one user may have open at once. */
    maxConcurrentPerUser: z.number().int().positive().default(8),
};

export const ingressConfigSchema = z.strictObject({
    listen: listenSchema.default({ host: "0.0.0.0", port: 8443 }),
    /** The listener's certificate chain and key (PEM). The Ingress serves TLS only. */
    tls: z.strictObject({ certPem: z.string().min(1), keyPem: z.string().min(1) }),
    admin: z.array(adminListenSchema).min(1).default([{ host: "127.0.0.1", port: 9466 }]),
    /** Agents: `<dataDir>/agents`, users: `<dataDir>/users`, the audit stream: `<dataDir>/audit`. */
    dataDir: z.string().default("/var/lib/ingress"),
    rules: z.array(ruleSchema).default(DEFAULT_RULES),
    limits: z
        .strictObject({
            ...userLimits,
            /** Largest chat request body the rules read (other bodies stream through unread). */
            maxChatBodyBytes: z.number().int().positive().default(4 * 1024 * 1024),
            /**
             * Failed sign-ins audited per client address: a bucket of this rate and burst. Past it a failure is still
             * refused and counted, and the next audited one says how many went unwritten (a flood cannot fill the volume).
             */
            auditedAuthFailuresPerSecond: z.number().positive().default(1),
            auditedAuthFailuresBurst: z.number().int().positive().default(20),
            requestHeadTimeoutMs: z.number().int().positive().default(10_000),
            connectTimeoutMs: z.number().int().positive().default(10_000),
        })
        .prefault({}),
});

export type IngressConfig = z.output<typeof ingressConfigSchema>;

const name = z.string().regex(AGENT_NAME);

export const ingressUserSchema: z.ZodType<IngressUser> = z.strictObject({
    name,
    tokenSha256: z.string().regex(/^[0-9a-f]{64}$/),
    agents: z.array(name),
});

export const ingressAgentSchema: z.ZodType<IngressAgent> = z.strictObject({
    name,
    gateway: z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
    gatewayToken: z.string().min(16),
});

/** The variables that carry the listener's certificate and key when INGRESS_CONFIG has no `tls` (the deployment's way). */
export const TLS_ENV = { certPem: "INGRESS_TLS_CERT_PEM", keyPem: "INGRESS_TLS_KEY_PEM" } as const;

/** Reads INGRESS_CONFIG, the certificate and key from their variables if it names none (then removed from the environment). */
export function loadIngressConfig(env: NodeJS.ProcessEnv = process.env): IngressConfig {
    const raw = JSON.parse(env.INGRESS_CONFIG ?? "{}") as Record<string, unknown>;
    const fromEnv = { certPem: env[TLS_ENV.certPem], keyPem: env[TLS_ENV.keyPem] };
    delete env[TLS_ENV.keyPem];
    return ingressConfigSchema.parse({ ...raw, tls: raw.tls ?? fromEnv });
}

export const registryDirs = (config: Pick<IngressConfig, "dataDir">) => ({
    agents: `${config.dataDir}/agents`,
    users: `${config.dataDir}/users`,
    audit: `${config.dataDir}/audit`,
});
