import { defineConfig } from "vitest/config";

/** Test files that drive the one Docker Engine (the daemon-restart test stops it): never two at once. */
const DOCKER_TESTS = ["test/e2e.test.ts", "test/images.test.ts"];

export default defineConfig({
    test: {
        testTimeout: 30_000,
        hookTimeout: 120_000,
        globalSetup: ["./test/support/globalSetup.ts"],
        setupFiles: ["./test/support/setup.ts"],
        reporters: ["default", "./test/support/summaryReporter.ts"],
        projects: [
            { extends: true, test: { name: "unit", include: ["test/**/*.test.ts"], exclude: DOCKER_TESTS } },
            { extends: true, test: { name: "docker", include: DOCKER_TESTS, fileParallelism: false } },
        ],
    },
});
