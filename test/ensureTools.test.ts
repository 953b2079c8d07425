// scripts/ensure-tools.sh, which `npm test` runs first: on Debian as root it installs what the tests need and
// starts dockerd; anywhere else it stops at once with one line naming what to install. Run here against stub
// commands (id, apt-get, docker, dockerd) in a directory that is the whole PATH.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";

const SCRIPT = path.join(REPO_ROOT, "scripts", "ensure-tools.sh");
const ALL_PACKAGES = ["docker.io", "openssl", "wrk", "nginx-light", "prometheus", "chromium", "runsc"];
const ALL_TOOLS = ["dockerd", "docker", "openssl", "wrk", "nginx", "promtool", "prometheus", "chromium", "runsc"];

interface Machine {
    root: boolean;
    apt: boolean;
    /** Commands already installed. */
    tools: string[];
    /** Whether a Docker Engine answers before anything is started. */
    engineUp: boolean;
}

function run(machine: Machine) {
    const dir = tempDir("ensure-tools");
    const bin = path.join(dir, "bin");
    const calls = path.join(dir, "calls");
    const stub = (name: string, body: string) => {
        writeFileSync(path.join(bin, name), `#!/bin/bash\n${body}\n`);
        chmodSync(path.join(bin, name), 0o755);
    };
    spawnSync("mkdir", [bin]);
    for (const util of ["seq", "sleep", "tail", "cat", "touch"]) symlinkSync(spawnSync("sh", ["-c", `command -v ${util}`], { encoding: "utf8" }).stdout.trim(), path.join(bin, util));
    stub("id", `echo ${machine.root ? 0 : 1000}`);
    if (machine.apt) stub("apt-get", `echo "apt-get $*" >> ${calls}`);
    for (const tool of machine.tools.filter((t) => t !== "docker" && t !== "dockerd")) stub(tool, "exit 0");
    // The engine answers once the stub dockerd has run (or from the start).
    if (machine.engineUp) touch(path.join(dir, "engine-up"));
    if (machine.tools.includes("dockerd")) stub("dockerd", `echo dockerd >> ${calls}; touch ${dir}/engine-up`);
    if (machine.tools.includes("docker")) stub("docker", `[ -e ${dir}/engine-up ] || exit 1; [ "$1" = version ] && echo 20.10.24; exit 0`);
    const result = spawnSync("/bin/bash", [SCRIPT], { env: { PATH: bin, DOCKERD_LOG: path.join(dir, "dockerd.log") }, encoding: "utf8", timeout: 20_000 });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr, calls: existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : [] };
}

function touch(file: string) {
    writeFileSync(file, "");
}

describe("scripts/ensure-tools.sh", () => {
    it.each<[string, Machine, RegExp]>([
        ["not root", { root: false, apt: true, tools: [], engineUp: false }, new RegExp(`^error: the tests need ${ALL_PACKAGES.join(" ")}: install them \\(Debian: apt-get install ${ALL_PACKAGES.join(" ")}\\)`)],
        ["root without apt-get", { root: true, apt: false, tools: [], engineUp: false }, /^error: the tests need .*chromium runsc: install them/],
        ["not root, only chromium and runsc missing", { root: false, apt: true, tools: ALL_TOOLS.filter((t) => t !== "chromium" && t !== "runsc"), engineUp: true }, /^error: the tests need chromium runsc: /],
        ["not root, no engine running", { root: false, apt: true, tools: ALL_TOOLS, engineUp: false }, /^error: no Docker Engine answers at the local socket \(docker info\): start it/],
    ])("%s: stops at once with one line naming what to install or start", (_case, machine, message) => {
        const { code, stderr, calls } = run(machine);
        expect(code).toBe(1);
        expect(stderr.trim().split("\n")).toHaveLength(1);
        expect(stderr).toMatch(message);
        expect(calls).toEqual([]);
    });

    it("as root on Debian installs every missing package and starts dockerd", () => {
        // apt-get is a stub here: the commands it would install are already on PATH, except for what it reports.
        const { code, stdout, calls } = run({ root: true, apt: true, tools: ["docker", "dockerd"], engineUp: false });
        expect(code, stdout).toBe(0);
        expect(calls).toEqual(["apt-get update -qq", `apt-get install -y -qq --no-install-recommends ${ALL_PACKAGES.filter((p) => p !== "docker.io").join(" ")}`, "dockerd"]);
        expect(stdout).toContain("== starting dockerd");
    });

    it("does nothing when everything is there", () => {
        const { code, stdout, calls } = run({ root: true, apt: true, tools: ALL_TOOLS, engineUp: true });
        expect(code).toBe(0);
        expect(calls).toEqual([]);
        expect(stdout).toContain("== docker engine 20.10.24");
    });
});

describe("npm test", () => {
    const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };

    it("runs the ensure script before the tests (npm's pretest), and CI runs exactly the README's command", () => {
        expect(pkg.scripts.pretest).toBe("bash scripts/ensure-tools.sh");
        const ci = readFileSync(path.join(REPO_ROOT, ".ci", "run"), "utf8");
        expect(ci.split("\n").filter((line) => /^\s*[^#\s]/.test(line) && /npm|ensure/.test(line))).toEqual(["npm ci && npm test"]);
        expect(readFileSync(path.join(REPO_ROOT, "README.md"), "utf8")).toContain("npm ci && npm test");
    });
});
