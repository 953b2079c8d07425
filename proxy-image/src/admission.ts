// The first phase of a request, as a pure decision: once its route is known and its credential checked, may it
// go on to have its body read, its spend reserved and its upstream called? No I/O, so every case is a table row.
import type { RuntimeConfig } from "./config";
import { type ApiFormat, classifyEndpoint } from "./metering";
import type { ProviderSpec } from "../../providers/index";
import type { AgentEntry, AuthDecision, ErrorKind } from "./policy";

export type Admission =
    | { ok: true; agent: AgentEntry; endpoint: ApiFormat | "free"; bodyLimit: number }
    | { ok: false; kind: ErrorKind; reason: string };

export interface AdmissionRequest {
    provider: ProviderSpec;
    method: string;
    route: string;
    auth: AuthDecision;
    /** The content-length header as sent (undefined when absent). */
    contentLength: string | undefined;
    /** Requests the agent has in flight now. */
    active: number;
}

export function admit(request: AdmissionRequest, limits: RuntimeConfig["limits"]): Admission {
    const { auth } = request;
    if (!auth.ok) return { ok: false, kind: "authentication", reason: auth.reason };
    const endpoint = classifyEndpoint(request.provider, request.method, request.route);
    if (endpoint === undefined) return { ok: false, kind: "forbidden", reason: "endpoint_not_allowed" };
    // Free endpoints need small bodies: what nobody pays for gets no 64 MiB pipe to the upstream.
    const bodyLimit = endpoint === "free" ? limits.maxFreeBodyBytes : limits.maxBodyBytes;
    if (Number(request.contentLength ?? 0) > bodyLimit) return { ok: false, kind: "too_large", reason: "body_size" };
    if (request.active >= limits.maxConcurrentPerAgent) return { ok: false, kind: "rate_limited", reason: "concurrency" };
    return { ok: true, agent: auth.agent, endpoint, bodyLimit };
}
