// EgressGateway soak: many concurrent CONNECT tunnels for a while, each echoing bytes both ways, through the
// gateway's production bundle with its real resolver (asking a DNS server this script runs). Loopback only.
//   npm run bench:egress-soak -- [--tunnels 200] [--seconds 60] [--round-trips 64] [--static-hosts] [--out FILE]
// --round-trips 1 makes it a CONNECT set-up measurement; --static-hosts answers the name from the gateway's
// config table instead of DNS (so the resolver's own cost can be told apart).
// Reports errors (must be 0), the gateway's RSS every 5 s, its CPU-seconds, and its open file descriptors before,
// at peak and after (none may be left). Exits non-zero if either fails. Stops by itself: at the end of the period
// no new tunnel opens, and whatever is still open 15 s later is destroyed.
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { bundle } from "../scripts/images.mts";
import { startDnsServer } from "../test/support/dnsServer.ts";
import { startProcess } from "../test/support/processes.ts";
import { cpuSeconds, loopbackEgressEnv, openDescriptors, rssMb } from "./processes.mts";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const TUNNELS = Number(option("--tunnels", "200"));
const SECONDS = Number(option("--seconds", "60"));
const OUT = option("--out", "");
const STATIC_HOSTS = args.includes("--static-hosts");
const SAMPLE_MS = 5_000;
/** Each tunnel echoes this many chunks of this size, then closes, and its worker opens the next. */
const CHUNK = Buffer.alloc(16 * 1024, "soak");
const ROUND_TRIPS = Number(option("--round-trips", "64"));
const ECHO_NAME = "echo.soak";
const DRAIN_MS = 15_000;

const work = mkdtempSync(path.join(os.tmpdir(), "openclaw-egress-soak-"));
const progress = (message: string) => console.error(`[soak] ${message}`);

// The upstream: an echo server on 127.0.0.2 (see loopbackEgressEnv).
const echo = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    socket.pipe(socket);
});
echo.listen(0, "127.0.0.2");
await once(echo, "listening");
const echoPort = (echo.address() as net.AddressInfo).port;
const dns = await startDnsServer({ [ECHO_NAME]: { a: ["127.0.0.2"] } });

const egressEnv = {
    PATH: process.env.PATH,
    ...loopbackEgressEnv(path.join(work, "agents"), {
        ...(STATIC_HOSTS ? { staticHosts: { [ECHO_NAME]: ["127.0.0.2"] } } : { resolvers: [dns.address] }),
        limits: { maxTunnelsPerAgent: TUNNELS * 2 },
    }),
};
const egressBundle = await bundle("egressGateway");
execFileSync(process.execPath, [egressBundle, "register"], {
    input: JSON.stringify({ name: "soak", subnet: "127.0.0.0/8", mode: "enforce", allow: [{ host: ECHO_NAME, ports: [echoPort] }] }),
    env: egressEnv,
});
const gateway = startProcess(process.execPath, [egressBundle, "serve"], egressEnv);
const pid = gateway.child.pid!;
const { port } = await gateway.waitFor("listening");
await gateway.waitFor("registry_loaded");

const descriptors = () => openDescriptors(pid);

const errors = new Map<string, number>();
const countError = (kind: string) => errors.set(kind, (errors.get(kind) ?? 0) + 1);
let tunnelsDone = 0;
let bytesEchoed = 0;
const open = new Set<net.Socket>();

/** One tunnel: CONNECT, ROUND_TRIPS chunks sent and each read back whole, then close. Resolves when it is over. */
function tunnel(): Promise<void> {
    return new Promise((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(`CONNECT ${ECHO_NAME}:${echoPort} HTTP/1.1\r\nHost: ${ECHO_NAME}:${echoPort}\r\n\r\n`));
        open.add(socket);
        let established = false;
        let head = "";
        let pending = 0;
        let trips = 0;
        let failed: string | undefined;
        const fail = (kind: string) => {
            failed ??= kind;
            socket.destroy();
        };
        socket.on("data", (chunk: Buffer) => {
            if (!established) {
                head += chunk.toString("latin1");
                if (!head.includes("\r\n\r\n")) return;
                if (!head.startsWith("HTTP/1.1 200 ")) return fail(`refused: ${head.split("\r\n")[0]}`);
                if (head.length !== head.indexOf("\r\n\r\n") + 4) return fail("bytes after the 200");
                established = true;
                pending = CHUNK.length;
                socket.write(CHUNK);
                return;
            }
            pending -= chunk.length;
            bytesEchoed += chunk.length;
            if (pending < 0) return fail("more bytes than sent");
            if (pending > 0) return;
            if (++trips === ROUND_TRIPS) return void socket.end();
            pending = CHUNK.length;
            socket.write(CHUNK);
        });
        socket.on("error", (error: NodeJS.ErrnoException) => fail(`socket: ${error.code ?? error.message}`));
        socket.on("close", () => {
            open.delete(socket);
            if (failed === undefined && trips !== ROUND_TRIPS) failed = "closed early";
            if (failed === undefined) tunnelsDone++;
            else countError(failed);
            resolve();
        });
    });
}

// --------------------------------------------------------------------------------------------- the run
const fdsBefore = descriptors();
const cpuBefore = cpuSeconds([pid]);
const samples: { second: number; rssMb: number; fds: number; cpu: number; tunnels: number; openTunnels: number }[] = [];
const sample = (second: number) => samples.push({ second, rssMb: rssMb([pid]), fds: descriptors(), cpu: cpuSeconds([pid]) - cpuBefore, tunnels: tunnelsDone, openTunnels: open.size });
sample(0);
let fdsPeak = fdsBefore;
const began = performance.now();
const deadline = began + SECONDS * 1000;
const sampler = setInterval(() => sample(Math.round((performance.now() - began) / 1000)), SAMPLE_MS);
const peakWatch = setInterval(() => (fdsPeak = Math.max(fdsPeak, descriptors())), 250);
progress(`${TUNNELS} workers for ${SECONDS} s through the gateway (pid ${pid}), ${ROUND_TRIPS} x ${CHUNK.length / 1024} KiB echoed per tunnel`);

const workers = Array.from({ length: TUNNELS }, async () => {
    while (performance.now() < deadline) await tunnel();
});
const drained = await Promise.race([Promise.all(workers).then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, SECONDS * 1000 + DRAIN_MS, false))]);
if (!drained) {
    countError("still open after the drain period");
    for (const socket of open) socket.destroy();
}
const seconds = (performance.now() - began) / 1000;
clearInterval(sampler);
sample(Math.round(seconds));
const cpu = cpuSeconds([pid]) - cpuBefore;

// The gateway closes its side of each tunnel when ours closes: wait (bounded) for its descriptors to come back.
let fdsAfter = descriptors();
for (let waited = 0; fdsAfter > fdsBefore && waited < 10_000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    fdsAfter = descriptors();
}
clearInterval(peakWatch);
const rssAfter = rssMb([pid]);
await gateway.stop();
echo.close();
dns.close();
rmSync(work, { recursive: true, force: true });

// ------------------------------------------------------------------------------------------- the report
const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
const mb = bytesEchoed / 1048576;
const f = (value: number, digits = 1) => value.toFixed(digits);
const lines = [
    `Command: \`npm run bench:egress-soak -- ${args.join(" ")}\` (from the repository root), on ${os.cpus().length} shared cores, Node ${process.versions.node}, ${new Date().toISOString().slice(0, 10)}.`,
    "",
    "| measure | value |",
    "| --- | ---: |",
    `| concurrent tunnels (workers) | ${TUNNELS} |`,
    `| run | ${f(seconds)} s |`,
    `| tunnels completed (CONNECT, ${STATIC_HOSTS ? "name from staticHosts" : "DNS lookup"}, ${ROUND_TRIPS} x ${CHUNK.length / 1024} KiB echoed, close) | ${tunnelsDone} |`,
    `| bytes echoed back through the gateway | ${f(mb, 0)} MiB (the same again sent) |`,
    `| errors | ${errorCount}${errorCount > 0 ? ` (${[...errors].map(([kind, n]) => `${kind}: ${n}`).join("; ")})` : ""} |`,
    `| gateway CPU | ${f(cpu, 2)} s (${f((cpu * 1000) / Math.max(1, tunnelsDone), 2)} ms per tunnel, ${f((cpu * 1000) / Math.max(1, mb * 2), 2)} ms per MiB relayed) |`,
    `| gateway file descriptors: before / peak / after | ${fdsBefore} / ${fdsPeak} / ${fdsAfter} |`,
    `| gateway RSS after | ${f(rssAfter)} MB |`,
    "",
    "Gateway RSS every 5 s:",
    "",
    "| s | RSS MB | open fds | CPU s so far | tunnels completed | tunnels open |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ...samples.map((s) => `| ${s.second} | ${f(s.rssMb)} | ${s.fds} | ${f(s.cpu, 2)} | ${s.tunnels} | ${s.openTunnels} |`),
];
const report = lines.join("\n");
console.log(report);
if (OUT) writeFileSync(path.resolve(OUT), `# EgressGateway soak\n\n${report}\n`);
const ok = errorCount === 0 && fdsAfter <= fdsBefore;
if (!ok) progress(`FAILED: ${errorCount} errors, ${fdsAfter - fdsBefore} descriptors left behind`);
process.exit(ok ? 0 : 1);
