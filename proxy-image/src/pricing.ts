// Prices and costs: pure arithmetic over token counts. Money is held in micro-dollars (integers) so sums
// never drift.

/** USD per million tokens. */
export interface Price {
    input: number;
    output: number;
    /** Prompt-cache writes (Anthropic 5-minute cache; OpenAI has none and charges input). */
    cacheWrite: number;
    /** Prompt-cache writes with the 1-hour TTL (Anthropic). */
    cacheWrite1h: number;
    cacheRead: number;
}

const anthropic = (input: number, output: number): Price => ({ input, output, cacheWrite: input * 1.25, cacheWrite1h: input * 2, cacheRead: input * 0.1 });
const openai = (input: number, output: number, cacheRead: number): Price => ({ input, output, cacheWrite: input, cacheWrite1h: input, cacheRead });
/** Embedding models bill input tokens only. */
const embedding = (input: number): Price => openai(input, 0, input);

/** List prices (USD per million tokens) as published in late 2025. Model ids match by longest prefix. */
export const DEFAULT_PRICES: Record<string, Price> = {
    "claude-opus-4-5": anthropic(5, 25),
    "claude-opus-4-1": anthropic(15, 75),
    "claude-opus-4": anthropic(15, 75),
    "claude-sonnet-4-5": anthropic(3, 15),
    "claude-sonnet-4": anthropic(3, 15),
    "claude-3-7-sonnet": anthropic(3, 15),
    "claude-haiku-4-5": anthropic(1, 5),
    "claude-3-5-haiku": anthropic(0.8, 4),
    "gpt-5.1": openai(1.25, 10, 0.125),
    "gpt-5-mini": openai(0.25, 2, 0.025),
    "gpt-5-nano": openai(0.05, 0.4, 0.005),
    "gpt-5": openai(1.25, 10, 0.125),
    "gpt-4.1-mini": openai(0.4, 1.6, 0.1),
    "gpt-4.1-nano": openai(0.1, 0.4, 0.025),
    "gpt-4.1": openai(2, 8, 0.5),
    "gpt-4o-mini": openai(0.15, 0.6, 0.075),
    "gpt-4o": openai(2.5, 10, 1.25),
    "o4-mini": openai(1.1, 4.4, 0.275),
    o3: openai(2, 8, 0.5),
    "text-embedding-3-small": embedding(0.02),
    "text-embedding-3-large": embedding(0.13),
    "text-embedding-ada-002": embedding(0.1),
};

/** Unknown models are billed at this (the most expensive list price above) until the table names them. */
export const DEFAULT_FALLBACK_PRICE: Price = anthropic(15, 75);

export interface PriceBook {
    prices: Record<string, Price>;
    fallback: Price;
}

export function priceFor(book: PriceBook, model: string): { price: Price; known: boolean } {
    let best: string | undefined;
    for (const id of Object.keys(book.prices)) {
        if ((model === id || model.startsWith(`${id}-`) || model.startsWith(`${id}@`)) && (best === undefined || id.length > best.length)) best = id;
    }
    return best === undefined ? { price: book.fallback, known: false } : { price: book.prices[best], known: true };
}

/** Token counts of one request, each billed at its own price. `input` excludes every cache count. */
export interface Usage {
    input: number;
    output: number;
    cacheWrite: number;
    cacheWrite1h: number;
    cacheRead: number;
}

export const NO_USAGE: Usage = { input: 0, output: 0, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 0 };

export function costMicros(usage: Usage, price: Price): number {
    // Price per million tokens times tokens is micro-dollars; round up so partial cents are never lost.
    return Math.ceil(
        usage.input * price.input + usage.output * price.output + usage.cacheWrite * price.cacheWrite + usage.cacheWrite1h * price.cacheWrite1h + usage.cacheRead * price.cacheRead,
    );
}

/**
 * The most a request can cost: every request byte taken as one input token at the dearest input-side price
 * (a token covers at least one byte of text, and images cost far fewer tokens than their base64 bytes), plus
 * the request's output cap at the output price.
 */
export function maxCostMicros(requestBytes: number, maxOutputTokens: number, price: Price): number {
    const dearestInput = Math.max(price.input, price.cacheWrite, price.cacheWrite1h, price.cacheRead);
    return Math.ceil(requestBytes * dearestInput + maxOutputTokens * price.output);
}
