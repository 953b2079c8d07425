// `npm run deploy` (scripts/pulumi.mts) checks what it needs before it starts, each with one line saying what to
// do: the stack file, the Pulumi CLI (the npm package `pulumi` fetches it where there is internet access), the
// docker CLI and the Docker host. Run against stub `pulumi` and `docker` commands; nothing is deployed.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";

const OFFLINE_PULUMI = 'echo "Downloading pulumi v3.265.0..." >&2; echo "pulumi: fetch failed" >&2; exit 1';
const WORKING_PULUMI = 'echo "v3.265.0"';
const NO_ENGINE = 'echo "Cannot connect to the Docker daemon at ${DOCKER_HOST:-unix:///var/run/docker.sock}. Is the docker daemon running?" >&2; exit 1';

function deploy(stubs: Record<string, string>, env: Record<string, string> = {}) {
    const bin = tempDir("deploy-stubs");
    for (const [name, body] of Object.entries(stubs)) {
        writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`);
        chmodSync(path.join(bin, name), 0o755);
    }
    const result = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "scripts", "pulumi.mts"), "preview", "--stack", "dev"], {
        encoding: "utf8",
        env: { PATH: `${bin}:${path.dirname(process.execPath)}`, HOME: bin, ...env },
        timeout: 30_000,
    });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("npm run deploy checks before it starts", () => {
    it.each<[string, Record<string, string>, Record<string, string>, number, RegExp]>([
        ["the Pulumi CLI cannot be fetched", { pulumi: OFFLINE_PULUMI, docker: "exit 0" }, {}, 127, /^error: the Pulumi CLI could not be started or fetched \(pulumi: fetch failed\): with internet access `npm ci` and this command fetch it; otherwise install it \(https:\/\/www\.pulumi\.com\/docs\/iac\/download-install\/\) and put it on PATH$/],
        ["no docker CLI", { pulumi: WORKING_PULUMI }, {}, 127, /^error: the docker CLI is not on PATH: install it \(Debian: apt-get install docker\.io\), then run this again$/],
        ["no engine on the local socket", { pulumi: WORKING_PULUMI, docker: NO_ENGINE }, {}, 1, /^error: no Docker Engine answers at the local socket \(from the default; docker version: Cannot connect to the Docker daemon at unix:\/\/\/var\/run\/docker\.sock\. .*\): start it, or point DOCKER_HOST or openclaw:dockerHost at the stack's host$/],
        ["no engine at DOCKER_HOST", { pulumi: WORKING_PULUMI, docker: NO_ENGINE }, { DOCKER_HOST: "tcp://127.0.0.1:2375" }, 1, /^error: no Docker Engine answers at tcp:\/\/127\.0\.0\.1:2375 \(from DOCKER_HOST; /],
    ])("%s: one line, and nothing else done", (_case, stubs, env, code, message) => {
        const stateExisted = existsSync(path.join(REPO_ROOT, ".pulumi-state"));
        const run = deploy(stubs, env);
        expect(run.code).toBe(code);
        expect(run.stderr.trim().split("\n")).toHaveLength(1);
        expect(run.stderr.trim()).toMatch(message);
        expect(run.stdout).toBe("");
        expect(existsSync(path.join(REPO_ROOT, ".pulumi-state"))).toBe(stateExisted);
    });

    it("depends on the npm package pulumi, Pulumi's own, which fetches the CLI on first use", () => {
        const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8"));
        expect(pkg.dependencies.pulumi).toMatch(/^\d+\.\d+\.\d+$/);
        const installed = JSON.parse(readFileSync(path.join(REPO_ROOT, "node_modules", "pulumi", "package.json"), "utf8"));
        expect(installed).toMatchObject({ name: "pulumi", bin: { pulumi: "run.js" }, repository: { url: "git+https://github.com/pulumi/pulumi.git", directory: "npm" } });
    });
});
