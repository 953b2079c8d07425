// Prices and costs: pure arithmetic over token counts. Money is held in micro-dollars (integers) so sums
// never drift.

import { BUILT_IN_PRICES, FALLBACK_PRICE, NO_USAGE, type Price, type Usage } from "../../providers/index";

export { NO_USAGE, type Price, type Usage };

/** List prices of every built-in provider (providers/<id>.ts). Model ids match by longest prefix. */
export const DEFAULT_PRICES: Record<string, Price> = BUILT_IN_PRICES;

/** Unknown models are billed at this (field by field, the dearest list price) until the table names them. */
export const DEFAULT_FALLBACK_PRICE: Price = FALLBACK_PRICE;

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
