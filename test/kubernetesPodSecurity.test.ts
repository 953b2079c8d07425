import { describe, expect, it } from "vitest";
import { hardenedPodSpec, quantityOfSize } from "../components/kubernetes/podSecurity";

const spec = (change: Record<string, unknown> = {}) => ({
    name: "main",
    image: "openclaw-key-proxy:0.1.0",
    user: "1000:1000",
    resources: { memoryMb: 512, cpus: 0.5, pids: 256 },
    probe: { command: ["true"], initialDelaySeconds: 1, periodSeconds: 1 },
    ...change,
});

describe("hardenedPodSpec", () => {
    it.each([
        ["root by uid", { user: "0:0" }, /numeric non-root/],
        ["root by uid with leading zeros", { user: "000:1000" }, /numeric non-root/],
        ["a user name", { user: "node:node" }, /numeric non-root/],
        ["a uid alone", { user: "1000" }, /numeric non-root/],
        ["a sysctl outside the network namespace", { sysctls: { "kernel.shm_rmid_forced": "1" } }, /not namespaced/],
    ])("refuses %s", (_case, change, message) => {
        expect(() => hardenedPodSpec(spec(change))).toThrow(message);
    });

    it("turns CPUs into millicores, memory into Mi, tmpfs into memory-backed emptyDirs", () => {
        const pod = hardenedPodSpec(spec({ tmpfs: { "/tmp": "64m" } })) as any;
        expect(pod.containers[0].resources.limits).toEqual({ memory: "512Mi", cpu: "500m" });
        expect(pod.volumes).toEqual([{ name: "scratch-0", emptyDir: { medium: "Memory", sizeLimit: "64Mi" } }]);
        expect(pod.dnsPolicy).toBeUndefined();
    });

    it("with a nameserver, the pod resolves through it alone", () => {
        const pod = hardenedPodSpec(spec({ nameserver: "10.96.0.53" })) as any;
        expect(pod.dnsPolicy).toBe("None");
        expect(pod.dnsConfig).toEqual({ nameservers: ["10.96.0.53"], searches: [], options: [{ name: "ndots", value: "1" }] });
    });
});

describe("quantityOfSize", () => {
    it.each([["16m", "16Mi"], ["1g", "1Gi"], ["512k", "512Ki"]])("%s is %s", (size, quantity) => expect(quantityOfSize(size)).toBe(quantity));
    it.each(["16", "16M", "1.5g", "16mb"])("refuses %s", (size) => expect(() => quantityOfSize(size)).toThrow(/k, m or g/));
});
