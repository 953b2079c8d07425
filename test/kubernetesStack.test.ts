import { it } from "vitest";
import { devConfig, reveal, runProgram } from "./support/mockStack";
it("dump", async () => {
    const r = await runProgram({ ...devConfig(), backend: "kubernetes" });
    require("fs").writeFileSync("/tmp/k8s-scratch/dump.json", JSON.stringify(r.map((x) => ({ type: x.type, name: x.name, inputs: reveal(x.inputs) })), null, 1));
});
