// What the benchmarks read of the processes they measure, and the gateway's loopback configuration they share.
import { readFileSync, readdirSync } from "node:fs";
import { SERVICE_NODE_OPTIONS } from "../infra/topology.ts";

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

/**
 * EgressGateway's environment for a bench on loopback: every listener on 127.0.0.1, loopback exempted from the
 * private-range denial. Upstreams listen on 127.0.0.2: the gateway refuses its own addresses, and it shares
 * 127.0.0.1 with the host here.
 */
export function loopbackEgressEnv(registryDir: string, config: Record<string, unknown>) {
    return {
        // As in the image: the services' Node options come from infra/topology.ts.
        NODE_OPTIONS: SERVICE_NODE_OPTIONS,
        EGRESS_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            dns: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            registryDir,
            allowRanges: ["127.0.0.0/8"],
            ...config,
        }),
    };
}
