import { readFileSync } from "node:fs";
import { type RuntimeConfig, runtimeConfigSchema } from "../../contracts/keyProxy";
import { KEY_ENV_PREFIX, type ProviderSpec, keyEnv, providerOfKind } from "../../providers/index";
import { DEFAULT_PRICES, type PriceBook } from "./pricing";

export { agentEntrySchema, ownPorts, runtimeConfigSchema, type RuntimeConfig } from "../../contracts/keyProxy";

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
