import { defineConfig } from "vitest/config";

export default defineConfig({
    test: {
        include: ["test/**/*.test.ts"],
        testTimeout: 30_000,
        hookTimeout: 120_000,
        globalSetup: ["./test/support/globalSetup.ts"],
        setupFiles: ["./test/support/setup.ts"],
        reporters: ["default", "./test/support/summaryReporter.ts"],
    },
});
