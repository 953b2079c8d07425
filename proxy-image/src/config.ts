import { readFileSync } from "node:fs";
import { z } from "zod";
import { adminListenSchema, listenSchema } from "../../runtime/admin";
import { isTimeZone } from "./budget";
import { type AgentEntry, PROVIDERS, type Provider } from "./policy";
import { DEFAULT_FALLBACK_PRICE, DEFAULT_PRICES } from "./pricing";
import { agentIdentity } from "../../runtime/registry";

/** One agent's registry entry, as the deployment writes it. */
export const agentEntrySchema: z.ZodType<AgentEntry> = z.strictObject({
    ...agentIdentity,
    credentialSha256: z.string().regex(/^[0-9a-f]{64}$/),
    budget: z
        .strictObject({ dailyUsd: z.number().positive().optional(), monthlyUsd: z.number().positive().optional(), totalUsd: z.number().positive().optional() })
        .optional(),
});

const perMillion = z.number().min(0).max(10_000);
export const priceSchema = z.strictObject({ input: perMillion, output: perMillion, cacheWrite: perMillion, cacheWrite1h: perMillion, cacheRead: perMillion });


export const runtimeConfigSchema = z.strictObject({
    listen: listenSchema.default({ host: "0.0.0.0", port: 8080 }),
    /** Metrics and /healthz: addresses agents cannot reach (loopback, the uplink address). */
    admin: z.array(adminListenSchema).min(1).default([{ host: "127.0.0.1", port: 9464 }]),
    upstreams: z.strictObject({
        anthropic: z.strictObject({ baseUrl: z.string().url() }).optional(),
        openai: z.strictObject({ baseUrl: z.string().url() }).optional(),
    }),
    /** An extra CA to trust besides the system roots (tests, private mirrors): a file, or the PEM itself. */
    extraCaFile: z.string().optional(),
    extraCaPem: z.string().optional(),
    registryDir: z.string().default("/var/lib/keyproxy/agents"),
    limits: z
        .strictObject({
            maxBodyBytes: z.number().int().positive().default(64 * 1024 * 1024),
            /** Body limit of the free (unmetered) endpoints: token counting, model listings. */
            maxFreeBodyBytes: z.number().int().positive().default(1024 * 1024),
            maxHeaderBytes: z.number().int().positive().default(64 * 1024),
            maxConcurrentPerAgent: z.number().int().positive().default(32),
            /**
             * Connections to each upstream (HTTP/1.1: one request each). A request past it waits in a queue, unanswered,
             * until one frees: size it to at least the agents times maxConcurrentPerAgent.
             */
            maxUpstreamConnections: z.number().int().positive().default(2048),
            /** The upstream timeouts are checked on undici's 0.5 s tick: each fires up to about 0.5 s off its value. */
            connectTimeoutMs: z.number().int().positive().default(10_000),
            /** Time to the upstream's response headers (time to first byte). */
            headersTimeoutMs: z.number().int().positive().default(600_000),
            /** Longest silence between two upstream body chunks. */
            bodyIdleTimeoutMs: z.number().int().positive().default(600_000),
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
            fallbackPrice: priceSchema.default(DEFAULT_FALLBACK_PRICE),
        })
        .prefault({}),
});

export type RuntimeConfig = z.output<typeof runtimeConfigSchema>;

export function priceBook(config: RuntimeConfig) {
    return { prices: { ...DEFAULT_PRICES, ...config.metering.prices }, fallback: config.metering.fallbackPrice };
}

export interface LoadedConfig {
    config: RuntimeConfig;
    keys: Partial<Record<Provider, string>>;
    extraCa?: string;
}

export const KEY_ENV: Record<Provider, string> = { anthropic: "KEYPROXY_KEY_ANTHROPIC", openai: "KEYPROXY_KEY_OPENAI" };

/**
 * Reads KEYPROXY_CONFIG (JSON) and the real keys from the environment, then removes the keys from
 * process.env so nothing later (an error dump, a child process) can see them.
 */
export function loadConfigFromEnv(env: NodeJS.ProcessEnv = process.env): LoadedConfig {
    const config = runtimeConfigSchema.parse(JSON.parse(env.KEYPROXY_CONFIG ?? "{}"));
    const keys: Partial<Record<Provider, string>> = {};
    for (const provider of PROVIDERS) {
        const value = env[KEY_ENV[provider]];
        delete env[KEY_ENV[provider]];
        if (config.upstreams[provider] === undefined) continue;
        if (!value) throw new Error(`${KEY_ENV[provider]} is not set but upstreams.${provider} is configured`);
        keys[provider] = value;
    }
    if (Object.keys(keys).length === 0) throw new Error("no upstream configured");
    return { config, keys, extraCa: config.extraCaPem ?? (config.extraCaFile ? readFileSync(config.extraCaFile, "utf8") : undefined) };
}
