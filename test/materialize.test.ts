// The end-to-end tier's translation from resource inputs to Docker Engine API calls: every field mapped,
// every unknown field refused.
import { execFileSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { OPENCLAW_IMAGE } from "../infra/openclaw";
import { UntranslatableInput, containerCreateBody, durationNs, materialize, networkCreateBody, tarOf } from "./e2e/materialize";
import { type TlsType, isTlsType, issueTls, withIssued } from "./e2e/tlsStandIn";
import { type RecordedResource, TYPES, devConfig, reveal, runProgram } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";

let dev: RecordedResource[];
beforeAll(async () => {
    dev = await runProgram(devConfig());
});
const find = (name: string) => dev.find((r) => r.name === name)!;

describe("containerCreateBody", () => {
    it("maps every hardening and wiring input of an agent container", () => {
        const resource = find("agent-bart-container");
        const { name, body, extraNetworks, uploads, attach } = containerCreateBody(resource, { [OPENCLAW_IMAGE]: "agent:1" });
        expect(name).toBe("openclaw-dev-agent-bart");
        expect(attach).toBe(false);
        expect(extraNetworks).toEqual([]);
        expect(uploads).toEqual([]);
        expect(body).toMatchObject({
            Image: "agent:1",
            User: "1000:1000",
            Hostname: "bart",
            Labels: { "openclaw.role": "agent", "openclaw.agent": "bart", "openclaw.dashboard-port": "18801" },
            Healthcheck: { Interval: 30e9, Timeout: 5e9, StartPeriod: 90e9, Retries: 3 },
            ExposedPorts: {},
            HostConfig: {
                ReadonlyRootfs: true,
                Privileged: false,
                CapDrop: ["ALL"],
                CapAdd: [],
                SecurityOpt: ["no-new-privileges:true"],
                IpcMode: "private",
                RestartPolicy: { Name: "unless-stopped" },
                LogConfig: { Type: "json-file", Config: { "max-size": "10m", "max-file": "3" } },
                Memory: 2048 * 1024 * 1024,
                MemorySwap: 2048 * 1024 * 1024,
                NanoCpus: 1e9,
                PortBindings: {},
                Mounts: [
                    { Type: "volume", Source: "openclaw-dev-agent-bart-state", Target: "/home/node", ReadOnly: false },
                    { Type: "volume", Source: "openclaw-dev-agent-bart-config", Target: "/etc/openclaw", ReadOnly: true },
                ],
                Tmpfs: { "/tmp": "rw,noexec,nosuid,nodev,size=256m" },
                NetworkMode: "openclaw-dev-net-agent-bart",
            },
        });
        expect(body.HostConfig.Dns).toHaveLength(1);
        const endpoints = body.NetworkingConfig?.EndpointsConfig as Record<string, { IPAMConfig?: { IPv4Address: string } }>;
        expect(endpoints["openclaw-dev-net-agent-bart"].IPAMConfig?.IPv4Address).toMatch(/^10\./);
        expect(body.Env).toContain("HOME=/home/node");
    });

    it("runs the agent's config writer once, with no network, and uploads the config into its volume", () => {
        const { body, uploads, attach } = containerCreateBody(find("agent-bart-config-writer-container"), {});
        expect(attach).toBe(true);
        expect(uploads.map((u) => [u.file, u.permissions])).toEqual([["/home/node/.incoming.json", "0444"]]);
        expect(body.HostConfig).toMatchObject({ NetworkMode: "none", ReadonlyRootfs: true, RestartPolicy: { Name: "no" }, Mounts: [{ Type: "volume", Source: "openclaw-dev-agent-bart-config", Target: "/home/node", ReadOnly: false }] });
        expect(body.Cmd?.slice(0, 2)).toEqual(["node", "-e"]);
    });

    it.each(["none", "host"])("translates networkMode %s exactly, with no network endpoint", (mode) => {
        const resource = find("agent-bart-container");
        const { body } = containerCreateBody({ ...resource, inputs: { ...resource.inputs, networksAdvanced: undefined, networkMode: mode } }, {});
        expect(body.HostConfig.NetworkMode).toBe(mode);
        expect(body.NetworkingConfig).toBeUndefined();
    });

    it("maps the agent's OCI runtime", () => {
        const resource = find("agent-bart-container");
        expect(containerCreateBody({ ...resource, inputs: { ...resource.inputs, runtime: "runsc" } }, {}).body.HostConfig.Runtime).toBe("runsc");
    });

    it("maps sysctls (the gateway's DNS port) and stop timeouts (KeyProxy's drain)", () => {
        expect(containerCreateBody(find("egress-gateway-container"), {}).body.HostConfig.Sysctls).toEqual({ "net.ipv4.ip_unprivileged_port_start": "53" });
        expect(containerCreateBody(find("key-proxy-container"), {}).body.StopTimeout).toBe(35);
    });

    it.each([
        ["devices", [{ hostPath: "/dev/kvm" }]],
        ["gpus", "all"],
        ["pidMode", "host"],
        ["usernsMode", "host"],
        ["cgroupnsMode", "host"],
        ["mounts", [{ type: "bind", source: "/", target: "/host" }]],
        ["ulimits", [{ name: "nproc", soft: 1, hard: 1 }]],
    ])("refuses the untranslated input %s rather than drop it", (key, value) => {
        const resource = find("agent-bart-container");
        expect(() => containerCreateBody({ ...resource, inputs: { ...resource.inputs, [key]: value } }, {})).toThrow(UntranslatableInput);
    });

    it("refuses host-path volumes and unknown capability fields", () => {
        const resource = find("agent-bart-container");
        expect(() => containerCreateBody({ ...resource, inputs: { ...resource.inputs, volumes: [{ hostPath: "/etc", containerPath: "/x" }] } }, {})).toThrow(/only named volumes/);
        expect(() => containerCreateBody({ ...resource, inputs: { ...resource.inputs, capabilities: { drops: ["ALL"], ambient: ["X"] } } }, {})).toThrow(UntranslatableInput);
    });
});

describe("networkCreateBody", () => {
    it("maps an agent network: internal, its subnet and gateway, no host address on the bridge", () => {
        const body = networkCreateBody(find("agent-bart-network"));
        expect(body).toMatchObject({ Name: "openclaw-dev-net-agent-bart", Driver: "bridge", Internal: true, Options: { "com.docker.network.bridge.inhibit_ipv4": "true" } });
        expect(body.IPAM?.Config[0].Subnet).toMatch(/\/28$/);
    });

    it("maps the uplink: its subnet, gateway, and the upper half as the only range Docker hands out", () => {
        expect(networkCreateBody(find("uplink")).IPAM?.Config).toEqual([{ Subnet: "10.63.255.0/24", Gateway: "10.63.255.1", IPRange: "10.63.255.128/25" }]);
    });

    it.each<[string, Record<string, unknown>]>([
        ["a network input", { attachable: true }],
        ["an IPAM input", { ipamConfigs: [{ subnet: "10.63.255.0/24", auxAddress: { x: "10.63.255.9" } }] }],
    ])("refuses an untranslated %s", (_what, extra) => {
        const resource = find("agent-bart-network");
        expect(() => networkCreateBody({ ...resource, inputs: { ...resource.inputs, ...extra } })).toThrow(UntranslatableInput);
    });
});

describe("materialize", () => {
    it("refuses a resource type it does not translate, before touching the engine", async () => {
        await expect(materialize([{ type: "docker:index/service:Service", name: "s", inputs: {} }], new Map(), {})).rejects.toThrow(/not translated/);
    });

    it("refuses an untranslated command input", async () => {
        await expect(materialize([{ type: TYPES.command, name: "c", inputs: { create: "true", interpreter: ["bash"] } }], new Map(), {})).rejects.toThrow(/interpreter/);
    });
});

describe("helpers", () => {
    it.each([
        ["30s", 30e9],
        ["500ms", 5e8],
        ["2m", 120e9],
        ["1.5s", 1.5e9],
    ])("duration %s", (text, ns) => expect(durationNs(text)).toBe(ns));

    it("refuses durations it cannot read", () => expect(() => durationNs("10")).toThrow(UntranslatableInput));

    it("writes a tar archive that tar itself reads back", () => {
        const dir = tempDir("tar");
        writeFileSync(path.join(dir, "a.tar"), tarOf("config.json", '{"a":1}', 0o644));
        expect(execFileSync("tar", ["-tvf", path.join(dir, "a.tar")], { encoding: "utf8" })).toMatch(/^-rw-r--r-- .* 7 .* config\.json$/m);
        expect(execFileSync("tar", ["-xOf", path.join(dir, "a.tar")], { encoding: "utf8" })).toBe('{"a":1}');
    });
});

describe("the tls stand-in", () => {
    it("issues the Ingress's CA and server certificate for real from their declared inputs: the chain verifies and names the publish address", async () => {
        const withIngress = await runProgram({ ...devConfig(), ingress: { users: [{ name: "ann", agents: ["bart"] }] } });
        const issued = new Map<string, string>();
        for (const resource of withIngress.filter((r) => isTlsType(r.type))) {
            for (const [placeholder, pem] of issueTls(resource.type as TlsType, resource.name, withIssued(reveal(resource.inputs), issued))) issued.set(placeholder, pem);
        }
        const ca = new X509Certificate(issued.get("mock-cert-pem:ingress-ca")!);
        const server = new X509Certificate(issued.get("mock-cert-pem:ingress-server-cert")!);
        expect(ca.ca).toBe(true);
        expect(server.ca).toBe(false);
        expect(server.verify(ca.publicKey)).toBe(true);
        expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
        expect(server.checkHost("localhost")).toBe("localhost");
        expect(server.keyUsage).toContain("1.3.6.1.5.5.7.3.1");
        // The container's environment carries the real key, which belongs to the certificate.
        const env: string[] = withIssued(reveal(withIngress.find((r) => r.name === "ingress-container")!.inputs.envs), issued);
        const key = env.find((e) => e.startsWith("INGRESS_TLS_KEY_PEM="))!.slice("INGRESS_TLS_KEY_PEM=".length);
        expect(server.checkPrivateKey(createPrivateKey(key))).toBe(true);
    });

    it.each<[string, Record<string, unknown>]>([
        ["an RSA key", { algorithm: "RSA" }],
        ["an input it does not know", { algorithm: "ECDSA", ecdsaCurve: "P256", rsaBits: 2048 }],
    ])("refuses %s rather than issue something else", (_what, inputs) => {
        expect(() => issueTls("tls:index/privateKey:PrivateKey", "k", inputs)).toThrow(UntranslatableInput);
    });

    it("replaces placeholders inside strings, longest first", () => {
        const issued = new Map([["mock-cert-pem:a", "A"], ["mock-cert-pem:a-b", "AB"]]);
        expect(withIssued({ env: ["X=mock-cert-pem:a-b", "Y=mock-cert-pem:a"], n: 1 }, issued)).toEqual({ env: ["X=AB", "Y=A"], n: 1 });
    });
});
