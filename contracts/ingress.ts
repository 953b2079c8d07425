// What the deployment hands the Ingress and the Ingress parses: its runtime config (INGRESS_CONFIG, with the
// certificate and key in the TLS_ENV variables), an agent's registry entry (`ingress register`) and a user's
// (`ingress register-user`: the token's digest only). The component that produces them and the image that reads
// them both import this module, so the type checker and unit tests catch any drift without Docker.
import { createHash } from "node:crypto";
import { z } from "zod";
import { adminListenSchema, listenSchema } from "../runtime/admin";
import { auditRotationSchema } from "../runtime/audit";
import { AGENT_NAME } from "../runtime/registry";

export const RULE_ROLES = ["system", "developer", "user", "assistant", "tool"] as const;
export type RuleRole = (typeof RULE_ROLES)[number];

export const ruleSchema = z.strictObject({
    id: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, "must be lowercase letters, digits, '.', '_' or '-', at most 64"),
    /** An RE2 pattern, matched case-insensitively. */
    pattern: z.string().min(1).max(2000),
    action: z.enum(["strip", "reject"]),
    roles: z.array(z.enum(RULE_ROLES)).min(1).default(["user"]),
});
export type Rule = z.output<typeof ruleSchema>;

/**
 * The default set: the common phrasings of an instruction override and of a forged conversation turn. They stop
 * copy-paste attacks, not a determined author (docs/ingress.md says what regex rules cannot do).
 */
export const DEFAULT_RULES: Rule[] = [
    { id: "ignore-previous-instructions", pattern: String.raw`\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|system)\b[^.\n]{0,20}\b(instructions?|prompts?|rules|directions|messages)\b`, action: "reject", roles: ["user"] },
    { id: "reveal-system-prompt", pattern: String.raw`\b(reveal|print|show|repeat|output|leak)\b[^.\n]{0,30}\b(system|hidden|initial)\s+(prompt|instructions?|message)\b`, action: "reject", roles: ["user"] },
    { id: "role-override", pattern: String.raw`\byou\s+are\s+now\s+(in\s+)?(dan|developer\s+mode|jailbreak(en)?|unrestricted|unfiltered)\b`, action: "reject", roles: ["user"] },
    // A turn marker of a chat template in user text forges a new turn for models that read it: cut it out.
    { id: "chat-template-tokens", pattern: String.raw`<\|(im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\|>|\[/?INST\]|<</?SYS>>`, action: "strip", roles: ["user", "tool"] },
];

/** Each user's limits: also what the stack config takes (infra/config.ts). */
export const userLimits = {
    /** Each user's sustained rate of requests that may cost something (any but GET/HEAD, and WebSockets), and the burst above it. */
    ratePerSecond: z.number().positive().default(5),
    burst: z.number().int().positive().default(20),
    /** Each user's rate of reads (GET/HEAD): a Control UI loads some hundred files at once. */
    readsPerSecond: z.number().positive().default(50),
    readBurst: z.number().int().positive().default(400),
    /** Requests and WebSocket connections one user may have open at once. */
    maxConcurrentPerUser: z.number().int().positive().default(8),
    /** How long a browser sign-in (the session cookie) lasts, at most a week, and how many one user may hold. */
    sessionSeconds: z.number().int().positive().max(7 * 24 * 3600).default(8 * 3600),
    maxSessionsPerUser: z.number().int().positive().default(16),
};

export const ingressConfigSchema = z.strictObject({
    listen: listenSchema.default({ host: "0.0.0.0", port: 8443 }),
    /** The listener's certificate chain and key (PEM). The Ingress serves TLS only. */
    tls: z.strictObject({ certPem: z.string().min(1), keyPem: z.string().min(1) }),
    admin: z.array(adminListenSchema).min(1).default([{ host: "127.0.0.1", port: 9466 }]),
    /** Agents: `<dataDir>/agents`, users: `<dataDir>/users`, the audit stream: `<dataDir>/audit`. */
    dataDir: z.string().default("/var/lib/ingress"),
    /** When the live audit file becomes a segment, and how many segments are kept (docs/audit.md). */
    auditRotation: auditRotationSchema.prefault({}),
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
/** INGRESS_CONFIG as the deployment writes it (defaults may be left out; `tls` travels in the TLS_ENV variables). */
export type IngressConfigInput = z.input<typeof ingressConfigSchema>;

/** A user as registered: only the sha256 of their token is ever stored. */
export interface IngressUser {
    name: string;
    tokenSha256: string;
    /** The agents this user may reach. */
    agents: string[];
}

/**
 * An agent as registered: where its OpenClaw gateway listens on its network. No secret: the gateway trusts the
 * Ingress by its address on that network (OpenClaw's trusted-proxy auth) and takes the user from GATEWAY_IDENTITY.
 */
export interface IngressAgent {
    name: string;
    gateway: { host: string; port: number };
}

/**
 * How the Ingress tells an agent's gateway who is asking (OpenClaw's trusted-proxy auth): the user's name in
 * `userHeader`, the headers the gateway requires beside it, and the operator scopes every request and Control UI
 * session is capped to (`x-openclaw-scopes`): reading and chatting, never admin or pairing. The Ingress removes
 * every client-sent header of these names (and any `x-openclaw-*`) before setting its own.
 */
export const GATEWAY_IDENTITY = {
    userHeader: "x-forwarded-user",
    requiredHeaders: ["x-forwarded-proto", "x-forwarded-host"],
    scopesHeader: "x-openclaw-scopes",
    scopes: ["operator.read", "operator.write"],
} as const;

/** Where an agent's Control UI is served through the Ingress (its gateway's `controlUi.basePath`). */
export const agentBasePath = (agent: string) => `/agents/${agent}`;

/** The browser session cookie: `__Host-` so it is Secure, host-only and for every path, as browsers enforce. */
export const SESSION_COOKIE = "__Host-openclaw-session";

/** A user's token: this prefix, then random letters and digits (generated by the deployment). */
export const USER_TOKEN = { prefix: "oci_", randomChars: 48 } as const;

export function tokenDigest(token: string): string {
    return createHash("sha256").update(token, "utf8").digest("hex");
}

const name = z.string().regex(AGENT_NAME);

export const ingressUserSchema: z.ZodType<IngressUser> = z.strictObject({
    name,
    tokenSha256: z.string().regex(/^[0-9a-f]{64}$/),
    agents: z.array(name),
});

export const ingressAgentSchema: z.ZodType<IngressAgent> = z.strictObject({
    name,
    gateway: z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
});

/** The variables that carry the listener's certificate and key when INGRESS_CONFIG has no `tls` (the deployment's way). */
export const TLS_ENV = { certPem: "INGRESS_TLS_CERT_PEM", keyPem: "INGRESS_TLS_KEY_PEM" } as const;
