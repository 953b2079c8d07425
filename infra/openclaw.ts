// The OpenClaw release this project runs and tests: one place for its version and its image.

/** The npm package version the real-Docker tests build their agent image from. */
export const OPENCLAW_VERSION = "2026.9.6";

/**
 * The official image of that release, pinned by digest. OpenClaw publishes the image and the npm package
 * together; the digest is the one recorded for the 2026.9.6 release (verify it with
 * `docker buildx imagetools inspect ghcr.io/openclaw/openclaw:2026.9.6` before trusting a new one).
 */
export const OPENCLAW_IMAGE = `ghcr.io/openclaw/openclaw:${OPENCLAW_VERSION}@sha256:0a5ff5e682e62afa19149df126aa50063bf65ef885b5c94713ce32dc0eb12e15`;

/** One agent turn through the running gateway (`--local` refuses to run beside it). Prints JSON on stdout, errors too. */
export const OPENCLAW_AGENT_COMMAND = "node openclaw.mjs agent --agent main -m {task} --json";
