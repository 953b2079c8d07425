import type { Reporter, TestModule } from "vitest/node";

/** Ends the run with one plain line, `vitest: N passed, N failed, N skipped`, that CI can read. */
export default class SummaryReporter implements Reporter {
    onTestRunEnd(modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<unknown>) {
        const counts = { passed: 0, failed: 0, skipped: 0, pending: 0 };
        for (const module of modules) {
            for (const test of module.children.allTests()) counts[test.result().state]++;
            // A module that failed outside its tests (an import, a beforeAll or afterAll hook) counts once more.
            if (module.state() === "failed" && [...module.children.allTests("failed")].length === 0) counts.failed++;
        }
        counts.failed += errors.length;
        console.log(`\nvitest: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped + counts.pending} skipped`);
    }
}
