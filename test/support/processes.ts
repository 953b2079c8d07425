import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";

/** A loopback port nothing listens on right now. */
export function freePort(): Promise<number> {
    return new Promise((resolve) => {
        const server = createServer().listen(0, "127.0.0.1", () => {
            const { port } = server.address() as { port: number };
            server.close(() => resolve(port));
        });
    });
}

export interface RunningProcess {
    child: ChildProcess;
    lines: string[];
    /** Resolves with the first JSON log line whose event matches. */
    waitFor(event: string, timeoutMs?: number): Promise<Record<string, any>>;
    stop(signal?: NodeJS.Signals): Promise<number | null>;
    /** Resolves with the exit code once the process ends by itself. */
    exited(): Promise<number | null>;
}

/** Starts a command and collects its stdout lines (our services log JSON lines there). */
export function startProcess(command: string, args: string[], env: NodeJS.ProcessEnv): RunningProcess {
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const lines: string[] = [];
    let partial = "";
    const listeners = new Set<() => void>();
    child.stdout!.on("data", (chunk: Buffer) => {
        partial += chunk.toString();
        const parts = partial.split("\n");
        partial = parts.pop()!;
        lines.push(...parts);
        for (const listener of listeners) listener();
    });
    child.stderr!.on("data", (chunk: Buffer) => lines.push(`stderr: ${chunk.toString()}`));
    const find = (event: string) =>
        lines
            .map((l) => {
                try {
                    return JSON.parse(l);
                } catch {
                    return undefined;
                }
            })
            .find((l) => l?.event === event);
    return {
        child,
        lines,
        waitFor(event, timeoutMs = 10_000) {
            return new Promise((resolve, reject) => {
                const check = () => {
                    const found = find(event);
                    if (found) {
                        listeners.delete(check);
                        clearTimeout(timer);
                        resolve(found);
                    }
                };
                const timer = setTimeout(() => {
                    listeners.delete(check);
                    reject(new Error(`no '${event}' within ${timeoutMs} ms; output:\n${lines.join("\n")}`));
                }, timeoutMs);
                listeners.add(check);
                check();
            });
        },
        async exited() {
            if (child.exitCode !== null) return child.exitCode;
            const [code] = await once(child, "exit");
            return code as number | null;
        },
        async stop(signal = "SIGTERM") {
            if (child.exitCode !== null) return child.exitCode;
            child.kill(signal);
            const [code] = await once(child, "exit");
            return code as number | null;
        },
    };
}

/** Polls until the check returns true; for hooks, where expect.poll is not allowed. */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000, intervalMs = 200): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        if (await check()) return;
        await new Promise((r) => setTimeout(r, intervalMs));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
