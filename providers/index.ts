// The provider registry: every provider KeyProxy can front, and the facts derived from the entries. Adding a
// provider is one module beside this one plus a line in BUILT_IN.
import { anthropic } from "./anthropic";
import { gemini } from "./gemini";
import { openai } from "./openai";
import { OPENAI_COMPATIBLE_KIND, openaiCompatible } from "./openaiCompatible";
import type { Price, ProviderSpec, WireFormat } from "./types";

export type { ErrorKind, Price, ProviderSpec, Usage, WireFormat } from "./types";
export { ERROR_KINDS, NO_USAGE } from "./types";

/** The built-in providers, each enabled in a stack under its id (keyProxy.providers.<id>). */
export const BUILT_IN: readonly ProviderSpec[] = [anthropic, openai, gemini];

export const BUILT_IN_IDS: readonly string[] = BUILT_IN.map((p) => p.id);

export { OPENAI_COMPATIBLE_KIND };
/** Kinds a stack instantiates under ids of its own, any number of times. */
const INSTANCE_KINDS: readonly ProviderSpec[] = [openaiCompatible];

/** A provider's route prefix, config key and name stem: a DNS-label-like word. */
export const PROVIDER_ID = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;

export function builtInProvider(id: string): ProviderSpec | undefined {
    return BUILT_IN.find((p) => p.id === id);
}

/** Every header any provider's SDK carries a key in: never forwarded from an agent (the real key is attached instead). */
export const KEY_HEADERS: readonly string[] = [...new Set([...BUILT_IN, ...INSTANCE_KINDS].flatMap((p) => [...p.presented.headers.map((h) => h.header), p.attach.header]))];

/** Every wire format a route of any kind meters, by id. */
export const WIRE_FORMATS: ReadonlyMap<string, WireFormat> = new Map(
    [...BUILT_IN, ...INSTANCE_KINDS].flatMap((p) => p.routes.flatMap((r) => (r.meter === "free" ? [] : [[r.meter.id, r.meter] as const]))),
);

const stem = (id: string) => id.split("-");
/** The stack secret holding a provider's real key: `anthropicApiKey`, `my-vllm` -> `myVllmApiKey`. */
export const secretConfigKey = (id: string) => `${stem(id).map((w, i) => (i === 0 ? w : w[0].toUpperCase() + w.slice(1))).join("")}ApiKey`;
/** The deploying machine's environment variable the deploy wrapper stores that secret from: `ANTHROPIC_API_KEY`. */
export const secretEnv = (id: string) => `${stem(id).join("_").toUpperCase()}_API_KEY`;
export const KEY_ENV_PREFIX = "KEYPROXY_KEY_";
/** The KeyProxy container's variable carrying the real key: `KEYPROXY_KEY_ANTHROPIC`. */
export const keyEnv = (id: string) => `${KEY_ENV_PREFIX}${stem(id).join("_").toUpperCase()}`;
/** What every keyEnv looks like, for the policy pack's exception. */
export const KEY_ENV_NAME = new RegExp(`^${KEY_ENV_PREFIX}[A-Z0-9_]+$`);

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
/** Every built-in key prefix, longest first, as one regex alternation. */
export const KEY_PREFIX_PATTERN = [...new Set(BUILT_IN.flatMap((p) => p.keyPrefixes))]
    .sort((a, b) => b.length - a.length)
    .map(escape)
    .join("|");

/** The built-in list prices of every provider, by model id prefix. */
export const BUILT_IN_PRICES: Record<string, Price> = Object.assign({}, ...BUILT_IN.map((p) => p.prices));

/** What a model no table prices is billed at: field by field, the dearest built-in list price. */
export const FALLBACK_PRICE: Price = (() => {
    const prices = Object.values(BUILT_IN_PRICES);
    const most = (field: keyof Price) => Math.max(...prices.map((p) => p[field]));
    return { input: most("input"), output: most("output"), cacheWrite: most("cacheWrite"), cacheWrite1h: most("cacheWrite1h"), cacheRead: most("cacheRead") };
})();

/** The endpoint's meter (a wire format or "free"), or undefined when the provider does not let it through. */
export function classifyRoute(provider: ProviderSpec, method: string, route: string): WireFormat | "free" | undefined {
    return provider.routes.find((r) => r.method === method && r.path.test(route))?.meter;
}

/** The entry of a kind: a built-in provider's id, or an instance kind (openai-compatible). */
export function providerKind(kind: string): ProviderSpec | undefined {
    return builtInProvider(kind) ?? INSTANCE_KINDS.find((p) => p.id === kind);
}

/** The provider entry of a kind for the route prefix `id`, or undefined for an unknown kind. */
export function providerOfKind(kind: string, id: string): ProviderSpec | undefined {
    const spec = providerKind(kind);
    if (spec === undefined) return undefined;
    return spec.id === id ? spec : { ...spec, id };
}
