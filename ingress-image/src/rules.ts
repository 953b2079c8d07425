// Prompt-injection rules over the user-supplied text of chat requests. Patterns run on RE2 (re2-wasm: Google's
// RE2 compiled to WebAssembly), which matches in time linear in the text: no pattern can backtrack
// catastrophically. RE2 has no backreferences or lookaround; a pattern using them is refused when the rules load,
// naming the rule.
import { RE2 } from "re2-wasm";
import { z } from "zod";
import { type Rule, ruleSchema } from "../../contracts/ingress";
import { shortDigest } from "../../runtime/audit";

export { DEFAULT_RULES } from "../../contracts/ingress";

export interface CompiledRule {
    id: string;
    action: "strip" | "reject";
    roles: ReadonlySet<string>;
    regex: RE2;
}

/** Compiles one validated rule; a pattern RE2 cannot take is an error naming the rule (the stack config checks with this too). */
export function compileRule(rule: Rule): CompiledRule {
    try {
        return { id: rule.id, action: rule.action, roles: new Set(rule.roles), regex: new RE2(rule.pattern, "giu") };
    } catch (error) {
        throw new Error(`'${rule.id}': pattern refused: ${(error as Error).message.replace(/^Invalid regular expression: /, "")} (RE2 syntax: no backreferences or lookaround)`);
    }
}

/** Compiles the rules, each error naming the rule's index and id; duplicate ids are refused too. */
export function compileRules(rules: readonly z.input<typeof ruleSchema>[]): CompiledRule[] {
    const seen = new Set<string>();
    return rules.map((input, index) => {
        const rule = ruleSchema.parse(input);
        if (seen.has(rule.id)) throw new Error(`rules[${index}] '${rule.id}': duplicate rule id`);
        seen.add(rule.id);
        try {
            return compileRule(rule);
        } catch (error) {
            throw new Error(`rules[${index}] ${(error as Error).message}`);
        }
    });
}

export interface RuleHit {
    rule: string;
    action: "strip" | "reject";
    role: string;
    /** sha256 (16 hex digits) of the text the rule matched in: lets an operator correlate, never reveals it. */
    textSha256: string;
}

export type RuleVerdict =
    | { kind: "reject"; rule: string; hits: RuleHit[] }
    | { kind: "forward"; hits: RuleHit[]; /** The body to send on; undefined when nothing was stripped. */ body: unknown | undefined }
    | { kind: "malformed"; reason: string };

interface TextSlot {
    role: string;
    get(): string;
    set(text: string): void;
}

/** The text parts a chat request carries, by role: content as a string, or an array of `{type: "text", text}` parts. */
function textSlots(body: unknown): TextSlot[] | string {
    if (typeof body !== "object" || body === null || Array.isArray(body)) return "body is not a JSON object";
    const messages = (body as { messages?: unknown }).messages;
    if (!Array.isArray(messages)) return "messages is not an array";
    const slots: TextSlot[] = [];
    for (const message of messages) {
        if (typeof message !== "object" || message === null) return "a message is not an object";
        const { role, content } = message as { role?: unknown; content?: unknown };
        if (typeof role !== "string") return "a message has no role";
        if (typeof content === "string") {
            slots.push({ role, get: () => (message as { content: string }).content, set: (text) => ((message as { content: string }).content = text) });
        } else if (Array.isArray(content)) {
            for (const part of content) {
                if (typeof part === "object" && part !== null && (part as { type?: unknown }).type === "text") {
                    if (typeof (part as { text?: unknown }).text !== "string") return "a text part has no text";
                    slots.push({ role, get: () => (part as { text: string }).text, set: (text) => ((part as { text: string }).text = text) });
                }
            }
        } else if (content !== undefined && content !== null) {
            return "a message's content is neither text nor parts";
        }
    }
    return slots;
}

/** Nesting deeper than this in a WebSocket request's params is refused rather than read. */
const MAX_FRAME_DEPTH = 32;

/**
 * The text a WebSocket request frame carries (the Control UI's `{"type":"req","method":"chat.send","params":
 * {"message": ...}}` and every other method): every string anywhere in `params`, as the user's, since the Ingress
 * cannot know which of a method's fields reach the model. A client sends only requests: any other frame is refused.
 */
function frameSlots(frame: unknown): TextSlot[] | string {
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) return "frame is not a JSON object";
    if ((frame as { type?: unknown }).type !== "req") return "not a request frame";
    const slots: TextSlot[] = [];
    const visit = (container: Record<string, unknown> | unknown[], depth: number): string | undefined => {
        if (depth > MAX_FRAME_DEPTH) return "params nest too deep";
        for (const key of Object.keys(container)) {
            const value = (container as Record<string, unknown>)[key];
            if (typeof value === "string") slots.push({ role: "user", get: () => (container as Record<string, string>)[key], set: (text) => ((container as Record<string, string>)[key] = text) });
            else if (typeof value === "object" && value !== null) {
                const problem = visit(value as Record<string, unknown>, depth + 1);
                if (problem) return problem;
            }
        }
        return undefined;
    };
    const params = (frame as { params?: unknown }).params;
    if (typeof params === "string") return "params is a string";
    const problem = typeof params === "object" && params !== null ? visit(params as Record<string, unknown>, 0) : undefined;
    return problem ?? slots;
}

/**
 * Applies the rules to a parsed chat request (which it may change in place: strip). Any reject hit rejects the
 * request, naming the first rule that did; otherwise every strip rule's matches are cut out.
 */
export function applyRules(body: unknown, rules: readonly CompiledRule[]): RuleVerdict {
    return applyToSlots(textSlots(body), body, rules);
}

/** The same for a WebSocket request frame (frameSlots): the rules for the `user` role read every string of its params. */
export function applyFrameRules(frame: unknown, rules: readonly CompiledRule[]): RuleVerdict {
    return applyToSlots(frameSlots(frame), frame, rules);
}

function applyToSlots(slots: TextSlot[] | string, body: unknown, rules: readonly CompiledRule[]): RuleVerdict {
    if (typeof slots === "string") return { kind: "malformed", reason: slots };
    const hits: RuleHit[] = [];
    let stripped = false;
    for (const rule of rules) {
        for (const slot of slots) {
            if (!rule.roles.has(slot.role)) continue;
            const text = slot.get();
            rule.regex.lastIndex = 0;
            if (!rule.regex.test(text)) continue;
            hits.push({ rule: rule.id, action: rule.action, role: slot.role, textSha256: shortDigest(text) });
            if (rule.action === "strip") {
                rule.regex.lastIndex = 0;
                slot.set(text.replace(rule.regex, ""));
                stripped = true;
            }
        }
    }
    const rejecting = hits.find((hit) => hit.action === "reject");
    if (rejecting) return { kind: "reject", rule: rejecting.rule, hits };
    return { kind: "forward", hits, body: stripped ? body : undefined };
}
