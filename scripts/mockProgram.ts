// Runs the Pulumi program under the SDK's mocks: no CLI, no engine, no Docker. The tests and the offline review
// command both use it to see every resource the program declares, with its inputs resolved.
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { INGRESS_TLS_KEY, NAMESPACE, providerSecretKeys } from "../infra/config";

export interface RecordedResource {
    type: string;
    name: string;
    inputs: Record<string, any>;
    provider?: string;
}

export const SECRET_CONFIG_KEYS = [...providerSecretKeys(), INGRESS_TLS_KEY];

/**
 * The tls provider's products under mocks: placeholders, deterministic per resource. The end-to-end tests issue the
 * real thing from the same inputs and put it in their place (test/e2e/tlsStandIn.ts).
 */
export const TLS_PLACEHOLDERS = {
    "tls:index/privateKey:PrivateKey": (name: string) => ({ privateKeyPem: `mock-private-key-pem:${name}`, publicKeyPem: `mock-public-key-pem:${name}` }),
    "tls:index/selfSignedCert:SelfSignedCert": (name: string) => ({ certPem: `mock-cert-pem:${name}` }),
    "tls:index/certRequest:CertRequest": (name: string) => ({ certRequestPem: `mock-csr-pem:${name}` }),
    "tls:index/locallySignedCert:LocallySignedCert": (name: string) => ({ certPem: `mock-cert-pem:${name}` }),
};

/** A RandomPassword's result under mocks: it follows its keepers, as the real provider's does. */
export function mockPasswordResult(name: string, inputs: Record<string, any>): string {
    return createHash("sha256").update(`${name}:${JSON.stringify(inputs.keepers ?? {})}`).digest("hex").slice(0, inputs.length ?? 32);
}

/** Deterministic mock outputs: a random's result follows its keepers, as the real provider's does. */
function mockState(type: string, name: string, inputs: Record<string, any>): Record<string, any> {
    if (type === "random:index/randomPassword:RandomPassword") return { ...inputs, result: mockPasswordResult(name, inputs) };
    const tlsOutputs = TLS_PLACEHOLDERS[type as keyof typeof TLS_PLACEHOLDERS];
    if (tlsOutputs) return { ...inputs, ...tlsOutputs(name) };
    // The API server gives a Service its cluster IP: a stand-in inside 10.96.0.0/16, deterministic per resource.
    if (type === "kubernetes:core/v1:Service") {
        const digest = createHash("sha256").update(name).digest();
        return { ...inputs, spec: { ...inputs.spec, clusterIP: `10.96.${digest[0]}.${(digest[1] % 254) + 1}` } };
    }
    return { ...inputs, name: inputs.name ?? name };
}

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

export function isSecret(value: unknown): boolean {
    return typeof value === "object" && value !== null && SECRET_SIG in value;
}

/** Inputs with Pulumi's secret wrappers removed, for reading values. */
export function reveal(value: any): any {
    if (Array.isArray(value)) return value.map(reveal);
    if (value && typeof value === "object") {
        if (SECRET_SIG in value) return reveal(value.value);
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reveal(v)]));
    }
    return value;
}

/**
 * Sets up mocks and config, loads the program with `load` (which must import program/index afresh) and returns
 * every resource registered once the program's outputs have settled.
 */
export async function runUnderMocks(rawConfig: Record<string, unknown>, stack: string, load: () => Promise<{ agents: unknown }>): Promise<RecordedResource[]> {
    const resources: RecordedResource[] = [];
    await pulumi.runtime.setMocks(
        {
            newResource: (args) => {
                resources.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
                return { id: `${args.name}-id`, state: mockState(args.type, args.name, args.inputs) };
            },
            call: (args) => args.inputs,
        },
        NAMESPACE,
        stack,
        false,
    );
    const flat: Record<string, string> = {};
    for (const [key, value] of Object.entries(rawConfig)) {
        if (value !== undefined) flat[`${NAMESPACE}:${key}`] = typeof value === "string" ? value : JSON.stringify(value);
    }
    pulumi.runtime.setAllConfig(flat, SECRET_CONFIG_KEYS.map((k) => `${NAMESPACE}:${k}`));
    const program = await load();
    await new Promise<void>((resolve) => void pulumi.output(program.agents as object).apply(() => resolve()));
    // Registrations triggered by resolved outputs (commands on container ids) finish on later turns.
    let seen = -1;
    for (let i = 0; i < 50 && resources.length !== seen; i++) {
        seen = resources.length;
        await new Promise((r) => setTimeout(r, 10));
    }
    return resources;
}
