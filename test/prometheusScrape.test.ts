// A real Prometheus (Debian's binary) scrapes a running KeyProxy's metrics endpoint on loopback, over TLS with the
// pinned CA and the bearer token, from the config the program generates; the same target without the token, with
// a wrong one, or without the CA fails. It also loads the generated alert rules.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SCRAPE_JOBS, alertRules, alertRulesFile, prometheusConfig } from "../components/monitoringConfig";
import { ANTHROPIC_BODY, type RunningProxy, TOKENS, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { freePort, waitUntil } from "./support/processes";
import { writeFiles } from "./support/promtool";
import { tempDir } from "./support/tempDirs";
import { testPki } from "./support/tls";

const THRESHOLDS = { errorRatio: 0.05, egressDenialsPerMinute: 30 };
const SCRAPE_TOKEN = "scrape0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
const upstream = new MockUpstream();
let proxy: RunningProxy;
let prometheus: ReturnType<typeof spawn>;
let prometheusPort: number;
let prometheusLog = "";

interface Target {
    labels: { job: string };
    health: "up" | "down" | "unknown";
    lastError: string;
}
const api = async (query: string): Promise<any> => ((await (await fetch(`http://127.0.0.1:${prometheusPort}/api/v1/${query}`)).json()) as { data: any }).data;
const targets = async (): Promise<Target[]> => (await api("targets")).activeTargets;

beforeAll(async () => {
    const pki = testPki();
    await upstream.start();
    proxy = await startKeyProxy(upstream, {
        admin: [
            { host: "127.0.0.1", port: 0 },
            { host: "127.0.0.1", port: 0, tls: { certPem: pki.cert, keyPem: pki.key }, bearerToken: SCRAPE_TOKEN },
        ],
    });
    // One metered request, so there is a series to find.
    expect((await send(proxy.port, { path: "/anthropic/v1/messages", headers: { "x-api-key": TOKENS.bart, "content-type": "application/json" }, body: ANTHROPIC_BODY })).status).toBe(200);

    prometheusPort = await freePort();
    const files = writeFiles({ token: SCRAPE_TOKEN, "wrong-token": `${SCRAPE_TOKEN.slice(0, -1)}X`, "rules.yml": alertRulesFile(THRESHOLDS) });
    const generated = parse(
        prometheusConfig({
            stack: "test",
            endpoints: [{ job: SCRAPE_JOBS.keyProxy, target: `127.0.0.1:${proxy.adminPorts[1]}` }],
            caFile: pki.caFile,
            tokenFile: files.token,
            rulesFile: files["rules.yml"],
            selfTarget: `127.0.0.1:${prometheusPort}`,
        }),
    );
    // The generated job as is, plus copies that each lack one thing. Only the interval is shortened, for the test.
    generated.global.scrape_interval = "1s";
    generated.global.scrape_timeout = "1s";
    const job = generated.scrape_configs.find((j: { job_name: string }) => j.job_name === SCRAPE_JOBS.keyProxy);
    const variant = (name: string, change: (j: any) => void) => {
        const copy = structuredClone(job);
        copy.job_name = name;
        change(copy);
        return copy;
    };
    generated.scrape_configs.push(
        variant("no-token", (j) => delete j.authorization),
        variant("wrong-token", (j) => (j.authorization.credentials_file = files["wrong-token"])),
        variant("no-pinned-ca", (j) => delete j.tls_config.ca_file),
    );
    const config = writeFiles({ "prometheus.yml": stringify(generated) })["prometheus.yml"];
    prometheus = spawn(
        "prometheus",
        [`--config.file=${config}`, `--storage.tsdb.path=${tempDir("openclaw-prometheus")}`, `--web.listen-address=127.0.0.1:${prometheusPort}`],
        { stdio: ["ignore", "pipe", "pipe"] },
    );
    prometheus.on("error", (error) => (prometheusLog += `could not start prometheus (${error.message}): install Debian's prometheus package\n`));
    prometheus.stderr!.on("data", (chunk) => (prometheusLog += chunk));
    await waitUntil(
        async () => {
            try {
                const active = await targets();
                return active.length === 5 && active.every((t) => t.health !== "unknown");
            } catch {
                return false;
            }
        },
        "Prometheus to scrape every target once",
        30_000,
    ).catch((error) => {
        throw new Error(`${error.message}\n${prometheusLog.slice(-2000)}`);
    });
}, 60_000);

afterAll(async () => {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
        prometheus.kill();
        await once(prometheus, "exit");
    }
    await proxy?.server.close();
    await upstream.stop();
});

describe("a real Prometheus scraping KeyProxy's metrics endpoint", () => {
    it("scrapes it over TLS with the pinned CA and the token", async () => {
        const target = (await targets()).find((t) => t.labels.job === SCRAPE_JOBS.keyProxy)!;
        expect(target.lastError).toBe("");
        expect(target.health).toBe("up");
        await waitUntil(async () => (await api(`query?query=${encodeURIComponent('keyproxy_requests_total{agent="bart"}')}`)).result.length > 0, "KeyProxy's request counter in Prometheus");
        const [series] = (await api(`query?query=${encodeURIComponent('keyproxy_requests_total{agent="bart"}')}`)).result;
        expect(series.metric).toMatchObject({ job: SCRAPE_JOBS.keyProxy, provider: "anthropic", status: "2xx" });
    });

    it.each([
        ["no-token", /401/],
        ["wrong-token", /401/],
        ["no-pinned-ca", /certificate|x509/i],
    ])("fails with %s", async (job, error) => {
        const target = (await targets()).find((t) => t.labels.job === job)!;
        expect(target.health).toBe("down");
        expect(target.lastError).toMatch(error);
    });

    it("has loaded the generated alert rules", async () => {
        const groups: { rules: { name: string }[] }[] = (await api("rules")).groups;
        expect(groups.flatMap((g) => g.rules.map((r) => r.name)).sort()).toEqual(alertRules(THRESHOLDS).map((r) => r.alert).sort());
    });

    it("never sees the token in what it exposes", async () => {
        const config: string = (await api("status/config")).yaml;
        expect(config).not.toContain(SCRAPE_TOKEN);
        expect(JSON.stringify(await targets())).not.toContain(SCRAPE_TOKEN);
    });
});
