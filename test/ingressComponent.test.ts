// The Ingress component under Pulumi mocks: its hardened container on the uplink with one published TLS port, its
// attachment to and registration of every agent, users registered by digest only, tokens as secrets, live changes
// that recreate nothing else, and the stack config's checks.
import { beforeAll, describe, expect, it } from "vitest";
import { ingressRuntimeConfig } from "../components/ingress";
import { ConfigError, parseStackConfig } from "../infra/config";
import { agentNetworkAddresses, uplinkAddresses } from "../infra/topology";
import { tokenDigest } from "../ingress-image/src/policy";
import { DEFAULT_RULES } from "../ingress-image/src/rules";
import { operatorPki } from "./support/tls";
import { type RecordedResource, TYPES, agentConfigUpload, devConfig, isSecret, reveal, runProgram } from "./support/mockStack";

const INGRESS = { port: 8443, users: [{ name: "ann", agents: ["bart"] }, { name: "ned", agents: ["bart", "lisa"] }] };
const withIngress = (ingress: Record<string, unknown> = INGRESS): Record<string, unknown> => ({ ...devConfig(), ingress });

let stack: RecordedResource[];
let plain: RecordedResource[];
beforeAll(async () => {
    [stack, plain] = [await runProgram(withIngress()), await runProgram(devConfig())];
});

const find = (resources: RecordedResource[], type: string, name: string) => resources.find((r) => r.type === type && r.name === name);
const config = parseStackConfig(withIngress());
const UPLINK = uplinkAddresses(config.network.uplinkSubnet);
const inputsByName = (resources: RecordedResource[]) => new Map(resources.map((r) => [`${r.type}::${r.name}`, JSON.stringify(reveal(r.inputs))]));
function changed(before: RecordedResource[], after: RecordedResource[]) {
    const [a, b] = [inputsByName(before), inputsByName(after)];
    const keys = new Set([...a.keys(), ...b.keys()]);
    return {
        added: [...keys].filter((k) => !a.has(k)).sort(),
        removed: [...keys].filter((k) => !b.has(k)).sort(),
        changed: [...keys].filter((k) => a.has(k) && b.has(k) && a.get(k) !== b.get(k)).sort(),
    };
}

describe("the Ingress container", () => {
    it("sits on the uplink at its fixed address, publishes its TLS port on the publish address only", () => {
        const c = reveal(find(stack, TYPES.container, "ingress-container")!.inputs);
        expect(c.name).toBe("openclaw-dev-ingress");
        expect(c.networksAdvanced).toEqual([{ name: "openclaw-dev-uplink", ipv4Address: UPLINK.ingress }]);
        expect(c.ports).toEqual([{ internal: 8443, external: 8443, ip: "127.0.0.1", protocol: "tcp" }]);
        expect(c.volumes).toEqual([{ volumeName: "openclaw-dev-ingress-data", containerPath: "/var/lib/ingress", readOnly: false }]);
        expect(c.healthcheck.tests).toEqual(["CMD", "/nodejs/bin/node", "/app/ingress.cjs", "healthcheck"]);
    });

    it("serves a certificate for the publish address and localhost, from a CA of its own", () => {
        expect(reveal(find(stack, "tls:index/certRequest:CertRequest", "ingress-server-csr")!.inputs)).toMatchObject({ ipAddresses: ["127.0.0.1"], dnsNames: ["localhost"], subject: { commonName: "127.0.0.1" } });
        expect(reveal(find(stack, "tls:index/selfSignedCert:SelfSignedCert", "ingress-ca")!.inputs)).toMatchObject({ isCaCertificate: true, subject: { commonName: "OpenClaw dev ingress CA" } });
    });

    it("names the configured host names in its certificate too", async () => {
        const named = await runProgram(withIngress({ ...INGRESS, hostnames: ["agents.example.net"] }));
        expect(reveal(find(named, "tls:index/certRequest:CertRequest", "ingress-server-csr")!.inputs).dnsNames).toEqual(["localhost", "agents.example.net"]);
    });

    it("listens on its uplink address only, with the configured rules; the key travels in a secret variable of its own", () => {
        const c = find(stack, TYPES.container, "ingress-container")!.inputs;
        expect(isSecret(c.envs)).toBe(true);
        const envs: string[] = reveal(c.envs);
        const runtime = JSON.parse(envs.find((e) => e.startsWith("INGRESS_CONFIG="))!.slice("INGRESS_CONFIG=".length));
        expect(runtime).toEqual(ingressRuntimeConfig(config.ingress!, UPLINK.ingress));
        expect(runtime.listen).toEqual({ host: UPLINK.ingress, port: 8443 });
        expect(runtime.rules).toEqual(DEFAULT_RULES);
        expect(JSON.stringify(runtime)).not.toContain("mock-private-key-pem");
        expect(envs).toContain("INGRESS_TLS_KEY_PEM=mock-private-key-pem:ingress-server-key");
    });

    it("does not exist without ingress config, and agents keep their chat endpoint off then", () => {
        expect(plain.filter((r) => r.name.startsWith("ingress"))).toEqual([]);
        expect(agentConfigUpload(plain, "bart").gateway.http.endpoints.chatCompletions.enabled).toBe(false);
    });
});

describe("an operator-supplied certificate", () => {
    const pki = operatorPki();
    let operator: RecordedResource[];
    beforeAll(async () => {
        operator = await runProgram({ ...withIngress({ ...INGRESS, certificate: { certPem: pki.chain } }), ingressTlsKeyPem: pki.key });
    });
    /** Inputs with every secret's value blanked: what anyone reading the plan would see. */
    const visible = (value: unknown): unknown =>
        isSecret(value) ? "[secret]" : Array.isArray(value) ? value.map(visible) : value && typeof value === "object" ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, visible(v)])) : value;
    const keyLines = pki.key.split("\n").filter((line) => line && !line.startsWith("-----"));

    it("declares no CA, key or certificate of the stack's own", () => {
        expect(operator.filter((r) => r.type.startsWith("tls:"))).toEqual([]);
        expect(stack.filter((r) => r.type.startsWith("tls:") && r.name.startsWith("ingress-")).map((r) => r.name).sort()).toEqual(["ingress-ca", "ingress-ca-key", "ingress-server-cert", "ingress-server-csr", "ingress-server-key"]);
    });

    it("hands the container the operator's chain and key in the TLS variables, as a secret", () => {
        const c = find(operator, TYPES.container, "ingress-container")!.inputs;
        expect(isSecret(c.envs)).toBe(true);
        const envs: string[] = reveal(c.envs);
        expect(envs).toContain(`INGRESS_TLS_CERT_PEM=${pki.chain}`);
        expect(envs).toContain(`INGRESS_TLS_KEY_PEM=${pki.key}`);
    });

    it("shows the key nowhere outside a secret", () => {
        const shown = JSON.stringify(operator.map((r) => visible(r.inputs)));
        for (const line of keyLines) expect(shown).not.toContain(line);
    });

    it.each<[string, () => RecordedResource[], string]>([
        ["the operator's certificate", () => operator, "operator-certificate"],
        ["the stack's own CA", () => stack, "own-ca"],
    ])("labels the container with where its certificate comes from: %s", (_, resources, mode) => {
        expect(reveal(find(resources(), TYPES.container, "ingress-container")!.inputs).labels).toContainEqual({ label: "openclaw.ingress-tls", value: mode });
    });

    it("with a key that is not the leaf's, stops the program before anything is declared, naming the certificate and not the key", async () => {
        const resources: RecordedResource[] = [];
        const run = runProgram({ ...withIngress({ ...INGRESS, certificate: { certPem: pki.chain } }), ingressTlsKeyPem: pki.otherKey }).then((r) => resources.push(...r));
        const error: Error = await run.then(() => new Error("the program ran"), (e: Error) => e);
        expect(error.message).toMatch(/openclaw:ingress\.certificate\.certPem: the leaf certificate does not belong to the private key in openclaw:ingressTlsKeyPem/);
        for (const line of pki.otherKey.split("\n").filter((l) => l && !l.startsWith("-----"))) expect(error.message).not.toContain(line);
        expect(resources).toEqual([]);
    });

    it("changes only the Ingress container when switched from the own CA (and drops the CA's resources)", () => {
        const diff = changed(stack, operator);
        expect(diff.added).toEqual([]);
        expect(diff.removed.every((k) => k.startsWith("tls:"))).toBe(true);
        expect(diff.changed).toEqual([`${TYPES.container}::ingress-container`]);
    });
});

describe.each(["bart", "lisa"])("agent %s behind the Ingress", (name) => {
    const addresses = agentNetworkAddresses(config.agents.find((a) => a.name === name)!.subnet);

    it("is attached at the Ingress's own address on the agent's network", () => {
        const attach = find(stack, TYPES.command, `ingress-attach-${name}`)!.inputs;
        expect(attach.create).toContain(`docker network connect --ip ${addresses.ingress} --alias ingress openclaw-dev-net-agent-${name} openclaw-dev-ingress`);
    });

    it("is registered with its gateway's address and no secret, and has its chat endpoint on", () => {
        const register = find(stack, TYPES.command, `ingress-register-${name}`)!.inputs;
        expect(register.create).toBe("docker exec -i openclaw-dev-ingress /nodejs/bin/node /app/ingress.cjs register");
        expect(JSON.parse(reveal(register.stdin))).toEqual({ name, gateway: { host: addresses.agent, port: 18789 } });
        expect(agentConfigUpload(stack, name).gateway.http.endpoints.chatCompletions.enabled).toBe(true);
    });

    it("has a gateway that trusts only the Ingress's address to name the user, only the users who may reach it, the Control UI under /agents/<name>", () => {
        const { gateway } = agentConfigUpload(stack, name);
        const users = INGRESS.users.filter((u) => u.agents.includes(name)).map((u) => u.name);
        expect(gateway.trustedProxies).toEqual([addresses.ingress]);
        expect(gateway.auth).toMatchObject({
            mode: "trusted-proxy",
            password: expect.stringMatching(/^\w{40}$/),
            trustedProxy: { userHeader: "x-forwarded-user", requiredHeaders: ["x-forwarded-proto", "x-forwarded-host"], allowUsers: users, deviceAutoApprove: { enabled: true, scopes: ["operator.read", "operator.write"] } },
        });
        expect(gateway.auth.token).toBeUndefined();
        expect(gateway.controlUi.basePath).toBe(`/agents/${name}`);
        expect(gateway.controlUi.allowedOrigins).toEqual(expect.arrayContaining(["https://127.0.0.1:8443", "https://localhost:8443"]));
    });
});

describe("users", () => {
    it.each(INGRESS.users.map((u) => [u.name, u.agents] as const))("%s is registered by the digest of a secret token, with the agents %j", (name, agents) => {
        const register = find(stack, TYPES.command, `ingress-user-${name}`)!.inputs;
        expect(register.create).toBe("docker exec -i openclaw-dev-ingress /nodejs/bin/node /app/ingress.cjs register-user");
        expect(register.delete).toBe(`docker exec openclaw-dev-ingress /nodejs/bin/node /app/ingress.cjs unregister-user ${name}`);
        const password = reveal(find(stack, TYPES.password, `ingress-user-${name}-token`)!.inputs);
        expect(password).toMatchObject({ length: 48, special: false, keepers: { user: name, epoch: "1" } });
        const entry = JSON.parse(reveal(register.stdin));
        expect(entry).toEqual({ name, tokenSha256: expect.stringMatching(/^[0-9a-f]{64}$/), agents });
        expect(reveal(register.stdin)).not.toMatch(/oci_/);
    });

    it("each get a different token", () => {
        const digests = INGRESS.users.map((u) => JSON.parse(reveal(find(stack, TYPES.command, `ingress-user-${u.name}`)!.inputs.stdin)).tokenSha256);
        expect(new Set(digests).size).toBe(2);
        expect(digests[0]).not.toBe(tokenDigest(""));
    });

    // The agents the user reaches get a new config (their gateway's allowUsers) through the one-shot writer, which
    // the gateway reloads: no agent container is recreated.
    it("adding a user adds only that user's token and registration, and rewrites the config of the agents they reach", async () => {
        const grown = await runProgram(withIngress({ ...INGRESS, users: [...INGRESS.users, { name: "otto", agents: ["lisa"] }] }));
        expect(changed(stack, grown)).toEqual({ added: [`${TYPES.command}::ingress-user-otto`, `${TYPES.password}::ingress-user-otto-token`], removed: [], changed: [`${TYPES.container}::agent-lisa-config-writer-container`] });
        expect(agentConfigUpload(grown, "lisa").gateway.auth.trustedProxy.allowUsers).toEqual(["ned", "otto"]);
    });

    it("removing a user removes only theirs, and the agents they reached stop accepting them", async () => {
        const shrunk = await runProgram(withIngress({ ...INGRESS, users: [INGRESS.users[1]] }));
        expect(changed(stack, shrunk)).toEqual({ added: [], removed: [`${TYPES.command}::ingress-user-ann`, `${TYPES.password}::ingress-user-ann-token`], changed: [`${TYPES.container}::agent-bart-config-writer-container`] });
        expect(agentConfigUpload(shrunk, "bart").gateway.auth.trustedProxy.allowUsers).toEqual(["ned"]);
    });

    it("bumping a user's tokenEpoch rotates only that user's token and registration", async () => {
        const rotated = await runProgram(withIngress({ ...INGRESS, users: [{ ...INGRESS.users[0], tokenEpoch: 2 }, INGRESS.users[1]] }));
        expect(changed(stack, rotated)).toEqual({ added: [], removed: [], changed: [`${TYPES.command}::ingress-user-ann`, `${TYPES.password}::ingress-user-ann-token`] });
    });

    it("adding an agent adds its Ingress attachment and registration, and changes no Ingress input", async () => {
        const raw = withIngress();
        (raw.agents as any[]).push({ name: "homer", dashboardPort: 18803, budget: { dailyUsd: 1 } });
        const { added, changed: changedKeys } = changed(stack, await runProgram(raw));
        expect(added.filter((k) => k.includes("ingress"))).toEqual([`${TYPES.command}::ingress-attach-homer`, `${TYPES.command}::ingress-register-homer`]);
        expect(changedKeys).toEqual([]);
    });
});

describe("stack config", () => {
    // The cross-field checks are tabled in test/config.test.ts (ingressUsersPortAndRules); here the field schema and
    // that a problem reaches the operator named by its key.
    it.each<[string, Record<string, unknown>, RegExp]>([
        ["a user reaching an unknown agent", { users: [{ name: "ann", agents: ["homer"] }] }, /openclaw:ingress\.users\[0\]\.agents\[0\]: no agent named 'homer'/],
        ["a user reaching no agent", { users: [{ name: "ann", agents: [] }] }, /openclaw:ingress\.users\[0\]\.agents: name at least one agent/],
        ["a user name that is no DNS label", { users: [{ name: "Ann", agents: ["bart"] }] }, /openclaw:ingress\.users\[0\]\.name: must be a DNS label/],
        ["a privileged port", { port: 443 }, /openclaw:ingress\.port: must be 1024 or above/],
        ["a host name that is no DNS name", { hostnames: ["https://agents.example.net"] }, /openclaw:ingress\.hostnames\[0\]: must be a DNS name/],
        ["a rule RE2 cannot run", { rules: [{ id: "backref", pattern: "(a)\\1", action: "reject" }] }, /openclaw:ingress\.rules\[0\]\.pattern: 'backref': pattern refused: .*no backreferences or lookaround/],
        ["a rule with an unknown action", { rules: [{ id: "r", pattern: "a", action: "log" }] }, /openclaw:ingress\.rules\[0\]\.action: must be one of strip, reject/],
    ])("refuses %s, naming the key", (_, ingress, message) => {
        expect(() => parseStackConfig(withIngress(ingress))).toThrow(ConfigError);
        expect(() => parseStackConfig(withIngress(ingress))).toThrow(message);
    });
});

describe("audit rotation from the stack config", () => {
    it.each<[string, string, string]>([
        ["keyProxy", "key-proxy-container", "KEYPROXY_CONFIG"],
        ["egress", "egress-gateway-container", "EGRESS_CONFIG"],
        ["ingress", "ingress-container", "INGRESS_CONFIG"],
    ])("%s's reaches its service's runtime config, the defaults otherwise", async (section, container, variable) => {
        const rotation = { maxFileBytes: 2 * 1024 * 1024, keepSegments: 3 };
        const base = withIngress();
        const set = await runProgram({ ...base, [section]: { ...(base[section] as object), auditRotation: rotation } });
        const runtimeOf = (resources: RecordedResource[]) => {
            const envs: string[] = reveal(find(resources, TYPES.container, container)!.inputs.envs);
            return JSON.parse(envs.find((e) => e.startsWith(`${variable}=`))!.slice(variable.length + 1));
        };
        expect(runtimeOf(set).auditRotation).toEqual(rotation);
        expect(runtimeOf(stack).auditRotation).toEqual({ maxFileBytes: 64 * 1024 * 1024, keepSegments: 10 });
    });
});
