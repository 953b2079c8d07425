// The bundled KeyProxy as its image runs it: one file, started as a process, configured from the environment.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { credentialDigest } from "../proxy-image/src/policy";
import { readAuditLines, verifyDirectory } from "../runtime/audit";
import { bundle } from "../scripts/images.mts";
import { ANTHROPIC_BODY, REAL_KEYS, TOKENS, anthropicHeaders, send } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { type RunningProcess, startProcess } from "./support/processes";
import { tempDir } from "./support/tempDirs";
import { testPki } from "./support/tls";

const upstream = new MockUpstream();
let bundleFile: string;
let proxy: RunningProcess;
let port: number;
const registryDir = tempDir("keyproxy-bundle");
const auditDir = tempDir("keyproxy-bundle-audit");
const env = () => ({
    PATH: process.env.PATH,
    KEYPROXY_CONFIG: JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        upstreams: { anthropic: { baseUrl: upstream.baseUrl }, openai: { baseUrl: upstream.baseUrl } },
        extraCaFile: testPki().caFile,
        registryDir,
        auditDir,
        metering: { ledgerFile: path.join(registryDir, "ledger.log") },
        drainSeconds: 2,
    }),
    KEYPROXY_KEY_ANTHROPIC: REAL_KEYS.anthropic,
    KEYPROXY_KEY_OPENAI: REAL_KEYS.openai,
});

beforeAll(async () => {
    await upstream.start();
    bundleFile = await bundle("keyProxy");
    proxy = startProcess(process.execPath, [bundleFile, "serve"], env());
    port = (await proxy.waitFor("listening")).port;
});
afterAll(async () => {
    await proxy?.stop();
    await upstream.stop();
});

describe("the KeyProxy bundle", () => {
    it("registers an agent from stdin and then forwards its requests", async () => {
        const entry = { name: "bart", credentialSha256: credentialDigest(TOKENS.bart), subnet: "127.0.0.0/8" };
        execFileSync(process.execPath, [bundleFile, "register"], { input: JSON.stringify(entry), env: env() });
        await expect
            .poll(async () => (await send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status, { timeout: 5000, interval: 100 })
            .toBe(200);
        expect(upstream.received.at(-1)?.headers["x-api-key"]).toBe(REAL_KEYS.anthropic);
    });

    it("refuses a register entry that is not valid", () => {
        expect(() => execFileSync(process.execPath, [bundleFile, "register"], { input: '{"name":"../x"}', env: env(), stdio: "pipe" })).toThrow();
    });

    it("fails at start, naming the variable, when a configured upstream has no key", async () => {
        const { KEYPROXY_KEY_OPENAI: _unset, ...withoutKey } = env();
        const broken = startProcess(process.execPath, [bundleFile, "serve"], withoutKey);
        const fatal = await broken.waitFor("fatal");
        expect(fatal.error).toMatch(/KEYPROXY_KEY_OPENAI is not set/);
        expect(await broken.exited()).toBe(1);
        expect(broken.lines.join("\n")).not.toContain(REAL_KEYS.anthropic);
    });

    it("drains on SIGTERM and exits 0, its audit stream written and closed", async () => {
        const wrong = `ocp_${"w".repeat(48)}`;
        expect((await send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(wrong), body: ANTHROPIC_BODY })).status).toBe(401);
        const code = await proxy.stop("SIGTERM");
        expect(code).toBe(0);
        const [stream] = verifyDirectory(auditDir);
        expect(stream.verdict).toMatchObject({ ok: true });
        const text = readFileSync(stream.file, "utf8");
        expect(readAuditLines(text).at(-1)).toMatchObject({ service: "key-proxy", type: "auth_failed", reason: "unknown", provider: "anthropic" });
        expect(text).not.toContain(wrong);
        expect(proxy.lines.some((l) => l.includes('"event":"drained"'))).toBe(true);
        expect(proxy.lines.join("\n")).not.toContain(REAL_KEYS.anthropic);
        expect(proxy.lines.join("\n")).not.toContain(TOKENS.bart);
    });
});
