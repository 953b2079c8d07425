import { vi } from "vitest";
import { type RecordedResource, reveal, runUnderMocks } from "../../scripts/mockProgram";
import { readStackFile } from "../../scripts/stackFile";
import { fakeKey } from "./fakeKeys";

export { type RecordedResource, isSecret, reveal } from "../../scripts/mockProgram";
export { REPO_ROOT } from "../../scripts/stackFile";

/** Stand-in provider keys: shaped like real ones, so a leak of them is detectable by shape and by value. */
export const FAKE_SECRETS = {
    anthropicApiKey: fakeKey("anthropic", `${"FAKE".repeat(10)}-test`),
    openaiApiKey: fakeKey("openai", `${"FAKE".repeat(10)}-test`),
};

export function stackFileConfig(stack: string): Record<string, unknown> {
    return readStackFile(stack).raw;
}

/** The dev stack's config plus stand-in secrets, as a test would run it. */
export function devConfig(): Record<string, unknown> {
    return { ...stackFileConfig("dev"), ...FAKE_SECRETS };
}

/** Runs the program's entry module under Pulumi mocks; each call starts from a fresh module registry. */
export function runProgram(rawConfig: Record<string, unknown>, stack = "dev"): Promise<RecordedResource[]> {
    return runUnderMocks(rawConfig, stack, async () => {
        vi.resetModules();
        return (await import("../../program/index.js")) as typeof import("../../program/index");
    });
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

/** The OpenClaw config an agent's one-shot writer uploads (the only input that carries the agent's credential), parsed. */
export function agentConfigUpload(resources: RecordedResource[], agent: string) {
    const writer = resources.find((r) => r.type === TYPES.container && r.name === `agent-${agent}-config-writer-container`);
    if (!writer) throw new Error(`no config writer for agent '${agent}'`);
    const [upload] = reveal(writer.inputs.uploads);
    return JSON.parse(upload.content);
}
