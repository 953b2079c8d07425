import { execFileSync, spawnSync } from "node:child_process";

/**
 * Whether a Docker Engine answers. In CI (CI=true) a missing engine is an error, never a skip: a suite
 * that silently skips its Docker tests is a failing suite.
 */
export function requireDocker(): boolean {
    const info = spawnSync("docker", ["info", "--format", "{{.ServerVersion}}"], { encoding: "utf8", timeout: 20_000 });
    const available = info.status === 0;
    if (!available && process.env.CI) {
        throw new Error(`CI=true but no Docker Engine answers (docker info: ${(info.stderr || String(info.error)).trim()})`);
    }
    if (!available) console.warn("Docker Engine not available: skipping the Docker tests (they are required in CI)");
    return available;
}

export function docker(...args: string[]): string {
    return execFileSync("docker", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

export function dockerWithInput(input: string, ...args: string[]): string {
    return execFileSync("docker", args, { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] }).trim();
}

export function removeContainers(...names: string[]) {
    spawnSync("docker", ["rm", "-f", "-v", ...names], { stdio: "ignore" });
}
