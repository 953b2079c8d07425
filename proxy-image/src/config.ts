import { readFileSync } from "node:fs";
import { z } from "zod";
import { adminListenSchema, listenSchema } from "../../runtime/admin";
import { isTimeZone } from "./budget";
import { KEY_ENV_PREFIX, type ProviderSpec, PROVIDER_ID, keyEnv, providerOfKind } from "../../providers/index";
import type { AgentEntry } from "./policy";
import { DEFAULT_FALLBACK_PRICE, DEFAULT_PRICES, type PriceBook } from "./pricing";
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
            maxUpstreamConnections: z.number().int().positive().default(512),
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
            /** Merged over the built-in list prices (USD per million tokens), by model id prefix. */
            prices: z.record(z.string(), priceSchema).default({}),
            fallbackPrice: priceSchema.default(DEFAULT_FALLBACK_PRICE),
        })
        .prefault({}),
});

export type RuntimeConfig = z.output<typeof runtimeConfigSchema>;

/** The prices one provider's requests are billed at: its own table, then the shared one, then the fallback. */
export function priceBook(config: RuntimeConfig, provider?: string): PriceBook {
    const own = provider === undefined ? {} : (config.upstreams[provider]?.prices ?? {});
    return { prices: { ...DEFAULT_PRICES, ...config.metering.prices, ...own }, fallback: config.metering.fallbackPrice };
}

/** The provider entry of every configured upstream, by route prefix. */
export function configuredProviders(config: RuntimeConfig): Map<string, ProviderSpec> {
    return new Map(Object.entries(config.upstreams).map(([id, upstream]) => [id, providerOfKind(upstream.kind ?? id, id)!]));
}

export interface LoadedConfig {
    config: RuntimeConfig;
    keys: Record<string, string>;
    extraCa?: string;
}

/**
 * Reads KEYPROXY_CONFIG (JSON) and the real keys from the environment, then removes the keys from
 * process.env so nothing later (an error dump, a child process) can see them.
 */
export function loadConfigFromEnv(env: NodeJS.ProcessEnv = process.env): LoadedConfig {
    const config = runtimeConfigSchema.parse(JSON.parse(env.KEYPROXY_CONFIG ?? "{}"));
    const keys: Record<string, string> = {};
    for (const name of Object.keys(env).filter((n) => n.startsWith(KEY_ENV_PREFIX))) {
        const value = env[name];
        delete env[name];
        const provider = Object.keys(config.upstreams).find((id) => keyEnv(id) === name);
        if (provider !== undefined && value) keys[provider] = value;
    }
    for (const provider of Object.keys(config.upstreams)) {
        if (keys[provider] === undefined) throw new Error(`${keyEnv(provider)} is not set but upstreams.${provider} is configured`);
    }
    if (Object.keys(keys).length === 0) throw new Error("no upstream configured");
    return { config, keys, extraCa: config.extraCaPem ?? (config.extraCaFile ? readFileSync(config.extraCaFile, "utf8") : undefined) };
}
