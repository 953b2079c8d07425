import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";

export interface RecordedResource {
    type: string;
    name: string;
    inputs: Record<string, any>;
    provider?: string;
}

export const REPO_ROOT = path.resolve(__dirname, "..", "..");

/** Stand-in provider keys: shaped like real ones, so a leak of them is detectable by shape and by value. */
export const FAKE_SECRETS = {
    anthropicApiKey: "sk-ant-api03-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE-test",
    openaiApiKey: "sk-proj-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE-test",
};

/** A stack file's `openclaw:` config as the raw object the program validates. */
export function stackFileConfig(stack: string): Record<string, unknown> {
    const file = parseYaml(readFileSync(path.join(REPO_ROOT, `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
    const raw: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(file.config)) {
        if (key.startsWith("openclaw:")) raw[key.slice("openclaw:".length)] = value;
    }
    return raw;
}

/** The dev stack's config plus stand-in secrets, as a test would run it. */
export function devConfig(): Record<string, unknown> {
    return { ...stackFileConfig("dev"), ...FAKE_SECRETS };
}

/** Deterministic mock outputs: a random's result follows its keepers, as the real provider's does. */
function mockState(type: string, name: string, inputs: Record<string, any>): Record<string, any> {
    if (type === "random:index/randomPassword:RandomPassword") {
        const digest = createHash("sha256").update(`${name}:${JSON.stringify(inputs.keepers ?? {})}`).digest("hex");
        return { ...inputs, result: digest.slice(0, inputs.length ?? 32) };
    }
    return { ...inputs, name: inputs.name ?? name };
}

/**
 * Runs the program's entry module under Pulumi mocks with the given raw config and returns every resource
 * registered, with its inputs fully resolved. Each call starts from a fresh runtime and module registry.
 */
export async function runProgram(rawConfig: Record<string, unknown>, stack = "dev"): Promise<RecordedResource[]> {
    const resources: RecordedResource[] = [];
    await pulumi.runtime.setMocks(
        {
            newResource: (args) => {
                resources.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
                return { id: `${args.name}-id`, state: mockState(args.type, args.name, args.inputs) };
            },
            call: (args) => args.inputs,
        },
        "openclaw",
        stack,
        false,
    );
    const flat: Record<string, string> = {};
    for (const [key, value] of Object.entries(rawConfig)) {
        flat[`openclaw:${key}`] = typeof value === "string" ? value : JSON.stringify(value);
    }
    pulumi.runtime.setAllConfig(flat, ["openclaw:anthropicApiKey", "openclaw:openaiApiKey"]);
    const { vi } = await import("vitest");
    vi.resetModules();
    const program = (await import("../../infra/index.js")) as typeof import("../../infra/index");
    await settle(program.agents);
    return resources;
}

async function settle(value: unknown): Promise<void> {
    await new Promise<void>((resolve) => pulumi.output(value as any).apply(() => resolve()));
    // Registrations triggered by resolved outputs (commands on container ids) finish on later turns.
    let seen = -1;
    for (let i = 0; i < 50; i++) {
        await new Promise((r) => setTimeout(r, 10));
        const outstanding = (pulumi.runtime as any).rpcsDone;
        if (outstanding === seen) break;
        seen = outstanding;
    }
}

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

export function isSecret(value: unknown): boolean {
    return typeof value === "object" && value !== null && SECRET_SIG in value;
}

/** Inputs with Pulumi's secret wrappers removed, for asserting on values. */
export function reveal(value: any): any {
    if (Array.isArray(value)) return value.map(reveal);
    if (value && typeof value === "object") {
        if (SECRET_SIG in value) return reveal(value.value);
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reveal(v)]));
    }
    return value;
}

export const byType = (resources: RecordedResource[], type: string) => resources.filter((r) => r.type === type);
export const TYPES = {
    container: "docker:index/container:Container",
    network: "docker:index/network:Network",
    volume: "docker:index/volume:Volume",
    command: "command:local:Command",
    password: "random:index/randomPassword:RandomPassword",
    sandbox: "openclaw:index:AgentSandbox",
} as const;
