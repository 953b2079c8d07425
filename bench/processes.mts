// What the benchmarks read about the processes they run (start-up, CPU time, resident memory, open descriptors),
// and the gateway's loopback configuration they share.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync, readdirSync } from "node:fs";
import { SERVICE_RESOURCES } from "../infra/config.ts";
import { serviceProcessEnv } from "../infra/topology.ts";
import { type Service, bundle } from "../scripts/images.mts";

/**
 * Starts a process and resolves with the first stdout line that parses as JSON and satisfies `ready`. Every line,
 * that one included, goes to `onLine` as it arrives, so a chatty service's output never queues in the pipe.
 */
export function start(
    children: ChildProcess[],
    command: string,
    argv: string[],
    env: NodeJS.ProcessEnv,
    ready: (line: Record<string, any>) => boolean,
    onLine: (line: Record<string, any>) => void = () => undefined,
): Promise<{ child: ChildProcess; line: Record<string, any> }> {
    const child = spawn(command, argv, { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    return new Promise((resolve, reject) => {
        let buffer = "";
        let started = false;
        const timer = setTimeout(() => reject(new Error(`${command} ${argv.join(" ")} did not start`)), 20_000);
        child.stdout!.on("data", (chunk: Buffer) => {
            buffer += chunk.toString();
            const lines = buffer.split("\n");
            buffer = lines.pop()!;
            for (const text of lines) {
                let line: Record<string, any>;
                try {
                    line = JSON.parse(text);
                } catch {
                    continue; // not a JSON line
                }
                if (line.event === "fatal") console.error(`${command}: ${text}`);
                onLine(line);
                if (!started && ready(line)) {
                    started = true;
                    clearTimeout(timer);
                    resolve({ child, line });
                }
            }
        });
        child.once("exit", (code) => reject(new Error(`${command} exited with ${code}`)));
    });
}

export const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** Stops every child still running and waits for it: SIGTERM first (a master process stops its workers), SIGKILL after 5 s. */
export async function stopChildren(children: ChildProcess[]): Promise<void> {
    await Promise.all(
        children.filter(running).map(async (child) => {
            const exited = once(child, "exit");
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
            await exited;
            clearTimeout(timer);
        }),
    );
}

/** CPU seconds a process's threads have run so far, in nanoseconds from /proc/<pid>/task/<tid>/schedstat. */
export function cpuSeconds(pids: number[]): number {
    let ns = 0;
    for (const pid of pids) {
        for (const tid of readdirSync(`/proc/${pid}/task`)) {
            try {
                ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
            } catch {
                // the thread ended between the listing and the read
            }
        }
    }
    return ns / 1e9;
}

export function rssMb(pids: number[]): number {
    return pids.reduce((sum, pid) => sum + Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024, 0);
}

/** Open file descriptors of a process (sockets, files, pipes). */
export function openDescriptors(pid: number): number {
    return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * The audit stream's directory setting for a KeyProxy bundle that has one (builds before the audit trail refuse the
 * key; they write no audit stream either): without it a build writes to its default, /var/lib/keyproxy/audit.
 */
export function auditDirSetting(bundleFile: string, dir: string): { auditDir?: string } {
    return readFileSync(bundleFile, "utf8").includes("auditDir") ? { auditDir: dir } : {};
}

export const percentile = (values: number[], q: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
};

/**
 * A service's process environment (its Node options and allocator settings) as its container gets it by default
 * (infra/topology.ts, with the service's default memory limit).
 */
export const processEnvOf = (service: keyof typeof SERVICE_RESOURCES) => serviceProcessEnv(SERVICE_RESOURCES[service].memoryMb);

/**
 * EgressGateway's environment for a bench on loopback: every listener on 127.0.0.1, loopback exempted from the
 * private-range denial. Upstreams listen on 127.0.0.2: the gateway refuses its own addresses, and it shares
 * 127.0.0.1 with the host here. The audit stream goes beside the registry (`<registryDir>-audit`).
 */
export function loopbackEgressEnv(registryDir: string, config: Record<string, unknown>) {
    const auditDir = `${registryDir}-audit`;
    return {
        ...processEnvOf("egressGateway"),
        EGRESS_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            registryDir,
            auditDir,
            allowRanges: ["127.0.0.0/8"],
            ...config,
        }),
    };
}

/**
 * Builds a service's production bundle, registers `entries` through its command line (`register` for agents, or
 * the verb given), and starts `serve` with the same environment: resolves once it logs `listening`.
 */
export async function startBundle(
    children: ChildProcess[],
    service: Service,
    env: NodeJS.ProcessEnv,
    entries: { verb?: string; entry: object }[],
    onLine?: (line: Record<string, any>) => void,
): Promise<{ child: ChildProcess; line: Record<string, any> }> {
    const file = await bundle(service);
    for (const { verb = "register", entry } of entries) {
        execFileSync(process.execPath, [file, verb], { input: JSON.stringify(entry), env: { PATH: process.env.PATH, ...env }, stdio: ["pipe", "ignore", "inherit"] });
    }
    return start(children, process.execPath, [file, "serve"], env, (l) => l.event === "listening", onLine);
}
