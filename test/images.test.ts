// The service images, built from their Dockerfiles on a locally assembled Node 24 base, run hardened.
// Host networking keeps every packet on loopback: the mock upstream listens there.
import dgram from "node:dgram";
import { once } from "node:events";
import { spawnSync } from "node:child_process";
import https from "node:https";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PORTS, agentNetworkAddresses, uplinkAddresses } from "../infra/topology";
import { credentialDigest } from "../proxy-image/src/policy";
import { buildImage, buildLocalNodeBase } from "../scripts/images.mts";
import { docker, dockerWithInput, removeContainers, requireDocker } from "./support/docker";
import { ANTHROPIC_BODY, REAL_KEYS, TOKENS, anthropicHeaders, send } from "./support/keyProxyHarness";
import { MockUpstream } from "./support/mockUpstream";
import { freePort, waitUntil } from "./support/processes";
import { testPki } from "./support/tls";

const hasDocker = requireDocker();
const TAG = "openclaw-key-proxy:test";
const NAME = "openclaw-test-key-proxy-image";
const HARDENING = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--user", "1000:1000", "--memory", "256m", "--pids-limit", "64"];
const HARDENED = ["--network", "host", ...HARDENING];
let base: string;

describe.skipIf(!hasDocker)("the KeyProxy image", () => {
    const upstream = new MockUpstream();
    let port: number;
    let adminPort: number;

    beforeAll(async () => {
        await upstream.start();
        removeContainers(NAME);
        base = buildLocalNodeBase();
        await buildImage("keyProxy", base, TAG);
        [port, adminPort] = [await freePort(), await freePort()];
        const config = {
            listen: { host: "127.0.0.1", port },
            admin: [{ host: "127.0.0.1", port: adminPort }],
            upstreams: { anthropic: { baseUrl: upstream.baseUrl }, openai: { baseUrl: upstream.baseUrl } },
            extraCaFile: "/etc/keyproxy-ca/ca.pem",
        };
        docker(
            "run", "-d", "--name", NAME, ...HARDENED,
            "--tmpfs", "/var/lib/keyproxy:rw,noexec,nosuid,size=1m,uid=1000,gid=1000",
            "-v", `${testPki().dir}:/etc/keyproxy-ca:ro`,
            "-e", `KEYPROXY_CONFIG=${JSON.stringify(config)}`,
            "-e", `KEYPROXY_KEY_ANTHROPIC=${REAL_KEYS.anthropic}`,
            "-e", `KEYPROXY_KEY_OPENAI=${REAL_KEYS.openai}`,
            TAG,
        );
        await waitUntil(() => docker("logs", NAME).includes('"event":"listening"'), "the proxy to listen");
    }, 180_000);

    afterAll(async () => {
        removeContainers(NAME);
        await upstream.stop();
    });

    it("runs as 1000:1000 with a read-only root and no shell", () => {
        const inspect = JSON.parse(docker("inspect", NAME))[0];
        expect(inspect.Config.User).toBe("1000:1000");
        expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
        expect(() => docker("exec", NAME, "/bin/sh", "-c", "true")).toThrow();
    });

    it("reports healthy through its own healthcheck command", () => {
        expect(() => docker("exec", NAME, "/nodejs/bin/node", "/app/keyproxy.cjs", "healthcheck")).not.toThrow();
    });

    it("takes an agent through `docker exec register` and forwards its request with the real key", async () => {
        const entry = { name: "bart", credentialSha256: credentialDigest(TOKENS.bart), subnet: "127.0.0.0/8" };
        dockerWithInput(JSON.stringify(entry), "exec", "-i", NAME, "/nodejs/bin/node", "/app/keyproxy.cjs", "register");
        await expect
            .poll(async () => (await send(port, { path: "/anthropic/v1/messages", headers: anthropicHeaders(), body: ANTHROPIC_BODY })).status, { timeout: 10_000, interval: 200 })
            .toBe(200);
        expect(upstream.received.at(-1)?.headers["x-api-key"]).toBe(REAL_KEYS.anthropic);
    });

    it("never prints a key or token in its logs", () => {
        const logs = docker("logs", NAME);
        expect(logs).toContain('"event":"request"');
        for (const secret of [...Object.values(REAL_KEYS), ...Object.values(TOKENS)]) expect(logs).not.toContain(secret);
    });

    it("drains on docker stop and exits 0", () => {
        docker("stop", "-t", "20", NAME);
        expect(JSON.parse(docker("inspect", NAME))[0].State.ExitCode).toBe(0);
        expect(docker("logs", NAME)).toContain('"event":"drained"');
    });
});

describe.skipIf(!hasDocker)("the EgressGateway image", () => {
    const EGRESS_TAG = "openclaw-egress-gateway:test";
    const EGRESS_NAME = "openclaw-test-egress-image";
    let port: number;
    let dnsPort: number;

    beforeAll(async () => {
        removeContainers(EGRESS_NAME);
        await buildImage("egressGateway", base ?? buildLocalNodeBase(), EGRESS_TAG);
        [port, dnsPort] = [await freePort(), await freePort()];
        const config = { listen: { host: "127.0.0.1", port }, dns: { host: "127.0.0.1", port: dnsPort }, admin: [{ host: "127.0.0.1", port: await freePort() }] };
        docker("run", "-d", "--name", EGRESS_NAME, ...HARDENED, "--tmpfs", "/var/lib/egress:rw,noexec,nosuid,size=1m,uid=1000,gid=1000", "-e", `EGRESS_CONFIG=${JSON.stringify(config)}`, EGRESS_TAG);
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"event":"listening"'), "the gateway to listen");
    }, 180_000);

    afterAll(() => removeContainers(EGRESS_NAME));

    it("runs as 1000:1000 with a read-only root, healthy by its own command", () => {
        const inspect = JSON.parse(docker("inspect", EGRESS_NAME))[0];
        expect(inspect.Config.User).toBe("1000:1000");
        expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
        expect(() => docker("exec", EGRESS_NAME, "/nodejs/bin/node", "/app/egress.cjs", "healthcheck")).not.toThrow();
    });

    it("registers an agent through `docker exec register` and denies what its allowlist does not hold", async () => {
        const entry = { name: "bart", subnet: "127.0.0.0/8", mode: "enforce", allow: [{ host: "allowed.example", ports: [443] }] };
        dockerWithInput(JSON.stringify(entry), "exec", "-i", EGRESS_NAME, "/nodejs/bin/node", "/app/egress.cjs", "register");
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"agents":"bart"'), "the registry reload");
        const answer = await new Promise<string>((resolve) => {
            const socket = connect(port, "127.0.0.1", () => socket.write("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"));
            let out = "";
            socket.on("data", (c) => (out += c));
            socket.on("close", () => resolve(out));
        });
        expect(answer).toMatch(/^HTTP\/1\.1 403/);
        expect(answer).toContain("not_allowlisted");
    });

    it("answers DNS queries with REFUSED and logs them", async () => {
        const socket = dgram.createSocket("udp4");
        const query = Buffer.concat([Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([5]), Buffer.from("exfil"), Buffer.from([4]), Buffer.from("test"), Buffer.from([0, 0, 1, 0, 1])]);
        socket.send(query, dnsPort, "127.0.0.1");
        const [answer] = (await once(socket, "message")) as [Buffer];
        socket.close();
        expect(answer.readUInt16BE(0)).toBe(0xabcd);
        expect(answer.readUInt16BE(2) & 0xf).toBe(5);
        await waitUntil(() => docker("logs", EGRESS_NAME).includes('"name":"exfil.test"'), "the DNS log line");
    });
});

// The metrics endpoint for the monitoring host, wired as the program wires it: bound to KeyProxy's uplink address,
// published on the host, and KeyProxy attached to an agent network at .2. An agent stand-in on that network must
// reach KeyProxy's proxy port and not the metrics endpoint, by either address.
describe.skipIf(!hasDocker)("the KeyProxy image's metrics endpoint for the monitoring host", () => {
    const PROXY = "openclaw-test-metrics-key-proxy";
    const AGENT = "openclaw-test-metrics-agent";
    const UPLINK = { name: "openclaw-test-metrics-uplink", subnet: "10.63.254.0/24", proxy: uplinkAddresses("10.63.254.0/24").keyProxy };
    const agentAddresses = agentNetworkAddresses("10.62.254.0/28");
    const AGENT_NET = { name: "openclaw-test-metrics-agent-net", subnet: agentAddresses.subnet, proxy: agentAddresses.keyProxy, agent: agentAddresses.agent };
    const METRICS = PORTS.keyProxyMetricsTls;
    const SCRAPE_TOKEN = "scrape-token-for-the-image-test-0123456789";
    let hostPort: number;
    const cleanUp = () => {
        removeContainers(PROXY, AGENT);
        for (const network of [UPLINK.name, AGENT_NET.name]) spawnSync("docker", ["network", "rm", network], { stdio: "ignore" });
    };
    /** What the agent stand-in sees when it opens a TCP connection. */
    const fromAgent = (host: string, port: number): string =>
        docker(
            "exec", AGENT, "/nodejs/bin/node", "-e",
            `const s = require("net").connect({ host: "${host}", port: ${port}, timeout: 2000 });
             s.on("connect", () => { console.log("connected"); s.destroy(); });
             s.on("error", (e) => console.log(e.code === "ECONNREFUSED" ? "refused" : "unreachable"));
             s.on("timeout", () => { console.log("unreachable"); s.destroy(); });`,
        );
    const scrape = (headers: Record<string, string>) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
            https
                .get({ host: "127.0.0.1", port: hostPort, path: "/metrics", headers, ca: testPki().ca }, (res) => {
                    let body = "";
                    res.on("data", (c) => (body += c));
                    res.on("end", () => resolve({ status: res.statusCode!, body }));
                })
                .on("error", reject);
        });

    beforeAll(async () => {
        cleanUp();
        await buildImage("keyProxy", base ?? buildLocalNodeBase(), TAG);
        hostPort = await freePort();
        docker("network", "create", "--driver", "bridge", "--subnet", UPLINK.subnet, UPLINK.name);
        docker("network", "create", "--driver", "bridge", "--internal", "--subnet", AGENT_NET.subnet, "-o", "com.docker.network.bridge.inhibit_ipv4=true", AGENT_NET.name);
        const { cert, key } = testPki();
        const config = {
            listen: { host: "0.0.0.0", port: PORTS.keyProxy },
            admin: [{ host: "127.0.0.1", port: PORTS.keyProxyMetrics }, { host: UPLINK.proxy, port: METRICS, tls: { certPem: cert, keyPem: key }, bearerToken: SCRAPE_TOKEN }],
            upstreams: { anthropic: { baseUrl: "https://localhost:9" } },
        };
        docker(
            "run", "-d", "--name", PROXY, "--network", UPLINK.name, "--ip", UPLINK.proxy, "-p", `127.0.0.1:${hostPort}:${METRICS}`, ...HARDENING,
            "--tmpfs", "/var/lib/keyproxy:rw,noexec,nosuid,size=1m,uid=1000,gid=1000",
            "-e", `KEYPROXY_CONFIG=${JSON.stringify(config)}`, "-e", `KEYPROXY_KEY_ANTHROPIC=${REAL_KEYS.anthropic}`, TAG,
        );
        docker("network", "connect", "--ip", AGENT_NET.proxy, AGENT_NET.name, PROXY);
        docker("run", "-d", "--name", AGENT, "--network", AGENT_NET.name, "--ip", AGENT_NET.agent, ...HARDENING, "--entrypoint", "/nodejs/bin/node", TAG, "-e", "setInterval(() => {}, 1 << 30)");
        await waitUntil(() => docker("logs", PROXY).includes('"event":"listening"'), "the proxy to listen");
    }, 180_000);

    afterAll(cleanUp);

    it("serves the monitoring host through the published port, over TLS, with the token only", async () => {
        const scraped = await scrape({ authorization: `Bearer ${SCRAPE_TOKEN}` });
        expect(scraped.status).toBe(200);
        expect(scraped.body).toContain("keyproxy_registered_agents");
        expect((await scrape({})).status).toBe(401);
    });

    it("is out of an agent's reach: refused on KeyProxy's agent-network address, unreachable on its uplink address", () => {
        expect(fromAgent(AGENT_NET.proxy, PORTS.keyProxy)).toBe("connected");
        expect(fromAgent(AGENT_NET.proxy, METRICS)).toBe("refused");
        expect(fromAgent(UPLINK.proxy, METRICS)).toBe("unreachable");
    });
});
