// Small readers the wire formats share.
import type { PlanOutcome } from "./types";

/** A token count from an upstream's JSON: a finite non-negative number, else 0. */
export const num = (value: unknown): number => (typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : 0);

/**
 * The request's model and output cap. A request without a cap gets `defaultMax` written into `field`, so its
 * reservation is a true bound; a cap that is not a positive integer is refused.
 */
export function readOutputCap(json: Record<string, unknown>, field: string, requested: unknown, defaultMax: number, model: unknown = json.model): PlanOutcome {
    if (typeof model !== "string" || model.length === 0) return { kind: "refused", reason: "no_model" };
    const stream = json.stream === true;
    if (requested === undefined || requested === null) {
        json[field] = defaultMax;
        return { kind: "metered", model, stream, maxOutputTokens: defaultMax, hideUsageChunk: false, rewritten: true };
    }
    if (typeof requested === "number" && Number.isInteger(requested) && requested > 0) {
        return { kind: "metered", model, stream, maxOutputTokens: requested, hideUsageChunk: false, rewritten: false };
    }
    return { kind: "refused", reason: "bad_output_cap" };
}
