// `npm run review`: the offline plan and policy verdicts reviewers read on a pull request.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { fakeKey } from "./support/fakeKeys";
import { REPO_ROOT } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";
import { operatorPki } from "./support/tls";

function review(...args: string[]) {
    const result = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "scripts", "review.mts"), ...args], { encoding: "utf8", timeout: 60_000 });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function stackDir(yaml: string): string {
    const dir = tempDir("review");
    writeFileSync(path.join(dir, "Pulumi.pr.yaml"), yaml);
    return dir;
}

describe("npm run review", () => {
    it("prints the dev stack's plan and verdicts, and passes", () => {
        const { code, stdout } = review("--stack", "dev");
        expect(code).toBe(0);
        for (const section of ["Agents", "Networks", "Containers", "Policies", "Secrets (presence only)"]) expect(stdout).toContain(`\n${section}\n`);
        expect(stdout).toMatch(/bart .* model anthropic\/claude-sonnet-4-5/);
        expect(stdout).toMatch(/openclaw-dev-net-agent-bart\s+on unix:\/\/\/var\/run\/docker\.sock\s+10\.\d+\.\d+\.\d+\/28\s+internal, bridge without host address/);
        expect(stdout).toContain("dashboard 127.0.0.1:18801 (npm run bridge -- dashboard bart)");
        expect(stdout).toMatch(/openclaw-dev-agent-bart .*\n {4}networks openclaw-dev-net-agent-bart \(10[.\d]+\) {2}ports none .*openclaw-dev-agent-bart-config:\/etc\/openclaw:ro\n/);
        expect(stdout).toMatch(/openclaw-dev-agent-bart-config-writer .* runs once\n {4}networks none {2}ports none /);
        expect(stdout).toContain("egress (enforce): github.com:443 *.githubusercontent.com:443 registry.npmjs.org:443");
        expect(stdout).toContain("pass  no-provider-keys (mandatory)");
        expect(stdout).toMatch(/OK: no mandatory violation \(\d+ advisory\)/);
    });

    it("prints the Ingress's users, the agents each reaches, and its rules", () => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const ingress = `
  openclaw:ingress:
    port: 9443
    users: [{ name: ann, agents: [bart] }, { name: ned, agents: [bart, lisa], tokenEpoch: 3 }]
    rules: [{ id: no-override, pattern: "ignore (all )?previous instructions", action: reject }, { id: im-tokens, pattern: '<\\|im_start\\|>', action: strip, roles: [user, tool] }]
`;
        const { code, stdout, stderr } = review("--stack", "pr", "--config-dir", stackDir(dev.replace("config:\n", `config:\n${ingress.slice(1)}`)));
        expect(stderr).toBe("");
        expect(code).toBe(0);
        expect(stdout).toContain(
            [
                "Ingress",
                "  https://127.0.0.1:9443/  5 requests/s per user (burst 20), 8 at once",
                "  TLS: a certificate from the stack's own CA (stack output ingress.caCertPem)",
                "  users (token epoch): agents they reach (the API at /agents/<name>/v1, the Control UI at /agents/<name>/ after /signin)",
                "    ann (1): bart",
                "    ned (3): bart, lisa",
                "  prompt-injection rules (RE2, case-insensitive): id  action  roles  pattern",
                "    no-override  reject  user  ignore (all )?previous instructions",
                "    im-tokens  strip  user,tool  <\\|im_start\\|>",
            ].join("\n"),
        );
        expect(stdout).toMatch(/openclaw-pr-ingress .* read-only, caps dropped, no-new-privileges, unprivileged .*\n {4}networks openclaw-pr-uplink \(10\.63\.255\.4\) {2}ports 127\.0\.0\.1:9443->8443 /);
        expect(stdout).toMatch(/OK: no mandatory violation/);
    });

    describe("with an operator certificate whose key is encrypted in the stack file", () => {
        const pki = operatorPki();
        const withCertificate = (chain: string) => {
            const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
            const certPem = chain.trimEnd().split("\n").map((line) => `        ${line}`).join("\n");
            const ingress = `  openclaw:ingress:\n    certificate:\n      certPem: |\n${certPem}\n  openclaw:ingressTlsKeyPem:\n    secure: v1:abc:def\n`;
            return stackDir(dev.replace("config:\n", `config:\n${ingress}`));
        };

        it("says the Ingress serves it, what its leaf names and until when, and that the key waits for deploy", () => {
            const { code, stdout, stderr } = review("--stack", "pr", "--config-dir", withCertificate(pki.chain));
            expect(stderr).toBe("");
            expect(code).toBe(0);
            expect(stdout).toMatch(/\n {2}TLS: operator certificate CN=agents\.example\.net \(IP Address:127\.0\.0\.1, DNS:agents\.example\.net\), valid until \d{4}-\d\d-\d\dT/);
            expect(stdout).toContain("  ingressTlsKeyPem: encrypted in the stack file, not read offline");
            expect(stdout).toMatch(/\n {2}warn {2}ingress-operator-certificate \(advisory\) {2}\S+: serves an operator-supplied certificate/);
            expect(stdout).toMatch(/OK: no mandatory violation/);
        });

        it("fails on an expired one, naming the key path", () => {
            const { code, stderr } = review("--stack", "pr", "--config-dir", withCertificate(pki.expiredChain));
            expect(code).toBe(1);
            expect(stderr).toMatch(/openclaw:ingress\.certificate\.certPem: the leaf certificate expired on 2020-01-02/);
        });
    });

    it("says which host each container lands on, and the monitoring stack's exceptions with their reasons", () => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const monitoring = `
  openclaw:monitoring:
    host: ssh://ops@monitor.example.net
    publishAddress: 203.0.113.7
    scrape: { address: agents.example.net, publishAddress: 198.51.100.4 }
    hardeningExceptions: { uptimeKuma: { container-read-only: "writes outside its data volume at start" } }
`;
        const { code, stdout } = review("--stack", "pr", "--config-dir", stackDir(dev.replace("config:\n", `config:\n${monitoring.slice(1)}`)), "--json");
        expect(code).toBe(0);
        const hosts = Object.fromEntries(JSON.parse(stdout).containers.map((c: { name: string; host: string }) => [c.name, c.host]));
        expect(hosts).toEqual({
            "openclaw-pr-agent-bart": "unix:///var/run/docker.sock",
            "openclaw-pr-agent-lisa": "unix:///var/run/docker.sock",
            "openclaw-pr-agent-bart-config-writer": "unix:///var/run/docker.sock",
            "openclaw-pr-agent-lisa-config-writer": "unix:///var/run/docker.sock",
            "openclaw-pr-key-proxy": "unix:///var/run/docker.sock",
            "openclaw-pr-egress-gateway": "unix:///var/run/docker.sock",
            "openclaw-pr-prometheus": "ssh://ops@monitor.example.net",
            "openclaw-pr-grafana": "ssh://ops@monitor.example.net",
            "openclaw-pr-uptime-kuma": "ssh://ops@monitor.example.net",
        });
        expect(JSON.parse(stdout).verdicts).toContainEqual({
            policy: "container-read-only",
            enforcementLevel: "advisory",
            resource: "monitoring-uptime-kuma-container",
            message: "root filesystem is writable: set readOnly (declared exception: writes outside its data volume at start)",
        });
    });

    it("renders the same stack on Kubernetes: namespace, agents with their ports, hardened workloads, Services, NetworkPolicies, verdicts", () => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const dir = stackDir(`${dev}  openclaw:backend: kubernetes\n  openclaw:kubernetes:\n    runtimeClassName: gvisor\n`);
        const text = review("--stack", "pr", "--config-dir", dir);
        expect(text.code).toBe(0);
        for (const section of ["Agents", "Workloads", "Services", "NetworkPolicies", "Policies"]) expect(text.stdout).toContain(`\n${section}\n`);
        expect(text.stdout).toContain("Namespace openclaw-pr in (current kubeconfig context)");
        expect(text.stdout).toContain("port 18801 on key-proxy and egress-gateway  runtime class gvisor");
        expect(text.stdout).toMatch(/StatefulSet agent-bart .* read-only root, caps dropped, no escalation, seccomp RuntimeDefault/);
        expect(text.stdout).toMatch(/Deployment key-proxy {2}1 replica\(s\), Recreate/);
        expect(text.stdout).toContain("key-proxy-bart  8080/TCP->18801");
        expect(text.stdout).toContain("default-deny  Ingress+Egress  selects every pod");
        expect(text.stdout).toContain("pass  k8s-namespace-default-deny (mandatory)");
        expect(text.stdout).not.toContain("container-read-only");
        expect(text.stdout).toMatch(/OK: no mandatory violation/);
        const plan = JSON.parse(review("--stack", "pr", "--config-dir", dir, "--json").stdout);
        expect(plan).toMatchObject({ backend: "kubernetes", ok: true, namespace: "openclaw-pr" });
        expect(plan.workloads.map((w: { name: string }) => w.name).sort()).toEqual(["agent-bart", "agent-lisa", "egress-gateway", "key-proxy"]);
        expect(plan.workloads.every((w: { readOnlyRoot: boolean; allowPrivilegeEscalation: boolean }) => w.readOnlyRoot && !w.allowPrivilegeEscalation)).toBe(true);
    });

    it("gives the same for machines with --json", () => {
        const { code, stdout } = review("--stack", "dev", "--json");
        expect(code).toBe(0);
        const plan = JSON.parse(stdout);
        expect(plan).toMatchObject({ stack: "dev", ok: true });
        expect(plan.agents.map((a: { name: string }) => a.name)).toEqual(["bart", "lisa"]);
        expect(plan.containers).toHaveLength(6);
        expect(plan.containers.filter((c: { runsOnce: boolean }) => c.runsOnce).map((c: { name: string }) => c.name).sort()).toEqual(["openclaw-dev-agent-bart-config-writer", "openclaw-dev-agent-lisa-config-writer"]);
        expect(plan.verdicts.every((v: { enforcementLevel: string }) => v.enforcementLevel === "advisory")).toBe(true);
        expect(plan.secretsNotChecked).toHaveLength(2);
    });

    it("exits 1 on a config error, naming the key", () => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const dir = stackDir(dev.replace("name: lisa", "name: Lisa"));
        const { code, stderr } = review("--stack", "pr", "--config-dir", dir);
        expect(code).toBe(1);
        expect(stderr).toMatch(/^Stack pr: invalid config in \/.*\/Pulumi\.pr\.yaml:\n/);
        expect(stderr).toContain("openclaw:agents[1].name: must be a DNS label");
        const json = review("--stack", "pr", "--config-dir", dir, "--json");
        expect(json.code).toBe(1);
        expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, errors: [expect.stringContaining("openclaw:agents[1].name")] });
    });

    it.each([
        ["anthropicApiKey", fakeKey("anthropic", "R".repeat(40))],
        ["openaiApiKey", fakeKey("openai", "R".repeat(40))],
    ])("fails on a provider key in plain text in %s, naming the key and never showing it", (key, value) => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const { code, stdout, stderr } = review("--stack", "pr", "--config-dir", stackDir(`${dev}  openclaw:${key}: ${value}\n`));
        expect(code).toBe(1);
        expect(stdout).not.toContain("OK");
        expect(stderr).toContain(`openclaw:${key}: a provider API key in plain text`);
        expect(`${stdout}${stderr}`).not.toContain(value);
    });

    it("reads an encrypted secret as present", () => {
        const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
        const dir = stackDir(`${dev}  openclaw:anthropicApiKey:\n    secure: v1:abc:def\n`);
        const { code, stdout } = review("--stack", "pr", "--config-dir", dir, "--json");
        expect(code).toBe(0);
        expect(JSON.parse(stdout).secretsNotChecked).toContain("anthropicApiKey: encrypted in the stack file, not read offline");
    });

    it.each([
        [["--stack"], /--stack needs a name/],
        [["--stack", "nope"], /no Pulumi\.nope\.yaml/],
        [["--frobnicate"], /unknown argument '--frobnicate'/],
    ])("exits 2 with usage for %j", (args, message) => {
        const { code, stderr } = review(...args);
        expect(code).toBe(2);
        expect(stderr).toMatch(message);
        expect(stderr).toContain("usage: npm run review");
    });
});
