// The monitoring host's preparation script, run for real in a network namespace this test creates (root needed,
// as in CI): it installs nothing here (Docker is present), so what it does is the firewall. Traffic goes only
// into that namespace, over a veth pair the test made.
import { execFileSync, spawn } from "node:child_process";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPreparationScript } from "../components/monitoringConfig";
import { requireDocker } from "./support/docker";

/** Root makes network namespaces; the script checks Docker. Both are required in CI, skipped with a warning elsewhere. */
function canRun(): boolean {
    if (process.getuid?.() === 0) return requireDocker();
    if (process.env.CI) throw new Error("CI=true but not root: the host preparation test creates a network namespace");
    console.warn("not root: skipping the host preparation test (it runs in CI)");
    return false;
}
const runnable = canRun();

const NS = `openclaw-prep-${process.pid}`;
const HOST_SIDE = { dev: `ocp${process.pid % 100000}h`, address: "10.199.77.1" };
const NS_SIDE = { dev: `ocp${process.pid % 100000}n`, address: "10.199.77.2" };
const SSH = 2222;
const OPEN = [3000, 3001];
const CLOSED = 8080;
const script = hostPreparationScript({ sshPort: SSH, openPorts: OPEN });
const run = (command: string, args: string[], input?: string) => execFileSync(command, args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
const inNs = (command: string, args: string[], input?: string) => run("ip", ["netns", "exec", NS, command, ...args], input);
let listener: ReturnType<typeof spawn> | undefined;

/** The ruleset as a set of tables: a re-run replaces our table, which moves it to the end of the listing. */
function ruleset(): string[] {
    return inNs("nft", ["list", "ruleset"])
        .split(/\n(?=table )/)
        .map((t) => t.replace(/counter packets \d+ bytes \d+ /g, "").replace(/^#.*$/gm, "").trim())
        .sort();
}

function connects(port: number): Promise<boolean> {
    return new Promise((resolve) => {
        const socket = net.connect({ host: NS_SIDE.address, port, timeout: 1500 });
        socket.once("connect", () => (socket.destroy(), resolve(true)));
        socket.once("error", () => resolve(false));
        socket.once("timeout", () => (socket.destroy(), resolve(false)));
    });
}

beforeAll(async () => {
    if (!runnable) return;
    run("ip", ["netns", "add", NS]);
    run("ip", ["link", "add", HOST_SIDE.dev, "type", "veth", "peer", "name", NS_SIDE.dev]);
    run("ip", ["link", "set", NS_SIDE.dev, "netns", NS]);
    run("ip", ["addr", "add", `${HOST_SIDE.address}/30`, "dev", HOST_SIDE.dev]);
    run("ip", ["link", "set", HOST_SIDE.dev, "up"]);
    inNs("ip", ["addr", "add", `${NS_SIDE.address}/30`, "dev", NS_SIDE.dev]);
    inNs("ip", ["link", "set", NS_SIDE.dev, "up"]);
    inNs("ip", ["link", "set", "lo", "up"]);
    // Stand-ins for sshd, Grafana, Uptime Kuma and something else, all listening inside the namespace.
    const ports = [SSH, ...OPEN, CLOSED];
    listener = spawn("ip", ["netns", "exec", NS, process.execPath, "-e", `let n = 0; for (const p of ${JSON.stringify(ports)}) require("net").createServer((s) => s.end()).listen(p, "0.0.0.0", () => ++n === ${ports.length} && console.log("ready"))`], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((resolve) => listener!.stdout!.once("data", resolve));
});

afterAll(() => {
    if (!runnable) return;
    listener?.kill();
    try {
        run("ip", ["link", "del", HOST_SIDE.dev]);
    } catch {
        // gone with the namespace
    }
    run("ip", ["netns", "del", NS]);
});

describe.skipIf(!runnable)("host preparation, run in a network namespace", () => {
    it("before it runs, every port answers", async () => {
        expect(await connects(CLOSED)).toBe(true);
    });

    it("runs, and afterwards only SSH and the chosen ports answer", async () => {
        const output = inNs("bash", ["-s"], script);
        expect(output).toContain(`firewall: accepting tcp ${[SSH, ...OPEN].join(", ")}`);
        for (const port of [SSH, ...OPEN]) expect(await connects(port), `port ${port}`).toBe(true);
        expect(await connects(CLOSED)).toBe(false);
    });

    it("filters forwarded (Docker-published) connections to other ports in DOCKER-USER", () => {
        const chain = inNs("iptables", ["-S", "OPENCLAW-MONITORING"]);
        for (const port of OPEN) expect(chain).toContain(`--ctorigdstport ${port} -j RETURN`);
        expect(chain).toMatch(/--ctstate DNAT -j DROP/);
        expect(inNs("iptables", ["-S", "DOCKER-USER"])).toContain("-j OPENCLAW-MONITORING");
    });

    it("is idempotent: a second run leaves the same rules, nothing duplicated", async () => {
        const before = ruleset();
        inNs("bash", ["-s"], script);
        expect(ruleset()).toEqual(before);
        expect(inNs("iptables", ["-S", "DOCKER-USER"]).match(/OPENCLAW-MONITORING/g)).toHaveLength(1);
        expect(await connects(CLOSED)).toBe(false);
    });

    it("with other ports chosen, a re-run replaces the rules", async () => {
        inNs("bash", ["-s"], hostPreparationScript({ sshPort: SSH, openPorts: [CLOSED] }));
        expect(await connects(CLOSED)).toBe(true);
        expect(await connects(OPEN[0])).toBe(false);
    });
});
