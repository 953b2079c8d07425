// What the deployment hands KeyProxy and KeyProxy parses: its runtime config (KEYPROXY_CONFIG), an agent's registry
// entry (`keyproxy register`), the budget shape and the price shape. The components that produce these and the image
// that reads them both import this module, so the type checker and unit tests catch any drift without Docker.
import { z } from "zod";
import { FALLBACK_PRICE, PROVIDER_ID, type Price, providerOfKind } from "../providers/index";
import { adminListenSchema, listenSchema } from "../runtime/admin";
import { auditRotationSchema } from "../runtime/audit";
import { type AgentIdentity, agentEntrySchema as registryEntrySchema } from "../runtime/registry";

export function isTimeZone(name: string): boolean {
    try {
        new Intl.DateTimeFormat("en-CA", { timeZone: name });
        return true;
    } catch {
        return false;
    }
}

const usd = z.number().finite().positive();

/** An agent's spend limits, each optional: a window without a limit is not limited. */
export const budgetSchema = z.strictObject({ dailyUsd: usd.optional(), monthlyUsd: usd.optional(), totalUsd: usd.optional() });
export type Budget = z.output<typeof budgetSchema>;

const perMillion = z.number().min(0).max(10_000);
/** USD per million tokens (providers/types.ts Price). */
export const priceSchema: z.ZodType<Price> = z.strictObject({ input: perMillion, output: perMillion, cacheWrite: perMillion, cacheWrite1h: perMillion, cacheRead: perMillion });

/** What KeyProxy keeps of an agent besides its identity. */
const agentFields = {
    /** sha256 (hex) of the agent's credential: the proxy never holds the credential itself. */
    credentialSha256: z.string().regex(/^[0-9a-f]{64}$/),
    budget: budgetSchema.optional(),
};
export type AgentEntry = AgentIdentity & { credentialSha256: string; budget?: Budget };

/** One agent's registry entry, as the deployment writes it. `ownPorts`: KeyProxy's own listeners (see `ownPorts`). */
export function agentEntrySchema(ownPorts: readonly number[]): z.ZodType<AgentEntry> {
    return registryEntrySchema(ownPorts, agentFields);
}

export const runtimeConfigSchema = z.strictObject({
    listen: listenSchema.default({ host: "0.0.0.0", port: 8080 }),
    /** Metrics and /healthz: addresses agents cannot reach (loopback, the uplink address). */
    admin: z.array(adminListenSchema).min(1).default([{ host: "127.0.0.1", port: 9464 }]),
    /** The providers this proxy fronts, by route prefix: each of a kind in providers/ (its id unless said). */
    upstreams: z.record(
        z.string().regex(PROVIDER_ID),
        z.strictObject({
            kind: z.string().optional(),
            baseUrl: z.string().url(),
            /** Prices of this provider's models, looked up before the shared table. */
            prices: z.record(z.string(), priceSchema).default({}),
        }),
    ).superRefine((upstreams, ctx) => {
        for (const [id, upstream] of Object.entries(upstreams)) {
            if (providerOfKind(upstream.kind ?? id, id) === undefined) ctx.addIssue({ code: "custom", path: [id, "kind"], message: `no provider kind '${upstream.kind ?? id}'` });
        }
    }),
    /** An extra CA to trust besides the system roots (tests, private mirrors): a file, or the PEM itself. */
    extraCaFile: z.string().optional(),
    extraCaPem: z.string().optional(),
    /**
     * Offer HTTP/2 to the upstreams, first (ALPN h2, then http/1.1): concurrent requests share a few TLS connections
     * instead of holding one each. false: HTTP/1.1 only. An upstream that does not speak h2 gets HTTP/1.1 either way.
     */
    upstreamHttp2: z.boolean().default(true),
    registryDir: z.string().default("/var/lib/keyproxy/agents"),
    /** The audit stream's directory (`key-proxy.audit.jsonl` and its segments, runtime/audit.ts). */
    auditDir: z.string().default("/var/lib/keyproxy/audit"),
    /** When the live audit file becomes a segment, and how many segments are kept (docs/audit.md). */
    auditRotation: auditRotationSchema.prefault({}),
    limits: z
        .strictObject({
            maxBodyBytes: z.number().int().positive().default(64 * 1024 * 1024),
            /** Body limit of the free (unmetered) endpoints: token counting, model listings. */
            maxFreeBodyBytes: z.number().int().positive().default(1024 * 1024),
            maxHeaderBytes: z.number().int().positive().default(64 * 1024),
            maxConcurrentPerAgent: z.number().int().positive().default(32),
            /**
             * Connections to each upstream. Over HTTP/1.1 each carries one request at a time, so a request past it waits in
             * a queue, unanswered, until one frees: size it to at least the agents times maxConcurrentPerAgent. Over
             * HTTP/2 each carries up to 100 requests (fewer if the upstream says so).
             */
            maxUpstreamConnections: z.number().int().positive().default(2048),
            /** The upstream timeouts are checked on undici's 0.5 s tick: each fires up to about 0.5 s off its value. */
            connectTimeoutMs: z.number().int().positive().default(10_000),
            /** Time to the upstream's response headers (time to first byte). */
            headersTimeoutMs: z.number().int().positive().default(600_000),
            /** Longest silence between two upstream body chunks. */
            bodyIdleTimeoutMs: z.number().int().positive().default(600_000),
            /**
             * Refusals audited per source (an agent, else the client's address or agent port), each kind its own
             * bucket of this rate and burst. Past it a refusal is still answered, logged and counted, and the next
             * audited one says how many went unwritten (a flood cannot fill the volume).
             */
            auditedRefusalsPerSecond: z.number().positive().default(1),
            auditedRefusalsBurst: z.number().int().positive().default(20),
        })
        .prefault({}),
    drainSeconds: z.number().positive().default(30),
    /** Probes each agent's gateway port for keyproxy_agent_up and restarts; off unless set. */
    agentProbe: z
        .strictObject({ port: z.number().int().min(1).max(65535), intervalMs: z.number().int().min(10).default(5000), timeoutMs: z.number().int().min(10).default(2000) })
        .optional(),
    metering: z
        .strictObject({
            ledgerFile: z.string().default("/var/lib/keyproxy/ledger.log"),
            /** Budgets' days and months start at midnight in this IANA zone. */
            timeZone: z.string().refine(isTimeZone, "must be an IANA time zone such as UTC or Europe/Berlin").default("UTC"),
            /** Output cap written into requests that set none, so every reservation has a bound. */
            defaultMaxOutputTokens: z.number().int().positive().default(32_000),
            /**
             * Budget lease: the slice of an agent's budget written to the ledger at once (fsynced) and then spent in
             * memory, so requests within it write nothing; a crash counts an open lease in full. 0: a lease per request.
             */
            leaseUsd: z.number().nonnegative().default(0.25),
            /** Merged over the built-in list prices (USD per million tokens), by model id prefix. */
            prices: z.record(z.string(), priceSchema).default({}),
            fallbackPrice: priceSchema.default(FALLBACK_PRICE),
        })
        .prefault({}),
});

/** KEYPROXY_CONFIG as the deployment writes it (defaults may be left out). */
export type RuntimeConfigInput = z.input<typeof runtimeConfigSchema>;
export type RuntimeConfig = z.output<typeof runtimeConfigSchema>;

/** The ports KeyProxy listens on itself: no agent may be registered on one. */
export function ownPorts(config: Pick<RuntimeConfig, "listen" | "admin">): number[] {
    return [config.listen.port, ...config.admin.map((a) => a.port)];
}
