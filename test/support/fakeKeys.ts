// Provider-key-shaped values for tests, assembled at run time so no committed line looks like a real key.
export const KEY_PREFIX = { anthropic: ["sk", "ant", "api03", ""].join("-"), openai: ["sk", "proj", ""].join("-"), gemini: ["AI", "za"].join("") } as const;

/** A value shaped like a provider key: the provider's prefix, then `body`. */
export function fakeKey(provider: keyof typeof KEY_PREFIX, body: string): string {
    return KEY_PREFIX[provider] + body;
}
