// Builds the agent image the real-Docker tests run: the real OpenClaw, installed from the npm registry at the
// version the stack's default image runs (infra/openclaw.ts), on the locally assembled Node 24 base.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { OPENCLAW_VERSION } from "../../infra/openclaw";
import { REPO_ROOT } from "../../scripts/stackFile";

/** Another release can be tested with OPENCLAW_TEST_VERSION=<npm version>. */
export const OPENCLAW_TEST_VERSION = process.env.OPENCLAW_TEST_VERSION ?? OPENCLAW_VERSION;

const CACHE = path.join(REPO_ROOT, "node_modules", ".cache", "openclaw-agent");
const NODE_BIN = path.join(REPO_ROOT, "node_modules", "node", "bin");

function installedVersion(dir: string): string | undefined {
    const manifest = path.join(dir, "node_modules", "openclaw", "package.json");
    return existsSync(manifest) ? JSON.parse(readFileSync(manifest, "utf8")).version : undefined;
}

/** The npm install of `openclaw@version`, made once per version under node_modules/.cache. */
export function openclawInstall(version = OPENCLAW_TEST_VERSION): string {
    const dir = path.join(CACHE, version);
    if (installedVersion(dir) === version && existsSync(path.join(dir, "app.tar"))) return dir;
    const staging = `${dir}.partial`;
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging, { recursive: true });
    writeFileSync(path.join(staging, "package.json"), JSON.stringify({ name: "openclaw-agent-image", private: true }));
    console.log(`installing openclaw@${version} from the npm registry for the agent image (about a minute, once per version)`);
    const npm = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error", `openclaw@${version}`], {
        cwd: staging,
        // OpenClaw's install scripts check for Node >= 24.16: the project's own Node 24 goes first.
        env: { ...process.env, PATH: `${NODE_BIN}:${process.env.PATH}` },
        encoding: "utf8",
        timeout: 600_000,
    });
    if (npm.status !== 0) throw new Error(`npm install openclaw@${version} failed:\n${npm.stderr}`);
    if (installedVersion(staging) !== version) throw new Error(`npm installed openclaw ${installedVersion(staging)}, not ${version}`);
    mkdirSync(path.join(staging, "home"), { recursive: true });
    writeFileSync(path.join(staging, "home", ".openclaw-test-image"), `openclaw ${version}\n`);
    // One archive the build context carries instead of some 30,000 files: the build takes 43 s instead of 70.
    execFileSync("tar", ["-C", staging, "-cf", path.join(staging, "app.tar"), "node_modules"]);
    writeFileSync(path.join(staging, ".dockerignore"), "node_modules\npackage.json\npackage-lock.json\n");
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
    return dir;
}

/** Builds `openclaw-agent:<version>-test` on `baseImage` and returns its tag. */
export function buildAgentImage(baseImage: string, version = OPENCLAW_TEST_VERSION): string {
    const tag = `openclaw-agent:${version}-test`;
    const context = openclawInstall(version);
    execFileSync(
        "docker",
        ["build", "--network", "none", "--pull=false", "-q", "--build-arg", `BASE_IMAGE=${baseImage}`, "-f", path.join(REPO_ROOT, "test", "e2e", "agent", "Dockerfile"), "-t", tag, context],
        { env: { ...process.env, DOCKER_BUILDKIT: "0" }, stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 * 1024 * 1024 },
    );
    return tag;
}
