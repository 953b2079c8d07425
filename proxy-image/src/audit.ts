// KeyProxy's audit stream (runtime/audit.ts): the security events it writes, with the only fields each may carry,
// each kind within an audit budget per source. Only refusals are audited: a served request writes nothing.
import { z } from "zod";
import { type AuditEventOf, AuditLog, auditAddress, auditField, recordWithinBudget, shortDigest } from "../../runtime/audit";
import type { Logger } from "../../runtime/log";
import { AuditBudget } from "../../runtime/rateLimiter";
import { WINDOWS, type Window } from "./budget";
import type { RuntimeConfig } from "./config";
import type { KeyProxyMetrics } from "./metrics";
import type { AuthDecision } from "./policy";

/** A route (the path after the provider's prefix, never its query) as the audit trail takes it. */
const AUDIT_ROUTE = z.string().regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,199}$/);
/** A model id as the audit trail takes it. */
const AUDIT_MODEL = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$/);
const AUDIT_METHOD = z.string().regex(/^[A-Z][A-Z-]{0,15}$/);

/**
 * Every security event KeyProxy writes to its audit stream, with the only fields each may carry: never a credential,
 * a key, a header value or a query. `remote` is the client's address and `agentPort` the agent port it came to (on
 * that port's listener). A route or model the agent chose that does not fit its pattern or looks like a secret is
 * written only as its digest (`routeSha256`, `modelSha256`). `unaudited`: refusals of this kind from this source
 * left out since its last audited one (the audit budget, `limits.auditedRefusals*`).
 */
export const KEYPROXY_AUDIT_EVENTS = {
    /** No valid credential for the way the request came; `agent`: whose credential it was (wrong_network, wrong_port). */
    auth_failed: z.object({
        reason: z.enum(["missing", "unknown", "wrong_network", "wrong_port"]),
        agent: auditField.name.optional(),
        provider: auditField.name,
        remote: auditField.address,
        agentPort: auditField.port.optional(),
        unaudited: auditField.count,
    }),
    /** A request or connection closed unanswered: a method, target or path KeyProxy never forwards, or unparsable HTTP. */
    dropped: z.object({ reason: auditField.name, method: AUDIT_METHOD.optional(), remote: auditField.address, agentPort: auditField.port.optional(), unaudited: auditField.count }),
    /** An authenticated agent asked for an endpoint outside its provider's allowlist. */
    endpoint_refused: z.object({ agent: auditField.name, provider: auditField.name, route: AUDIT_ROUTE.optional(), routeSha256: auditField.digest.optional(), unaudited: auditField.count }),
    /** The request's maximum cost does not fit the agent's budget in `window`. */
    budget_refused: z.object({
        agent: auditField.name,
        provider: auditField.name,
        window: z.enum(WINDOWS),
        model: AUDIT_MODEL.optional(),
        modelSha256: auditField.digest.optional(),
        unaudited: auditField.count,
    }),
    /** The spend ledger could not be written, so a metered request was refused (fails closed). */
    ledger_unavailable: z.object({ agent: auditField.name, provider: auditField.name, unaudited: auditField.count }),
};
type KeyProxyAuditEvent = AuditEventOf<typeof KEYPROXY_AUDIT_EVENTS>;

/** Where a request came from, as far as the connection says: its address, and the agent port's listener it came to. */
export interface Origin {
    remoteAddress: string | undefined;
    agentPort: number | undefined;
}

/**
 * The stream and its budget. Each method is called on one refusal's branch and returns at once: the event is queued
 * and written with others under one fdatasync, never awaited by the request.
 */
export class RefusalAudit {
    readonly stream: AuditLog<typeof KEYPROXY_AUDIT_EVENTS>;
    private readonly budget: AuditBudget;

    constructor(
        config: Pick<RuntimeConfig, "auditDir" | "auditRotation" | "limits">,
        private readonly metrics: KeyProxyMetrics,
        private readonly log: Logger,
        /** Whether an agent-chosen text is, or holds, a secret (a key, a registered credential). */
        private readonly isSecret: (text: string) => boolean,
        clockMs: () => number,
    ) {
        this.budget = new AuditBudget(config.limits.auditedRefusalsPerSecond, config.limits.auditedRefusalsBurst, clockMs);
        this.stream = new AuditLog({
            dir: config.auditDir,
            service: "key-proxy",
            events: KEYPROXY_AUDIT_EVENTS,
            rotation: config.auditRotation,
            onProblem: (problem) => {
                if (problem.kind === "write_failed") metrics.auditFailures.inc(problem.lost);
                log(`audit_${problem.kind}`, problem);
            },
        });
    }

    authFailed(auth: Extract<AuthDecision, { ok: false }>, provider: string, origin: Origin) {
        const remote = auditAddress(origin.remoteAddress);
        const agent = "credentialOf" in auth ? auth.credentialOf : undefined;
        this.write("auth_failed", sourceOf(remote, origin), (unaudited) => ({ type: "auth_failed", reason: auth.reason, agent, provider, remote, agentPort: origin.agentPort, unaudited }));
    }

    dropped(reason: string, method: string | undefined, origin: Origin) {
        const remote = auditAddress(origin.remoteAddress);
        const known = method !== undefined && AUDIT_METHOD.safeParse(method).success ? method : undefined;
        this.write("dropped", sourceOf(remote, origin), (unaudited) => ({ type: "dropped", reason, method: known, remote, agentPort: origin.agentPort, unaudited }));
    }

    endpointRefused(agent: string, provider: string, route: string) {
        this.write("endpoint_refused", agent, (unaudited) => ({ type: "endpoint_refused", agent, provider, ...this.agentChosen("route", route, AUDIT_ROUTE), unaudited }));
    }

    budgetRefused(agent: string, provider: string, window: Window, model: string) {
        this.write("budget_refused", agent, (unaudited) => ({ type: "budget_refused", agent, provider, window, ...this.agentChosen("model", model, AUDIT_MODEL), unaudited }));
    }

    ledgerUnavailable(agent: string, provider: string) {
        this.write("ledger_unavailable", agent, (unaudited) => ({ type: "ledger_unavailable", agent, provider, unaudited }));
    }

    /** Whether the last write failed (the service reports itself unhealthy then). */
    get failing(): boolean {
        return this.stream.failing;
    }

    /** Writes what is queued and closes the stream. */
    close(): Promise<void> {
        return this.stream.close();
    }

    /** `field` when the agent's text fits its pattern and is no secret, else only `<field>Sha256`, so such lines can still be matched. */
    private agentChosen<F extends string>(field: F, value: string, pattern: z.ZodString): Partial<Record<F | `${F}Sha256`, string>> {
        const plain = pattern.safeParse(value).success && !this.isSecret(value);
        return (plain ? { [field]: value } : { [`${field}Sha256`]: shortDigest(value) }) as Partial<Record<F | `${F}Sha256`, string>>;
    }

    /** Writes an event within the audit budget of its kind and source. */
    private write(type: KeyProxyAuditEvent["type"], source: string, event: (unaudited: number) => KeyProxyAuditEvent) {
        recordWithinBudget(this.stream, this.budget, this.metrics, this.log, type, source, event);
    }
}

/** The source a refusal before authentication is counted against: the agent port it came to, else its address. */
const sourceOf = (remote: string, origin: Origin) => (origin.agentPort === undefined ? `@${remote}` : `:${origin.agentPort}`);
